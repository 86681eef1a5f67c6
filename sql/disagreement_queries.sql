-- disagreement_queries: the 50 queries on which the agents disagree the most.
--
-- A pair (iteration, pair_id) is voted when >= 2 agents decided it (agent_labels status
-- 'decided'); it is disagreeing when their labels differ (max label > min label). Queries are
-- grouped by normalized text (lower(trim(query)), whitespace runs collapsed) and language, over
-- all iterations. Only queries with at least one disagreeing pair are listed.
--
--   rank                 1 = most disagreement: ordered by disagreement_share desc, then
--                        disagreeing_pairs desc, voted_pairs desc, query, language
--   voted_pairs          pairs of the query decided by >= 2 agents
--   disagreeing_pairs    voted pairs whose labels differ;  disagreement_share = disagreeing / voted
--   mean_spread          mean (max label - min label) over the disagreeing pairs (1 = adjacent
--                        grades, 3 = one agent says 0, another 3);  max_spread its maximum
--   labels_0 .. labels_3 decided labels given on the query's voted pairs, per label
--   disagreeing_doc_ids  up to 10 documents of disagreeing pairs (sorted), to look at
--   iterations           iterations the query's voted pairs come from
--
-- Reading it: high share + high spread = an ambiguous or drifting query (new brand, new meaning)
-- where the annotator cannot label and the miner keeps sending pairs; worth a human judgment
-- or a glossary entry. A share of 1.0 on one pair is weak evidence: look at voted_pairs.
WITH decided AS (
    SELECT iteration, pair_id, agent, label,
           regexp_replace(lower(trim(query)), '\s+', ' ', 'g') AS query,
           language, coalesce(language_family, 'other') AS language_family, doc_id
    FROM agent_labels
    WHERE status = 'decided' AND label IS NOT NULL
),
voted AS (
    SELECT iteration, pair_id,
           min(query) AS query, min(language) AS language, min(language_family) AS language_family,
           min(doc_id) AS doc_id,
           count(*) AS n_decided, min(label) AS min_label, max(label) AS max_label,
           count_if(label = 0) AS l0, count_if(label = 1) AS l1,
           count_if(label = 2) AS l2, count_if(label = 3) AS l3
    FROM decided
    GROUP BY iteration, pair_id
    HAVING count(*) >= 2
),
per_query AS (
    SELECT query, language,
           min(language_family) AS language_family,
           count(*) AS voted_pairs,
           count_if(max_label > min_label)::BIGINT AS disagreeing_pairs,
           count_if(max_label > min_label) / count(*) AS disagreement_share,
           avg(max_label - min_label) FILTER (WHERE max_label > min_label) AS mean_spread,
           max(max_label - min_label)::BIGINT AS max_spread,
           sum(l0)::BIGINT AS labels_0, sum(l1)::BIGINT AS labels_1,
           sum(l2)::BIGINT AS labels_2, sum(l3)::BIGINT AS labels_3,
           list_sort(list_distinct(list(doc_id) FILTER (WHERE max_label > min_label)))[1:10] AS disagreeing_doc_ids,
           list_sort(list_distinct(list(iteration))) AS iterations
    FROM voted
    GROUP BY query, language
    HAVING count_if(max_label > min_label) > 0
)
SELECT row_number() OVER (ORDER BY disagreement_share DESC, disagreeing_pairs DESC, voted_pairs DESC,
                                   query, language) AS rank,
       *
FROM per_query
QUALIFY rank <= 50
ORDER BY rank

-- agent_accuracy: each agent's labels (and the consensus, as the pseudo-agent '(consensus)')
-- against the human judgments, where judged pairs exist.
--
-- Join: agent label <-> judgment on (normalized query, language, doc_id), the query normalized
-- as everywhere in the lakehouse: lower(trim(query)) with runs of whitespace collapsed to one
-- space; language compared case-insensitively. A pair judged more than once counts once: its
-- newest judgment (ts, then source_file, source_row) wins. Agents count only 'decided' labels;
-- the consensus counts accepted pairs only (an easier subset: compare with care). A pair
-- labelled in several iterations counts once per iteration.
--
-- Rows per agent: overall (iteration NULL, split 'all', language_family 'all'), per iteration,
-- per judgment split ('seed' | 'test') and per language family. No rows when nothing is judged.
--
--   n                 labelled pairs that are judged
--   accuracy          share with label = judged label
--   mean_abs_error    mean |label - judged label|
--   kappa             Cohen's kappa vs the judgments, labels 0..3 (p_o - p_e) / (1 - p_e)
--   kappa_quadratic   quadratic-weighted kappa: 1 - sum (x - y)^2 / (sum x^2 + sum y^2 - 2 sum x sum y / n)
--                     (x the agent's label, y the judged label; see pairwise_kappa.sql)
--   mean_label_diff   mean (label - judged label): > 0 the agent grades too high, < 0 too low
WITH judged AS (
    SELECT regexp_replace(lower(trim(query)), '\s+', ' ', 'g') AS query_key,
           lower(trim(language)) AS language_key,
           doc_id, label, split
    FROM judgments
    WHERE label IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY query_key, language_key, doc_id
                               ORDER BY ts DESC NULLS LAST, source_file DESC NULLS LAST,
                                        source_row DESC NULLS LAST) = 1
),
labelled AS (
    SELECT agent, iteration, query, language, language_family, doc_id, label
    FROM agent_labels
    WHERE status = 'decided' AND label IS NOT NULL
    UNION ALL
    SELECT '(consensus)' AS agent, iteration, query, language, language_family, doc_id, label
    FROM consensus_labels
    WHERE label IS NOT NULL
),
joined AS (
    SELECT l.agent, l.iteration, coalesce(l.language_family, 'other') AS language_family,
           coalesce(j.split, 'unknown') AS split,
           l.label::DOUBLE AS x, j.label::DOUBLE AS y
    FROM labelled AS l
    JOIN judged AS j
      ON regexp_replace(lower(trim(l.query)), '\s+', ' ', 'g') = j.query_key
     AND lower(trim(l.language)) = j.language_key
     AND l.doc_id = j.doc_id
),
sums AS (
    SELECT agent, iteration,
           CASE WHEN grouping(split) = 1 THEN 'all' ELSE split END AS split,
           CASE WHEN grouping(language_family) = 1 THEN 'all' ELSE language_family END AS language_family,
           grouping(iteration, split, language_family) AS grouping_id,
           count(*)::DOUBLE AS n,
           count_if(x = y) AS n_agree,
           count_if(x = 0) * count_if(y = 0) + count_if(x = 1) * count_if(y = 1)
             + count_if(x = 2) * count_if(y = 2) + count_if(x = 3) * count_if(y = 3) AS marginal_products,
           sum(x) AS sx, sum(y) AS sy, sum(x * x) AS sxx, sum(y * y) AS syy,
           sum((x - y) * (x - y)) AS sum_sq_diff, sum(abs(x - y)) AS sum_abs_diff, sum(x - y) AS sum_diff
    FROM joined
    GROUP BY GROUPING SETS ((agent), (agent, iteration), (agent, split), (agent, language_family))
),
stats AS (
    SELECT *,
           n_agree / n AS p_o,
           marginal_products / (n * n) AS p_e,
           (sxx + syy) / n - 2 * sx * sy / (n * n) AS expected_sq_disagreement
    FROM sums
)
SELECT agent,
       iteration,
       split,
       language_family,
       n::BIGINT AS n,
       p_o AS accuracy,
       sum_abs_diff / n AS mean_abs_error,
       CASE WHEN p_e < 1 THEN (p_o - p_e) / (1 - p_e) END AS kappa,
       CASE WHEN expected_sq_disagreement > 0
            THEN 1 - (sum_sq_diff / n) / expected_sq_disagreement END AS kappa_quadratic,
       sum_diff / n AS mean_label_diff
FROM stats
ORDER BY agent = '(consensus)', agent, grouping_id DESC, iteration, split, language_family

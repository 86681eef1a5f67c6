-- acceptance_rate: how many annotated pairs the two-level agreement kept, per iteration x
-- language family, with roll-ups (iteration NULL = all iterations; language_family 'all').
--
-- A pair (iteration, pair_id) is annotated when it has a row in agent_labels (or, defensively,
-- in consensus_labels); it is accepted when it is in consensus_labels.
--
--   pairs_annotated                 pairs the agents were asked about
--   pairs_2plus_decided             pairs where >= 2 agents decided a label (could be accepted)
--   accepted                        pairs in consensus_labels
--   accepted_alone                  of those, pairs one agent alone decided (an assured vote, solo_assured)
--   acceptance_rate                 accepted / pairs_annotated
--   acceptance_rate_2plus_decided   (accepted - accepted_alone) / pairs_2plus_decided (agreement once
--                                   enough agents voted)
--   discarded                       pairs_annotated - accepted, split into
--     discarded_disagreement        >= 2 decided agents whose labels differ
--     discarded_few_voters          fewer than 2 decided agents (abstained / failed)
--     discarded_other               the rest (e.g. a stricter min_voters or min_path_votes setting)
--
-- Reading it: a low acceptance_rate with a high acceptance_rate_2plus_decided means the agents
-- agree but often fail/abstain (cost, reliability); both low means genuine disagreement.
WITH annotated AS (
    SELECT iteration, pair_id,
           min(coalesce(language_family, 'other')) AS language_family,
           count_if(status = 'decided' AND label IS NOT NULL) AS n_decided,
           count(DISTINCT label) FILTER (WHERE status = 'decided') AS n_labels
    FROM agent_labels
    GROUP BY iteration, pair_id
),
accepted AS (
    SELECT iteration, pair_id, min(coalesce(language_family, 'other')) AS language_family
    FROM consensus_labels
    GROUP BY iteration, pair_id
),
pairs AS (
    SELECT coalesce(a.iteration, c.iteration) AS iteration,
           coalesce(a.language_family, c.language_family) AS language_family,
           coalesce(a.n_decided, 0) AS n_decided,
           coalesce(a.n_labels, 0) AS n_labels,
           c.pair_id IS NOT NULL AS is_accepted
    FROM annotated AS a
    FULL OUTER JOIN accepted AS c ON a.iteration = c.iteration AND a.pair_id = c.pair_id
),
counts AS (
    SELECT iteration,
           CASE WHEN grouping(language_family) = 1 THEN 'all' ELSE language_family END AS language_family,
           grouping(iteration) = 1 AS all_iterations,
           count(*) AS pairs_annotated,
           count_if(n_decided >= 2) AS pairs_2plus_decided,
           count_if(is_accepted) AS accepted,
           count_if(is_accepted AND n_decided < 2) AS accepted_alone,
           count_if(NOT is_accepted) AS discarded,
           count_if(NOT is_accepted AND n_decided >= 2 AND n_labels > 1) AS discarded_disagreement,
           count_if(NOT is_accepted AND n_decided < 2) AS discarded_few_voters
    FROM pairs
    GROUP BY GROUPING SETS ((iteration, language_family), (iteration), (language_family), ())
    HAVING count(*) > 0
)
SELECT iteration,
       language_family,
       pairs_annotated::BIGINT AS pairs_annotated,
       pairs_2plus_decided::BIGINT AS pairs_2plus_decided,
       accepted::BIGINT AS accepted,
       accepted_alone::BIGINT AS accepted_alone,
       accepted / pairs_annotated AS acceptance_rate,
       CASE WHEN pairs_2plus_decided > 0 THEN (accepted - accepted_alone) / pairs_2plus_decided END
           AS acceptance_rate_2plus_decided,
       discarded::BIGINT AS discarded,
       discarded_disagreement::BIGINT AS discarded_disagreement,
       discarded_few_voters::BIGINT AS discarded_few_voters,
       (discarded - discarded_disagreement - discarded_few_voters)::BIGINT AS discarded_other
FROM counts
ORDER BY all_iterations, iteration, language_family = 'all', language_family

-- fleiss_kappa: Fleiss' kappa among the agents, per iteration x language family, with roll-ups.
--
-- Items are pairs (iteration, pair_id); ratings are the agents' decided labels (agent_labels
-- status 'decided'). Fleiss' formula needs the SAME number of ratings on every item, but agents
-- abstain or fail, so items carry 2, 3, ... decided labels. Choice: within each group, take the
-- modal rater count m (the number of decided agents that the most items with >= 2 decided agents
-- have; ties go to the larger m) and use only the items with exactly m decided labels. The rest
-- are counted in n_items_excluded. (Krippendorff's alpha, krippendorff_alpha.sql, uses them all.)
--
-- Rows: iteration NULL = all iterations; language_family 'all' = all families.
--
--   n_raters       m, the rater count used
--   n_items        N, items with exactly m decided labels
--   n_items_2plus  items with >= 2 decided labels; n_items_excluded = n_items_2plus - n_items
--   p_bar          mean over items of P_i = (sum_j n_ij^2 - m) / (m (m - 1)), n_ij = ratings of
--                  item i in label j: the share of agreeing rater pairs on the item
--   p_e            sum_j p_j^2 with p_j = sum_i n_ij / (N m)
--   kappa          (p_bar - p_e) / (1 - p_e); NULL when p_e = 1
--
-- Reading it: like Cohen's kappa (1 perfect, 0 chance), for all agents at once; nominal labels
-- (a 2-vs-3 disagreement counts as much as 0-vs-3).
WITH decided AS (
    SELECT iteration, pair_id, coalesce(language_family, 'other') AS language_family, label
    FROM agent_labels
    WHERE status = 'decided' AND label IS NOT NULL
),
scoped AS (  -- every rating once per group it belongs to
    SELECT CASE WHEN g.by_iteration THEN d.iteration END AS iteration,
           CASE WHEN g.by_family THEN d.language_family ELSE 'all' END AS language_family,
           NOT g.by_iteration AS all_iterations,
           d.iteration AS item_iteration, d.pair_id, d.label
    FROM decided AS d
    CROSS JOIN (VALUES (true, true), (true, false), (false, true), (false, false)) AS g(by_iteration, by_family)
),
item_label AS (
    SELECT iteration, language_family, all_iterations, item_iteration, pair_id, label, count(*) AS n_ij
    FROM scoped
    GROUP BY ALL
),
items AS (
    SELECT iteration, language_family, all_iterations, item_iteration, pair_id,
           sum(n_ij) AS m, sum(n_ij * n_ij) AS sum_sq
    FROM item_label
    GROUP BY ALL
    HAVING sum(n_ij) >= 2
),
rater_counts AS (
    SELECT iteration, language_family, all_iterations, m, count(*) AS n_items
    FROM items
    GROUP BY ALL
),
modal AS (
    SELECT iteration, language_family, all_iterations, m, n_items,
           sum(n_items) OVER (PARTITION BY iteration, language_family, all_iterations) AS n_items_2plus
    FROM rater_counts
    QUALIFY row_number() OVER (PARTITION BY iteration, language_family, all_iterations
                               ORDER BY n_items DESC, m DESC) = 1
),
kept AS (
    SELECT i.*
    FROM items AS i
    JOIN modal AS md
      ON i.iteration IS NOT DISTINCT FROM md.iteration AND i.language_family = md.language_family
     AND i.all_iterations = md.all_iterations AND i.m = md.m
),
agreement AS (
    SELECT iteration, language_family, all_iterations,
           avg((sum_sq - m) / (m * (m - 1.0))) AS p_bar
    FROM kept
    GROUP BY ALL
),
label_shares AS (
    SELECT l.iteration, l.language_family, l.all_iterations, l.label,
           sum(l.n_ij) / (md.n_items * md.m::DOUBLE) AS p_j
    FROM item_label AS l
    JOIN kept AS k
      ON l.iteration IS NOT DISTINCT FROM k.iteration AND l.language_family = k.language_family
     AND l.all_iterations = k.all_iterations AND l.item_iteration = k.item_iteration AND l.pair_id = k.pair_id
    JOIN modal AS md
      ON l.iteration IS NOT DISTINCT FROM md.iteration AND l.language_family = md.language_family
     AND l.all_iterations = md.all_iterations
    GROUP BY l.iteration, l.language_family, l.all_iterations, l.label, md.n_items, md.m
),
chance AS (
    SELECT iteration, language_family, all_iterations, sum(p_j * p_j) AS p_e
    FROM label_shares
    GROUP BY ALL
)
SELECT md.iteration,
       md.language_family,
       md.m::BIGINT AS n_raters,
       md.n_items::BIGINT AS n_items,
       md.n_items_2plus::BIGINT AS n_items_2plus,
       (md.n_items_2plus - md.n_items)::BIGINT AS n_items_excluded,
       a.p_bar,
       c.p_e,
       CASE WHEN c.p_e < 1 THEN (a.p_bar - c.p_e) / (1 - c.p_e) END AS kappa
FROM modal AS md
JOIN agreement AS a
  ON md.iteration IS NOT DISTINCT FROM a.iteration AND md.language_family = a.language_family
 AND md.all_iterations = a.all_iterations
JOIN chance AS c
  ON md.iteration IS NOT DISTINCT FROM c.iteration AND md.language_family = c.language_family
 AND md.all_iterations = c.all_iterations
ORDER BY md.all_iterations, md.iteration, md.language_family = 'all', md.language_family

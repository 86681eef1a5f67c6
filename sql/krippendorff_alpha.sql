-- krippendorff_alpha: Krippendorff's alpha among the agents (ORDINAL metric; nominal and interval
-- too), per iteration x language family, with roll-ups.
--
-- Units are pairs (iteration, pair_id); values are the agents' decided labels (agent_labels
-- status 'decided'). Alpha allows missing data and a varying number of raters: a unit counts when
-- it has m_u >= 2 decided labels (units with one value are not pairable and are dropped).
-- Rows: iteration NULL = all iterations; language_family 'all' = all families.
--
-- Coincidence matrix (every ordered pair of values from different agents in a unit, weighted
-- 1 / (m_u - 1)):   o_ck = sum_u n_uc * (n_uk - [c = k]) / (m_u - 1)
-- Marginals n_c = sum_k o_ck (= decided labels c in pairable units), n = sum_c n_c = n_values.
-- Ordinal metric:  delta_ck = sum_{g between c and k} n_g - (n_c + n_k) / 2
--                           = |mid_c - mid_k| with mid_c = (n_0 + ... + n_c) - n_c / 2
-- (labels ranked by how many values lie between them, not by their numeric distance).
--   observed_disagreement  D_o = sum_ck o_ck delta_ck^2 / n
--   expected_disagreement  D_e = sum_ck n_c n_k delta_ck^2 / (n (n - 1))
--                              = (2 n sum_c n_c mid_c^2 - 2 (sum_c n_c mid_c)^2) / (n (n - 1))
--                          (both in the ordinal metric's units, squared counts of values:
--                          only their ratio is meaningful)
--   alpha_ordinal          1 - D_o / D_e          (NULL when only one label occurs: D_e = 0)
--   alpha_nominal          same with delta^2 = [c != k]
--   alpha_interval         same with delta^2 = (c - k)^2 on the label values 0..3
--
-- Reading it: 1 = perfect agreement, 0 = agreement at chance level, < 0 systematic disagreement.
-- Krippendorff suggests relying on alpha >= 0.8 and drawing tentative conclusions >= 0.667.
WITH decided AS (
    SELECT iteration, pair_id, coalesce(language_family, 'other') AS language_family, label
    FROM agent_labels
    WHERE status = 'decided' AND label IS NOT NULL
),
unit_label AS (  -- n_uc, and m_u = decided labels in the unit
    SELECT iteration, pair_id, language_family, label, count(*) AS n_uc,
           sum(count(*)) OVER (PARTITION BY iteration, pair_id, language_family) AS m_u
    FROM decided
    GROUP BY iteration, pair_id, language_family, label
),
pairable AS (
    SELECT * FROM unit_label WHERE m_u >= 2
),
unit_coincidence AS (  -- one unit's contribution to o_ck
    SELECT a.iteration, a.language_family, a.label AS c, b.label AS k,
           CASE WHEN a.label = b.label THEN a.n_uc * (a.n_uc - 1) ELSE a.n_uc * b.n_uc END
             / (a.m_u - 1.0) AS o
    FROM pairable AS a
    JOIN pairable AS b
      ON a.iteration = b.iteration AND a.pair_id = b.pair_id AND a.language_family = b.language_family
),
coincidence AS (
    SELECT iteration,
           CASE WHEN grouping(language_family) = 1 THEN 'all' ELSE language_family END AS language_family,
           grouping(iteration) = 1 AS all_iterations,
           c, k, sum(o) AS o
    FROM unit_coincidence
    GROUP BY GROUPING SETS ((iteration, language_family, c, k), (iteration, c, k), (language_family, c, k), (c, k))
),
marginal AS (
    SELECT iteration, language_family, all_iterations, c, sum(o) AS n_c
    FROM coincidence
    GROUP BY ALL
),
midpoint AS (
    SELECT *,
           sum(n_c) OVER (PARTITION BY iteration, language_family, all_iterations ORDER BY c
                          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) - n_c / 2.0 AS mid
    FROM marginal
),
expected AS (
    SELECT iteration, language_family, all_iterations,
           sum(n_c) AS n,
           count(*) FILTER (WHERE n_c > 0) AS n_labels,
           2 * sum(n_c) * sum(n_c * mid * mid) - 2 * sum(n_c * mid) * sum(n_c * mid) AS e_ordinal,
           sum(n_c) * sum(n_c) - sum(n_c * n_c) AS e_nominal,
           2 * sum(n_c) * sum(n_c * c * c) - 2 * sum(n_c * c) * sum(n_c * c) AS e_interval
    FROM midpoint
    GROUP BY ALL
),
observed AS (
    SELECT o.iteration, o.language_family, o.all_iterations,
           sum(o.o * (mc.mid - mk.mid) * (mc.mid - mk.mid)) AS o_ordinal,
           sum(CASE WHEN o.c <> o.k THEN o.o ELSE 0 END) AS o_nominal,
           sum(o.o * (o.c - o.k) * (o.c - o.k)) AS o_interval
    FROM coincidence AS o
    JOIN midpoint AS mc
      ON o.iteration IS NOT DISTINCT FROM mc.iteration AND o.language_family = mc.language_family
     AND o.all_iterations = mc.all_iterations AND o.c = mc.c
    JOIN midpoint AS mk
      ON o.iteration IS NOT DISTINCT FROM mk.iteration AND o.language_family = mk.language_family
     AND o.all_iterations = mk.all_iterations AND o.k = mk.c
    GROUP BY ALL
),
units AS (
    SELECT iteration,
           CASE WHEN grouping(language_family) = 1 THEN 'all' ELSE language_family END AS language_family,
           grouping(iteration) = 1 AS all_iterations,
           count(*) AS n_units
    FROM (SELECT DISTINCT iteration, pair_id, language_family FROM pairable)
    GROUP BY GROUPING SETS ((iteration, language_family), (iteration), (language_family), ())
    HAVING count(*) > 0
)
SELECT e.iteration,
       e.language_family,
       u.n_units,
       e.n::BIGINT AS n_values,
       o.o_ordinal / e.n AS observed_disagreement,
       e.e_ordinal / (e.n * (e.n - 1)) AS expected_disagreement,
       CASE WHEN e.n_labels >= 2 THEN 1 - (e.n - 1) * o.o_ordinal / e.e_ordinal END AS alpha_ordinal,
       CASE WHEN e.n_labels >= 2 THEN 1 - (e.n - 1) * o.o_nominal / e.e_nominal END AS alpha_nominal,
       CASE WHEN e.n_labels >= 2 THEN 1 - (e.n - 1) * o.o_interval / e.e_interval END AS alpha_interval
FROM expected AS e
JOIN observed AS o
  ON e.iteration IS NOT DISTINCT FROM o.iteration AND e.language_family = o.language_family
 AND e.all_iterations = o.all_iterations
JOIN units AS u
  ON e.iteration IS NOT DISTINCT FROM u.iteration AND e.language_family = u.language_family
 AND e.all_iterations = u.all_iterations
ORDER BY e.all_iterations, e.iteration, e.language_family = 'all', e.language_family

-- pairwise_kappa: Cohen's kappa between every pair of agents, per iteration and overall.
--
-- Items are pairs (iteration, pair_id) that BOTH agents decided (agent_labels.status = 'decided'
-- with a label); abstained/failed verdicts are left out. One row per unordered agent pair
-- (agent_a < agent_b) and iteration; iteration NULL = all iterations pooled.
--
--   n                     items both agents decided
--   observed_agreement    p_o = share of items with the same label
--   expected_agreement    p_e = sum_k p_a(k) * p_b(k), the agents' own label shares, k in 0..3
--   kappa                 (p_o - p_e) / (1 - p_e)              NULL when p_e = 1 (undefined)
--   kappa_quadratic       1 - sum_ij w_ij O_ij / sum_ij w_ij E_ij, w_ij = (i - j)^2 on the label
--                         values 0..3 (dividing by (K-1)^2 cancels), E_ij = row_i * col_j / n.
--                         With x, y the two agents' labels: sum w O = sum (x - y)^2 and
--                         sum w E = sum x^2 + sum y^2 - 2 (sum x)(sum y) / n.
--                         NULL when the expected disagreement is 0.
--
-- Reading it: 1 = perfect agreement, 0 = what chance gives with these label shares, < 0 worse
-- than chance. kappa_quadratic forgives near misses (2 vs 3) and punishes far ones (0 vs 3);
-- a big gap kappa_quadratic >> kappa means the agents disagree mostly by one grade.
WITH decided AS (
    SELECT iteration, pair_id, agent, label
    FROM agent_labels
    WHERE status = 'decided' AND label IS NOT NULL
),
both_decided AS (
    SELECT a.iteration, a.agent AS agent_a, b.agent AS agent_b,
           a.label::DOUBLE AS x, b.label::DOUBLE AS y
    FROM decided AS a
    JOIN decided AS b
      ON a.iteration = b.iteration AND a.pair_id = b.pair_id AND a.agent < b.agent
),
sums AS (
    SELECT iteration, agent_a, agent_b,
           grouping(iteration) = 1 AS all_iterations,
           count(*)::DOUBLE AS n,
           count_if(x = y) AS n_agree,
           count_if(x = 0) * count_if(y = 0) + count_if(x = 1) * count_if(y = 1)
             + count_if(x = 2) * count_if(y = 2) + count_if(x = 3) * count_if(y = 3) AS marginal_products,
           sum(x) AS sx, sum(y) AS sy, sum(x * x) AS sxx, sum(y * y) AS syy,
           sum((x - y) * (x - y)) AS sum_sq_diff
    FROM both_decided
    GROUP BY GROUPING SETS ((iteration, agent_a, agent_b), (agent_a, agent_b))
),
stats AS (
    SELECT *,
           n_agree / n AS p_o,
           marginal_products / (n * n) AS p_e,
           sum_sq_diff / n AS observed_sq_disagreement,
           (sxx + syy) / n - 2 * sx * sy / (n * n) AS expected_sq_disagreement
    FROM sums
)
SELECT iteration,
       agent_a,
       agent_b,
       n::BIGINT AS n,
       p_o AS observed_agreement,
       p_e AS expected_agreement,
       CASE WHEN p_e < 1 THEN (p_o - p_e) / (1 - p_e) END AS kappa,
       observed_sq_disagreement,
       expected_sq_disagreement,
       CASE WHEN expected_sq_disagreement > 0
            THEN 1 - observed_sq_disagreement / expected_sq_disagreement END AS kappa_quadratic
FROM stats
ORDER BY all_iterations, iteration, agent_a, agent_b

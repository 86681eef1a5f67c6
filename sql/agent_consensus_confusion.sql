-- agent_consensus_confusion: per agent, its own label x the consensus label on accepted pairs,
-- per iteration and overall (iteration NULL = all iterations).
--
-- Pairs: those in consensus_labels, joined to each agent's verdict in agent_labels on
-- (iteration, pair_id). agent_status is 'decided' (agent_label 0-3), or 'abstained' / 'failed'
-- (agent_label NULL: the pair was accepted without this agent).
--
--   n                      pairs with this (agent_label, consensus_label)
--   share_of_consensus     n / pairs with this consensus_label for the agent: read a block of rows
--                          with one consensus_label as "when the consensus says k, this agent said ..."
--   agrees                 agent_label = consensus_label
--
-- Reading it: with unanimity (quorum 1.0) every decided agent matches the consensus, so the
-- off-diagonal rows only appear with a quorum below 1; then they show which agent gets outvoted
-- and in which direction. Many abstained/failed rows mean the agent rarely contributes.
WITH consensus AS (
    SELECT iteration, pair_id, label
    FROM consensus_labels
    WHERE label IS NOT NULL
),
joined AS (
    SELECT a.agent,
           a.iteration,
           a.status AS agent_status,
           CASE WHEN a.status = 'decided' THEN a.label END AS agent_label,
           c.label AS consensus_label
    FROM agent_labels AS a
    JOIN consensus AS c ON a.iteration = c.iteration AND a.pair_id = c.pair_id
),
counts AS (
    SELECT agent, iteration, grouping(iteration) = 1 AS all_iterations,
           agent_status, agent_label, consensus_label, count(*) AS n
    FROM joined
    GROUP BY GROUPING SETS ((agent, iteration, agent_status, agent_label, consensus_label),
                            (agent, agent_status, agent_label, consensus_label))
)
SELECT agent,
       iteration,
       consensus_label,
       agent_status,
       agent_label,
       n,
       n / sum(n) OVER (PARTITION BY agent, iteration, all_iterations, consensus_label) AS share_of_consensus,
       coalesce(agent_label = consensus_label, false) AS agrees
FROM counts
ORDER BY agent, all_iterations, iteration, consensus_label, agent_status <> 'decided', agent_label, agent_status

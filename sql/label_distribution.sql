-- label_distribution: how the labels 0-3 are distributed, for the consensus and for each agent,
-- per iteration and overall (iteration NULL = all iterations).
--
--   source  'consensus' (consensus_labels: accepted pairs) or 'agent' (agent_labels, decided only)
--   agent   the agent's name; NULL for the consensus
--   label   0 irrelevant, 1 related, 2 relevant, 3 highly relevant (every label listed, 0 counts too)
--   n       labels given;  share = n / all labels of that source, agent and iteration
--
-- Reading it: compare an agent's shares with the consensus and with the other agents: an agent
-- that gives 3 far more often than the others is lenient (and pulls acceptance down); a consensus
-- drifting toward one label over iterations changes what the model is retrained on.
WITH labelled AS (
    SELECT 'consensus' AS source, NULL::VARCHAR AS agent, iteration, label
    FROM consensus_labels
    WHERE label IS NOT NULL
    UNION ALL
    SELECT 'agent' AS source, agent, iteration, label
    FROM agent_labels
    WHERE status = 'decided' AND label IS NOT NULL
),
counts AS (
    SELECT source, agent, iteration, grouping(iteration) = 1 AS all_iterations, label, count(*) AS n
    FROM labelled
    GROUP BY GROUPING SETS ((source, agent, iteration, label), (source, agent, label))
),
grid AS (  -- every group x every label, so labels never given show up with n = 0
    SELECT g.*, l.label
    FROM (SELECT DISTINCT source, agent, iteration, all_iterations FROM counts) AS g
    CROSS JOIN (SELECT unnest(range(0, 4)) AS label UNION SELECT DISTINCT label FROM labelled) AS l
)
SELECT g.source,
       g.agent,
       g.iteration,
       g.label,
       coalesce(c.n, 0) AS n,
       coalesce(c.n, 0) / sum(coalesce(c.n, 0)) OVER (PARTITION BY g.source, g.agent, g.iteration, g.all_iterations) AS share
FROM grid AS g
LEFT JOIN counts AS c
  ON g.source = c.source AND g.agent IS NOT DISTINCT FROM c.agent
 AND g.iteration IS NOT DISTINCT FROM c.iteration AND g.all_iterations = c.all_iterations AND g.label = c.label
ORDER BY g.source <> 'consensus', g.agent, g.all_iterations, g.iteration, g.label

-- agent_cost_latency: what each agent costs, per agent / backend / model, overall and per
-- iteration (iteration NULL = all iterations). One vote = one reasoning path (agent_votes row).
--
--   votes                  reasoning paths recorded (fresh calls + cached answers)
--   calls                  votes that were real calls (cached = false): these cost tokens and time
--   cached_votes           votes answered from the vote cache
--   failed_calls           calls with status 'failed';  failure_rate = failed_calls / calls
--   abstains               votes with status 'abstain'
--   mean_latency_ms        mean latency over calls;  p95_latency_ms = 95th percentile (linear
--                          interpolation, quantile_cont) over calls
--   prompt_tokens, completion_tokens       totals over calls (cached answers cost nothing)
--   pairs                  distinct (iteration, pair_id) the agent voted on
--   calls_per_pair, prompt_tokens_per_pair, completion_tokens_per_pair   the totals / pairs
--
-- Reading it: calls_per_pair below the number of reasoning paths shows early stopping and the
-- cache at work; a high failure_rate or p95 marks an unreliable backend; tokens per pair times
-- the provider's price is the cost of labelling one pair with this agent.
WITH votes AS (
    SELECT iteration, pair_id, agent, backend, model, status, latency_ms,
           prompt_tokens, completion_tokens, coalesce(cached, false) AS cached
    FROM agent_votes
),
totals AS (
    SELECT iteration, agent, backend, model,
           grouping(iteration) = 1 AS all_iterations,
           count(*) AS votes,
           count_if(NOT cached) AS calls,
           count_if(cached) AS cached_votes,
           count_if(NOT cached AND status = 'failed') AS failed_calls,
           count_if(status = 'abstain') AS abstains,
           avg(latency_ms) FILTER (WHERE NOT cached) AS mean_latency_ms,
           quantile_cont(latency_ms, 0.95) FILTER (WHERE NOT cached) AS p95_latency_ms,
           coalesce(sum(prompt_tokens) FILTER (WHERE NOT cached), 0)::BIGINT AS prompt_tokens,
           coalesce(sum(completion_tokens) FILTER (WHERE NOT cached), 0)::BIGINT AS completion_tokens,
           count(DISTINCT (iteration, pair_id)) AS pairs
    FROM votes
    GROUP BY GROUPING SETS ((agent, backend, model), (iteration, agent, backend, model))
)
SELECT iteration,
       agent,
       backend,
       model,
       votes::BIGINT AS votes,
       calls::BIGINT AS calls,
       cached_votes::BIGINT AS cached_votes,
       failed_calls::BIGINT AS failed_calls,
       CASE WHEN calls > 0 THEN failed_calls / calls END AS failure_rate,
       abstains::BIGINT AS abstains,
       mean_latency_ms,
       p95_latency_ms,
       prompt_tokens,
       completion_tokens,
       pairs::BIGINT AS pairs,
       calls / pairs AS calls_per_pair,
       prompt_tokens / pairs AS prompt_tokens_per_pair,
       completion_tokens / pairs AS completion_tokens_per_pair
FROM totals
ORDER BY all_iterations, iteration, agent, backend, model

"""The multi-agent sample miner (MSM): behavioural agents in Spark, the union, and the budget.

Environmental feedback agents (behaviour disagrees with the model):
- user feedback: ``(clicked or mean dwell > tau_u) and f < tau_c``;
- click model: ``attractiveness > tau_cm and f < tau_c`` with enough examined impressions.
Scoring every logged pair with the model does not scale, so at stream scale the production
ranker's position stands in for the model's opinion where ``f`` is unknown: a pair users engage
with but that was ranked low (``mean_position > tau_position``) is a candidate; the model then
scores the candidates (plus a uniform sample of the rest) and the rule is applied with ``f``.
Intrinsic agents (disagreement, uncertainty) come from the model; the union keeps a pair that
any agent flags, with every agent's score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

PAIR = ["query", "language", "doc_id"]
AGENTS = ("user_feedback", "click_model", "disagreement", "uncertainty")


@dataclass(frozen=True)
class MinerSettings:
    tau_u_ms: float = 30_000.0     # dwell (ms) that counts as satisfied engagement without a click signal
    tau_c: float = 1.5             # model score below which the model calls a pair "not relevant"
    tau_cm: float = 0.35           # click-model attractiveness that means "users want this"
    min_support: float = 2.0       # examined impressions before the click model is believed
    tau_position: float = 3.0      # ranked lower than this (mean position) = the ranker disagreed
    tau_md: float = 0.6            # MC-dropout score gap (max - min over K passes)
    tau_mu: float = 1.0            # entropy of Pr(y|q,d) in nats (max ln 4 = 1.386)
    mc_passes: int = 8
    sample_rest: int = 2000        # uniformly sampled non-candidates the model agents also see
    budget: int = 1500             # pairs per iteration sent to the annotator
    cap_per_query: int = 3
    min_language_share: float = 0.05  # floor so small languages are not starved by the quota
    new_term_bonus: float = 0.5
    seed: int = 17


def window_pairs(impressions: DataFrame) -> DataFrame:
    """Silver impressions of a window aggregated over its days: one row per pair."""
    return impressions.groupBy(*PAIR).agg(
        F.sum("impressions").alias("impressions"), F.sum("clicks").alias("clicks"),
        (F.sum(F.col("mean_position") * F.col("impressions")) / F.sum("impressions")).alias("mean_position"),
        F.avg("mean_dwell_ms").alias("mean_dwell_ms"),
    )


def _low_opinion(settings: MinerSettings):
    """The model thinks little of the pair: f < tau_c where scored, else the ranker placed it low."""
    return F.when(F.col("score").isNotNull(), F.col("score") < settings.tau_c) \
        .otherwise(F.col("mean_position") > settings.tau_position)


def user_feedback_agent(pairs: DataFrame, settings: MinerSettings = MinerSettings()) -> DataFrame:
    """``pairs`` has clicks, impressions, mean_dwell_ms, mean_position and ``score`` (null if unscored)."""
    engaged = (F.col("clicks") > 0) | (F.coalesce(F.col("mean_dwell_ms"), F.lit(0.0)) > settings.tau_u_ms)
    flag = engaged & _low_opinion(settings)
    opinion = F.when(F.col("score").isNotNull(), F.format_string("f=%.2f < %.2f", F.col("score"), F.lit(settings.tau_c))) \
        .otherwise(F.format_string("ranked at %.1f", F.col("mean_position")))
    return pairs.select(
        *PAIR,
        (F.col("clicks") / F.col("impressions")).alias("user_feedback_score"),
        flag.alias("user_feedback_flag"),
        F.when(flag, F.concat(F.format_string("clicked %d/%d", F.col("clicks").cast("int"),
                                              F.col("impressions").cast("int")), F.lit(", "), opinion))
        .alias("user_feedback_reason"),
    )


def click_model_agent(pairs: DataFrame, settings: MinerSettings = MinerSettings()) -> DataFrame:
    """``pairs`` joined with PBM attractiveness and support (and score, mean_position)."""
    flag = (F.col("attractiveness") > settings.tau_cm) & (F.col("support") >= settings.min_support) & \
        _low_opinion(settings)
    return pairs.select(
        *PAIR, F.col("attractiveness").alias("click_model_score"), flag.alias("click_model_flag"),
        F.when(flag, F.format_string("attractiveness %.2f (support %.1f)", F.col("attractiveness"), F.col("support")))
        .alias("click_model_reason"),
    )


def behavioural_candidates(user_feedback: DataFrame, click_model: DataFrame) -> DataFrame:
    """Pairs either behavioural agent flags: what the model agents must score."""
    return user_feedback.where("user_feedback_flag").select(*PAIR) \
        .unionByName(click_model.where("click_model_flag").select(*PAIR)).distinct()


def uniform_sample(pairs: DataFrame, exclude: DataFrame, n: int, seed: int) -> DataFrame:
    """``n`` pairs drawn uniformly from ``pairs`` not in ``exclude`` (deterministic for a seed)."""
    rest = pairs.select(*PAIR).join(exclude.select(*PAIR), PAIR, "left_anti")
    return rest.withColumn("_r", F.rand(seed)).orderBy("_r", *PAIR).limit(n).drop("_r")


def union_of_agents(frames: list[DataFrame]) -> DataFrame:
    """One row per pair any agent flagged: every agent's score and flag, ``agents``, ``n_agents``, ``reasons``."""
    merged = None
    for frame in frames:
        merged = frame if merged is None else merged.join(frame, PAIR, "full_outer")
    present = [a for a in AGENTS if f"{a}_flag" in merged.columns]
    flags = [F.when(F.coalesce(F.col(f"{a}_flag"), F.lit(False)), F.lit(a)) for a in present]
    agents = F.array_sort(F.filter(F.array(*flags), lambda x: x.isNotNull()))
    reasons = F.concat_ws("; ", *[F.when(F.col(f"{a}_flag"), F.concat(F.lit(f"{a}: "),
                                                                       F.coalesce(F.col(f"{a}_reason"), F.lit(""))))
                                  for a in present])
    return merged.withColumn("agents", agents).withColumn("n_agents", F.size("agents")) \
        .withColumn("reasons", reasons).where("n_agents > 0")


def token_key(column):
    """Near-duplicate key of a query: its distinct tokens, sorted (word order and repeats ignored)."""
    return F.concat_ws(" ", F.array_sort(F.array_distinct(F.split(F.lower(column), r"\s+"))))


def select_within_budget(union: DataFrame, settings: MinerSettings = MinerSettings(),
                         new_terms: list[str] | None = None) -> DataFrame:
    """Keep diversity under the budget, not only the top scores.

    priority = agents flagging + their normalized scores (+ a bonus for new terms); then one pair
    per (token-sorted query, doc) drops near-duplicates, at most ``cap_per_query`` pairs per query,
    and a per-language quota proportional to the language's share (with a floor) spreads the budget.
    Returns the selected rows with ``priority`` and ``selection_rank``.
    """
    scored = union
    for agent, scale in (("user_feedback", 1.0), ("click_model", 1.0), ("disagreement", 3.0), ("uncertainty", 1.386)):
        column = f"{agent}_score"
        if column not in scored.columns:
            scored = scored.withColumn(column, F.lit(None).cast("double"))
    terms = [t.lower() for t in (new_terms or [])]
    has_new_term = F.exists(F.split(F.lower(F.col("query")), r"\s+"), lambda t: t.isin(terms)) if terms else F.lit(False)
    priority = (F.col("n_agents").cast("double")
                + F.coalesce(F.col("click_model_score"), F.lit(0.0)) * 0.5
                + F.coalesce(F.col("disagreement_score") / 3.0, F.lit(0.0))
                + F.coalesce(F.col("uncertainty_score") / 1.386, F.lit(0.0))
                + F.when(has_new_term, F.lit(settings.new_term_bonus)).otherwise(0.0))
    ranked = scored.withColumn("priority", priority).withColumn("has_new_term", has_new_term)
    order = [F.col("priority").desc(), *[F.col(c) for c in PAIR]]
    ranked = ranked.withColumn("_dup", F.row_number().over(
        Window.partitionBy(token_key(F.col("query")), "language", "doc_id").orderBy(*order))).where("_dup = 1")
    ranked = ranked.withColumn("_in_query", F.row_number().over(
        Window.partitionBy("query", "language").orderBy(*order))).where(f"_in_query <= {settings.cap_per_query}")
    total = ranked.count()
    if total <= settings.budget:
        return ranked.withColumn("selection_rank", F.row_number().over(Window.orderBy(*order))) \
            .drop("_dup", "_in_query")
    shares = {r["language"]: r["n"] / total for r in ranked.groupBy("language").agg(F.count("*").alias("n")).collect()}
    floor = settings.min_language_share
    weights = {lang: max(share, floor) for lang, share in shares.items()}
    norm = sum(weights.values())
    quota = {lang: max(1, int(round(settings.budget * w / norm))) for lang, w in weights.items()}
    quota_col = F.element_at(F.create_map(*[x for k, v in quota.items() for x in (F.lit(k), F.lit(v))]), F.col("language"))
    ranked = ranked.withColumn("_in_language", F.row_number().over(Window.partitionBy("language").orderBy(*order)))
    chosen = ranked.where(F.col("_in_language") <= quota_col)
    # fill what rounding or small languages left unused with the best remaining pairs
    chosen_count = chosen.count()
    if chosen_count < settings.budget:
        extra = ranked.where(F.col("_in_language") > quota_col).orderBy(*order).limit(settings.budget - chosen_count)
        chosen = chosen.unionByName(extra)
    chosen = chosen.withColumn("selection_rank", F.row_number().over(Window.orderBy(*order)))
    return chosen.where(f"selection_rank <= {settings.budget}").drop("_dup", "_in_query", "_in_language")

"""The multi-agent sample miner (MSM): behavioural agents in Spark, the union, and the budget.

Environmental feedback agents (behaviour disagrees with the model):
- user feedback: ``(clicked or mean dwell > tau_u) and f < tau_c``;
- click model: ``attractiveness > tau_cm and f < tau_c``, with enough examined impressions
  (``support``) and at least one click (see ``MinerSettings.min_clicks``).

The model's score ``f`` (expected label, 0-3) is known only for pairs the model scored, and
scoring every logged pair does not scale. Where ``score`` is null the production ranker's
position stands in for the model's opinion (``rank_proxy``): a pair users engage with but that
was ranked low on average (``mean_position > tau_position``) is flagged, with a reason that says
so. With ``rank_proxy=False`` an unscored pair is never flagged by these agents: behaviour alone
cannot say the model is wrong. The intended flow is the proxy over every logged pair (cheap
candidates), then the model scores the candidates plus a uniform sample of the rest, and the
rules are applied again with ``f``.

Intrinsic agents (disagreement, uncertainty) come from the model; ``union_of_agents`` keeps a pair
any agent flags, with every agent's score, and ``select_within_budget`` keeps a diverse subset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from models import about

PAIR = ["query", "language", "doc_id"]
AGENTS = ("user_feedback", "click_model", "disagreement", "uncertainty")
# the range of each agent's score, so priorities add comparable numbers: CTR and attractiveness
# are probabilities, the MC-dropout gap lives in [0, 3] (labels 0-3), the entropy of 4 labels in [0, ln 4]
SCORE_SCALES = {"user_feedback": 1.0, "click_model": 1.0, "disagreement": 3.0, "uncertainty": math.log(4)}


@dataclass(frozen=True)
class MinerSettings:
    """The miner's thresholds and budget: the one definition of each (``serm_dagster.resources.MiningSettings``
    derives its fields, defaults and descriptions from these)."""

    # --- behavioural agents
    tau_u_ms: float = about(30_000.0, "mean dwell (ms) that counts as satisfied engagement on its own")
    tau_c: float = about(1.5, "the model's score f below this = it calls the pair at most 'related' (1 of 0-3)")
    tau_cm: float = about(0.35, "PBM attractiveness that means 'users want this' (about 1 in 3 examinations "
                          "clicks)")
    min_support: float = about(1.0, "expected examined impressions before the click model is believed")
    min_clicks: int = about(1, "clicks a click-model flag needs: with a Beta(1, 1) prior an unclicked, rarely "
                            "examined pair still has attractiveness near 0.4, which is the prior speaking, not the "
                            "users")
    tau_position: float = about(3.0, "unscored pairs: a mean position below the top 3 = the ranker thinks little "
                                "of it (the rank proxy)")
    rank_proxy: bool = about(True, "False: unscored pairs are never flagged by the behavioural agents")
    # --- model agents. Thresholds None: the ``model_flag_quantile`` of the window's own pairs (the uniform sample
    # the model scores beside the behavioural candidates, which are mostly clicked pairs), because what counts as
    # "unsure" depends on the model (a young seed model is unsure everywhere, a mature one rarely)
    tau_md: float | None = about(None, "MC-dropout score gap threshold; None: model_flag_quantile of the uniform "
                                 "sample's")
    tau_mu: float | None = about(None, "entropy threshold (nats, at most ln 4 = 1.386); None: model_flag_quantile "
                                 "of the uniform sample's")
    model_flag_quantile: float = about(0.8, "where tau_md / tau_mu are None: the model agents flag the pairs above "
                                       "this quantile of the uniform sample's gap / entropy (of every scored pair "
                                       "when there is no sample)")
    mc_passes: int = about(4, "MC-dropout passes per pair")
    mc_top_layers: int = about(1, "n: dropout resampled per MC pass only in the top n encoder layers and the head, "
                               "the layers below run once (1 + passes * n / depth forward passes per pair, not 1 + "
                               "passes); 0: in every layer (full MC dropout). On the demo stream the top 20% by gap "
                               "held 1.50x the model's error rate with n = 1 and 1.58x with full passes, at a third "
                               "of the cost")
    sample_rest: int = about(400, "uniformly sampled non-candidates the model agents also score")
    max_candidates: int = about(1200, "behavioural candidates the model agents score at most, strongest evidence "
                                "first (their cost: (max_candidates + sample_rest) forward passes, plus mc_passes "
                                "passes through the top mc_top_layers; about 160 pairs/s per pass on 2 CPU cores)")
    # --- the budget
    budget: int = about(1000, "pairs per iteration sent to the annotator")
    cap_per_query: int = about(3, "pairs per (language, near-duplicate query key) when over budget: one query must "
                               "not eat the budget")
    min_language_share: float = about(0.05, "each language's floor, as a share of the budget, so small ones are "
                                      "not starved")
    new_term_bonus: float = about(0.5, "priority added when the query holds a term the drift report calls new")
    score_weights: tuple[tuple[str, float], ...] = about(
        (("user_feedback", 0.0), ("click_model", 0.5), ("disagreement", 3.0), ("uncertainty", 0.5)),
        "priority = n_agents + sum(weight * score / scale of the agent's score) (+ new-term bonus), per agent. The "
        "disagreement gap weighs most (its flagged pairs were the most enriched for model errors on the "
        "simulator); raw CTR weighs nothing because the click model's attractiveness is the same signal with "
        "the position bias removed")
    typo_edits: int = about(1, "near-duplicate queries (same doc): all tokens equal but one, and that one at most "
                            "this many edits away, all letters and at least min_typo_token_length long ('sandal' ~ "
                            "'sandals', but not 'tv' ~ 'tc' nor 'iphone 14' ~ 'iphone 15'); 0: no typo check")
    min_typo_token_length: int = about(5, "the shortest word a typo check compares (see typo_edits)")
    diversify_under_budget: bool = about(False, "True: drop near-duplicates and cap queries even when all would "
                                         "fit the budget")
    seed: int = about(17, "seed of the uniform sample and of the MC-dropout passes (an iteration's drift report "
                         "samples with it too)")


def window_pairs(impressions: DataFrame) -> DataFrame:
    """Silver impressions of a window aggregated over its days: one row per pair."""
    dwell_weight = F.when(F.col("mean_dwell_ms").isNotNull(), F.greatest(F.col("clicks"), F.lit(1)))
    return impressions.groupBy(*PAIR).agg(
        F.sum("impressions").alias("impressions"), F.sum("clicks").alias("clicks"),
        (F.sum(F.col("mean_position") * F.col("impressions")) / F.sum("impressions")).alias("mean_position"),
        # each day's mean dwell is over its clicks: weigh days by them
        (F.sum(F.col("mean_dwell_ms") * dwell_weight) / F.sum(dwell_weight)).alias("mean_dwell_ms"),
    )


def _with_nulls(frame: DataFrame, **types: str) -> DataFrame:
    """Optional input columns the frame lacks, added as typed nulls."""
    for name, kind in types.items():
        if name not in frame.columns:
            frame = frame.withColumn(name, F.lit(None).cast(kind))
    return frame


def _low_opinion(settings: MinerSettings) -> tuple[Column, Column]:
    """(the model thinks little of the pair, why): f < tau_c where scored, else the rank proxy."""
    scored = F.col("score").isNotNull()
    proxy = (F.col("mean_position") > settings.tau_position) if settings.rank_proxy else F.lit(False)
    low = F.coalesce(F.when(scored, F.col("score") < settings.tau_c).otherwise(proxy), F.lit(False))
    why = F.when(scored, F.format_string(f"f=%.2f < {settings.tau_c:g}", F.col("score"))) \
        .otherwise(F.format_string(f"unscored, ranked at %.1f > {settings.tau_position:g}", F.col("mean_position")))
    return low, why


def user_feedback_agent(pairs: DataFrame, settings: MinerSettings = MinerSettings()) -> DataFrame:
    """Engagement the model does not explain: ``(clicked or mean dwell > tau_u) and f < tau_c``.

    ``pairs``: query, language, doc_id, clicks, impressions, mean_dwell_ms, and optionally
    ``score`` (the model's f, null when unscored) and ``mean_position`` (the rank proxy).
    Returns ``query, language, doc_id, user_feedback_score`` (the CTR), ``user_feedback_flag``
    and ``user_feedback_reason`` (null unless flagged).
    """
    pairs = _with_nulls(pairs, score="double", mean_position="double", mean_dwell_ms="double")
    clicked = F.col("clicks") >= settings.min_clicks
    long_dwell = F.coalesce(F.col("mean_dwell_ms"), F.lit(0.0)) > settings.tau_u_ms
    low, why = _low_opinion(settings)
    flag = F.coalesce((clicked | long_dwell) & low, F.lit(False))
    engagement = F.concat_ws(" and ", F.when(clicked, F.format_string("clicked %d/%d", F.col("clicks").cast("long"),
                                                                      F.col("impressions").cast("long"))),
                             F.when(long_dwell, F.format_string(f"dwell %.0f ms > {settings.tau_u_ms:g}",
                                                                F.col("mean_dwell_ms"))))
    return pairs.select(
        *PAIR,
        (F.col("clicks") / F.col("impressions")).cast("double").alias("user_feedback_score"),
        flag.alias("user_feedback_flag"),
        F.when(flag, F.concat_ws(", ", engagement, why)).alias("user_feedback_reason"),
    )


def click_model_agent(attractiveness: DataFrame, scores: DataFrame | None = None,
                      settings: MinerSettings = MinerSettings()) -> DataFrame:
    """Position-corrected attractiveness the model does not share: ``R_cm > tau_cm and f < tau_c``.

    ``attractiveness``: ``fit_pbm(...).attractiveness`` (query, language, doc_id, attractiveness,
    support, clicks, mean_position) or any frame carrying those columns (and maybe ``score``).
    ``scores``: query, language, doc_id, score (the model's f), or None: then the frame's own
    ``score`` column if it has one, else the rank proxy for every pair. Returns ``query, language,
    doc_id, click_model_score`` (the attractiveness), ``click_model_flag``, ``click_model_reason``.
    """
    pairs = attractiveness
    if scores is not None:
        extra = ["score"] + [c for c in ("mean_position",) if c in scores.columns and c not in pairs.columns]
        pairs = pairs.drop("score").join(scores.select(*PAIR, *extra), PAIR, "left")
    pairs = _with_nulls(pairs, score="double", mean_position="double")
    enough_clicks = F.col("clicks") >= settings.min_clicks if "clicks" in pairs.columns else F.lit(True)
    low, why = _low_opinion(settings)
    flag = F.coalesce((F.col("attractiveness") > settings.tau_cm) & (F.col("support") >= settings.min_support)
                      & enough_clicks, F.lit(False)) & low
    return pairs.select(
        *PAIR, F.col("attractiveness").cast("double").alias("click_model_score"), flag.alias("click_model_flag"),
        F.when(flag, F.concat_ws(", ", F.format_string(f"attractiveness %.2f > {settings.tau_cm:g} (support %.1f)",
                                                       F.col("attractiveness"), F.col("support")), why))
        .alias("click_model_reason"),
    )


def model_thresholds(scored: DataFrame, settings: MinerSettings, sample: DataFrame | None = None) -> tuple[float, float]:
    """(tau_md, tau_mu): as configured, or the configured quantile of the signals of the scored pairs in
    ``sample`` (the window's uniform sample: its own distribution), or of every scored pair when the sample
    has none of them."""
    if sample is not None:
        sampled = scored.join(sample.select(*PAIR), PAIR, "left_semi")
        scored = sampled if not sampled.isEmpty() else scored
    quantiles = scored.approxQuantile(["disagreement_score", "uncertainty_score"], [settings.model_flag_quantile], 0.001)
    tau_md = settings.tau_md if settings.tau_md is not None else (quantiles[0] or [float("inf")])[0]
    tau_mu = settings.tau_mu if settings.tau_mu is not None else (quantiles[1] or [float("inf")])[0]
    return tau_md, tau_mu


def model_agents(scored: DataFrame, tau_md: float, tau_mu: float, passes: int) -> DataFrame:
    """Disagreement (MC-dropout score gap > tau_md) and uncertainty (entropy > tau_mu) flags."""
    return scored.select(
        *PAIR, "disagreement_score", (F.col("disagreement_score") > tau_md).alias("disagreement_flag"),
        F.when(F.col("disagreement_score") > tau_md,
               F.format_string(f"MC-dropout gap %.2f > {tau_md:.2f} over {passes} passes", "disagreement_score"))
        .alias("disagreement_reason"),
        "uncertainty_score", (F.col("uncertainty_score") > tau_mu).alias("uncertainty_flag"),
        F.when(F.col("uncertainty_score") > tau_mu, F.format_string(f"entropy %.2f > {tau_mu:.2f}", "uncertainty_score"))
        .alias("uncertainty_reason"),
    )


def behavioural_candidates(user_feedback: DataFrame, click_model: DataFrame, limit: int | None = None) -> DataFrame:
    """Pairs either behavioural agent flags (``query, language, doc_id``): what the model agents must score.

    At most ``limit`` (``MinerSettings.max_candidates``): a big window flags tens of thousands of pairs
    through the rank proxy, more than the model can score in an iteration or the budget could use; the
    strongest behavioural evidence (the larger of attractiveness and CTR) goes first."""
    flagged = user_feedback.where("user_feedback_flag").select(*PAIR, F.col("user_feedback_score").alias("_e")) \
        .unionByName(click_model.where("click_model_flag").select(*PAIR, F.col("click_model_score").alias("_e")))
    candidates = flagged.groupBy(*PAIR).agg(F.max("_e").alias("_e"))
    if limit is not None:
        candidates = candidates.orderBy(F.col("_e").desc_nulls_last(), *PAIR).limit(limit)
    return candidates.select(*PAIR)


def uniform_sample(pairs: DataFrame, exclude: DataFrame, n: int, seed: int) -> DataFrame:
    """``n`` pairs drawn uniformly from ``pairs`` not in ``exclude``.

    Ordered by a seeded hash of the pair rather than ``rand``: the same pairs come out for the same
    seed however the input is partitioned.
    """
    rest = pairs.select(*PAIR).distinct().join(exclude.select(*PAIR), PAIR, "left_anti")
    return rest.withColumn("_r", F.xxhash64(F.lit(seed), *PAIR)).orderBy("_r", *PAIR).limit(n).drop("_r")


def union_of_agents(frames: list[DataFrame]) -> DataFrame:
    """One row per pair that any agent flagged.

    Each frame is one agent's output, one row per pair: ``query, language, doc_id`` and
    ``<agent>_score``, ``<agent>_flag``, ``<agent>_reason``. The result has every known agent's
    three columns (null where that agent did not see the pair, or was not run), ``agents``
    (names of the flagging agents, sorted), ``n_agents`` and ``reasons`` (``agent: reason``
    joined by "; ", in the order of ``agents``). Other columns are kept from the first frame
    that has them.
    """
    if not frames:
        raise ValueError("union_of_agents needs at least one agent's frame")
    merged = frames[0]
    for frame in frames[1:]:
        repeated = [c for c in frame.columns if c in merged.columns and c not in PAIR]
        merged = merged.join(frame.drop(*repeated), PAIR, "full_outer")
    names = sorted(set(AGENTS) | {c[: -len("_flag")] for c in merged.columns if c.endswith("_flag")})
    for name in names:
        merged = _with_nulls(merged, **{f"{name}_score": "double", f"{name}_flag": "boolean",
                                        f"{name}_reason": "string"})
    flagged = {name: F.coalesce(F.col(f"{name}_flag"), F.lit(False)) for name in names}
    agents = F.filter(F.array(*[F.when(flagged[n], F.lit(n)) for n in names]), lambda x: x.isNotNull())
    reasons = F.concat_ws("; ", *[F.when(flagged[n], F.concat(F.lit(f"{n}: "), F.coalesce(F.col(f"{n}_reason"),
                                                                                          F.lit("flagged"))))
                                  for n in names])
    return (merged.withColumn("agents", agents).withColumn("n_agents", F.size("agents").cast("int"))
            .withColumn("reasons", reasons).where("n_agents > 0"))


def query_key(column: Column) -> Column:
    """Near-duplicate key of a query: its distinct tokens, sorted, without punctuation and with
    repeated letters (not digits: "lamp 11" is not "lamp 1") collapsed, so "Shoes, red!" and "red
    shooes" both become ``red shoes``."""
    cleaned = F.regexp_replace(F.lower(column), r"[^\p{L}\p{N}\s]", "")
    tokens = F.transform(F.split(F.trim(cleaned), r"\s+"), lambda t: F.regexp_replace(t, r"(\p{L})\1+", "$1"))
    return F.concat_ws(" ", F.array_sort(F.array_distinct(F.filter(tokens, lambda t: t != ""))))


def _has_new_term(terms: list[str] | None) -> Column:
    terms = sorted({" ".join(t.lower().split()) for t in (terms or []) if t and t.strip()})
    if not terms:
        return F.lit(False)
    words = [t for t in terms if " " not in t]
    phrases = [t for t in terms if " " in t]
    tokens = F.split(F.lower(F.col("query")), r"\s+")
    hit = F.arrays_overlap(tokens, F.array(*[F.lit(w) for w in words])) if words else F.lit(False)
    padded = F.concat(F.lit(" "), F.lower(F.col("query")), F.lit(" "))
    for phrase in phrases:
        hit = hit | padded.contains(f" {phrase} ")
    return F.coalesce(hit, F.lit(False))


def language_quotas(available: dict[str, int], budget: int, min_share: float) -> dict[str, int]:
    """Slots per language: proportional to its candidates, but at least ``min_share`` of the budget
    (or all its candidates if fewer) and never more than it has; sums to ``min(budget, total)``.
    Deterministic: largest remainders, then bigger language, then name."""
    available = {lang: n for lang, n in available.items() if n > 0}
    if sum(available.values()) <= budget:
        return dict(available)
    floor = min(int(min_share * budget), budget // len(available))

    def allotted(scale: float) -> dict[str, float]:
        return {lang: min(float(n), max(float(min(n, floor)), scale * n)) for lang, n in available.items()}

    # the share of its candidates every language gets: the scale where the clamped slots fill the
    # budget (their sum grows with the scale, from the floors at 0 to everything at 1)
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if sum(allotted(middle).values()) < budget else (low, middle)
    exact = allotted(high)
    quota = {lang: min(available[lang], int(math.floor(value + 1e-9))) for lang, value in exact.items()}
    order = sorted(available, key=lambda lang: (-(exact[lang] - quota[lang]), -available[lang], lang))
    while sum(quota.values()) < budget:
        for lang in order:
            if sum(quota.values()) < budget and quota[lang] < available[lang]:
                quota[lang] += 1
    while sum(quota.values()) > budget:  # floating point at the top end: take back from the largest remainders' end
        lang = next(lang for lang in reversed(order) if quota[lang] > min(available[lang], floor))
        quota[lang] -= 1
    return quota


def select_within_budget(union: DataFrame, budget: int | None = None, settings: MinerSettings | None = None,
                         new_terms: list[str] | None = None) -> DataFrame:
    """The pairs sent to the annotator: all of them when they fit, else a diverse subset.

    priority = n_agents + weighted normalized agent scores (``settings.score_weights``) +
    ``new_term_bonus`` when the query holds one of ``new_terms``. When the union is larger than
    ``budget`` (default ``settings.budget``):
    1. near-duplicates go: per (language, doc), one pair per ``query_key``, and none whose query is
       a one-word typo of a better pair's (``typo_edits``, ``min_typo_token_length``);
    2. at most ``cap_per_query`` pairs per (language, query key);
    3. if still over budget, ``language_quotas`` slots per language, best pairs first.
    Order everywhere: priority, then query, language, doc_id, so the result is deterministic.
    Returns only the selected rows: the union's columns plus ``priority``, ``has_new_term`` and
    ``selection_rank`` (1 = best).
    """
    settings = settings or MinerSettings()
    budget = settings.budget if budget is None else budget
    for agent in AGENTS:
        union = _with_nulls(union, **{f"{agent}_score": "double"})
    weights = dict(settings.score_weights)
    priority = F.col("n_agents").cast("double")
    for agent, weight in weights.items():
        if weight and f"{agent}_score" in union.columns:
            normalized = F.least(F.greatest(F.col(f"{agent}_score") / SCORE_SCALES.get(agent, 1.0), F.lit(0.0)),
                                 F.lit(1.0))
            priority = priority + F.coalesce(normalized, F.lit(0.0)) * weight
    has_new_term = _has_new_term(new_terms)
    priority = priority + F.when(has_new_term, F.lit(settings.new_term_bonus)).otherwise(F.lit(0.0))
    # materialized once: it is counted, deduplicated and ranked, and the union's joins are not free
    ranked = union.withColumn("has_new_term", has_new_term).withColumn("priority", priority).localCheckpoint()
    order = [F.col("priority").desc(), *[F.col(c).asc() for c in PAIR]]

    def rank(frame: DataFrame) -> DataFrame:
        return frame.withColumn("selection_rank", F.row_number().over(Window.orderBy(*order)))

    if ranked.count() <= budget and not settings.diversify_under_budget:
        return rank(ranked)

    ranked = ranked.withColumn("_key", query_key(F.col("query")))
    ranked = ranked.withColumn("_dup", F.row_number().over(
        Window.partitionBy("language", "doc_id", "_key").orderBy(*order))).where("_dup = 1").drop("_dup")
    ranked = _drop_typo_variants(ranked, settings)
    ranked = ranked.withColumn("_in_query", F.row_number().over(
        Window.partitionBy("language", "_key").orderBy(*order))).where(f"_in_query <= {settings.cap_per_query}")
    available = {r["language"]: r["n"] for r in ranked.groupBy("language").agg(F.count("*").alias("n")).collect()}
    if sum(available.values()) > budget:
        quota = language_quotas(available, budget, settings.min_language_share)
        quota_of = F.element_at(
            F.create_map(*[x for lang, q in sorted(quota.items()) for x in (F.lit(lang), F.lit(q))]), F.col("language"))
        in_language = F.row_number().over(Window.partitionBy("language").orderBy(*order))
        ranked = ranked.withColumn("_in_language", in_language).where(F.col("_in_language") <= quota_of) \
            .drop("_in_language")
    return rank(ranked.drop("_key", "_in_query"))


def _drop_typo_variants(ranked: DataFrame, settings: MinerSettings) -> DataFrame:
    """Drop a pair when the same doc (and language) has a better pair whose query differs by a typo
    in one word (see ``MinerSettings.typo_edits``). Only pairs of one doc are compared: a join per
    doc, not over all pairs."""
    if settings.typo_edits <= 0:
        return ranked
    mine = ranked.select(*PAIR, "priority", F.split("_key", " ").alias("_tokens"))
    other = mine.select("language", "doc_id", F.col("query").alias("_o_query"), F.col("priority").alias("_o_priority"),
                        F.col("_tokens").alias("_o_tokens"))
    only_mine, only_other = F.array_except("_tokens", "_o_tokens"), F.array_except("_o_tokens", "_tokens")
    word = rf"^\p{{L}}{{{settings.min_typo_token_length},}}$"
    typo = (F.size("_tokens") == F.size("_o_tokens")) & (F.size(only_mine) == 1) & (F.size(only_other) == 1) \
        & only_mine[0].rlike(word) & only_other[0].rlike(word) \
        & (F.levenshtein(only_mine[0], only_other[0]) <= settings.typo_edits)
    better = (F.col("_o_priority") > F.col("priority")) | \
        ((F.col("_o_priority") == F.col("priority")) & (F.col("_o_query") < F.col("query")))
    dominated = mine.join(other, ["language", "doc_id"]).where(better & typo).select(*PAIR).distinct()
    return ranked.join(dominated, PAIR, "left_anti")

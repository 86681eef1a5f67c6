"""Drift report: how far a new window of the query stream is from the reference the serving model learnt from.

The report tells an operator *whether* to run a SERM iteration now (a drift-triggered iteration answers the
paper's "a fixed two-week cycle lags sudden trends"). Inputs are bronze query logs (one row per impression);
the reference is the data the serving model was trained on (e.g. the seed period's logs), the window the
newest days. Each signal has a named statistic, a threshold and a verdict:

=================  ===============================================================  ==================
signal             statistic                                                        default threshold
=================  ===============================================================  ==================
language_mix       population stability index (PSI) of the language shares          0.10
                   (Jensen-Shannon distance reported alongside)
query_length       PSI of the tokens-per-query buckets 1..6, 7+ (and mean length)   0.10
term_distribution  Jensen-Shannon distance (base 2) of the token distributions,     0.04
                   minus its session-permutation baseline (sampling bias)
embedding          MMD² (RBF kernel, median-heuristic bandwidth) of MiniLM query    p < 0.01 and
                   embeddings, with a permutation-test p-value                      MMD² > 0.001
new_terms          share of window queries holding a term frequent in the window    0.05
                   (>= 8 times) but absent from the reference
new_documents      share of window clicks on documents never shown in the           0.02
                   reference (>= 3 window impressions), minus its permutation
                   baseline (a small reference misses documents by chance)
=================  ===============================================================  ==================

Why MMD rather than a domain-classifier AUC for the embedding signal: it is a two-sample test with an exact
permutation p-value (no cross-validation folds, no solver, no scikit-learn dependency), it is sensitive to any
difference of distributions with a characteristic (RBF) kernel, and at 500 + 500 queries the whole test is
two 1000 x 1000 matrix products on the driver.

PSI convention: < 0.1 no shift, 0.1-0.25 moderate, > 0.25 major. Overall verdict: the embedding signal alone
(it sees every kind of change at once, with a calibrated test), or at least ``min_signals_for_drift`` (2) of
the others. Heavy counting is Spark (explode / groupBy); the small distribution vectors and the MMD are
computed on the driver with numpy. Queries are per request: logs are deduplicated by ``request_id``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from models import about
from spark_jobs.impressions import normalize_query

REFERENCE, WINDOW = "reference", "window"
# Word tokens: runs of unicode letters, combining marks and digits ("Sonnenbrille", "güneşlik", "42").
TOKEN_PATTERN = r"[\p{L}\p{M}\p{N}]+"
SIGNALS = ("language_mix", "query_length", "term_distribution", "embedding", "new_terms", "new_documents")


class TextEncoder(Protocol):
    """Anything that turns texts into one vector each, e.g. ``models.embeddings.SentenceEmbedder``."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class DriftSettings:
    """Thresholds and sample sizes of the drift report. Defaults were chosen on the project's simulator
    (8 days x 300 queries, first 2 days vs last 2 days; see tests/test_drift.py and the report)."""

    # language mix and query length: PSI, the credit-scoring convention (< 0.1 no shift, > 0.25 major)
    language_psi_threshold: float = 0.10
    length_psi_threshold: float = 0.10
    psi_epsilon: float = 1e-4            # added to every share so an empty bin gives a large, finite PSI
    max_length_bucket: int = 7           # buckets 1..6 and "7+" (a query with no word token counts as 1)
    # term distribution: JS distance minus its session-permutation baseline (see _term_row); on the
    # simulator the excess measured -0.01..0.00 on stationary streams and 0.08-0.10 on drifting ones
    term_js_threshold: float = 0.04
    term_min_count: int = 5              # rarer tokens (both sides together) share one "rare" bin
    # embedding signal: kernel two-sample test on a seeded sample of distinct queries per side
    embedding_sample_size: int = about(500, "distinct queries per side for the embedding drift test; 0 turns the "
                                       "signal off")
    embedding_permutations: int = 100    # >= 100 so that p < 0.01 is reachable (smallest p is 1/(P+1))
    embedding_alpha: float = 0.01
    embedding_mmd_floor: float = 0.001   # a significant but negligible MMD² (huge windows) is not drift
    # new terms: frequent in the window, absent from the reference
    new_term_min_count: int = 8          # occurrences in the window (5 let chance synonyms through)
    new_term_min_chars: int = 2
    new_term_ignore_numeric: bool = True  # sizes and model numbers ("42", "2026") are not vocabulary
    new_term_share_threshold: float = 0.05  # share of window queries with at least one new term
    # new documents: shown in the window, never in the reference; a small reference misses many documents
    # by chance, so the statistic is the excess over the session-permutation baseline
    new_document_min_impressions: int = 3  # window impressions a new document needs to count / be listed
    # excess share of window clicks on new documents: stationary -0.02..0.00, drifting 0.025-0.066 measured
    new_document_click_share_threshold: float = 0.02
    # baselines (term_distribution, new_documents): sessions relabelled at random between the sides estimate
    # what chance alone gives; 0 turns the baselines off (then the raw statistics face the thresholds)
    permutations: int = 5
    # report
    examples: int = 3                    # example queries per new term / document
    max_listed: int = 50                 # rows kept in the new_terms / new_documents tables
    min_signals_for_drift: int = 2       # non-embedding signals that together mean drift
    seed: int = 0

    def validate(self) -> "DriftSettings":
        if self.embedding_sample_size and 1.0 / (self.embedding_permutations + 1) >= self.embedding_alpha:
            raise ValueError("embedding_permutations too small for embedding_alpha: the smallest p-value is "
                             "1/(permutations+1)")
        if self.permutations < 0:
            raise ValueError("permutations must be >= 0 (0: no chance baseline, the raw statistic is used)")
        if self.max_length_bucket < 2 or self.psi_epsilon < 0 or self.min_signals_for_drift < 1:
            raise ValueError("max_length_bucket >= 2, psi_epsilon >= 0 and min_signals_for_drift >= 1 required")
        return self


@dataclass
class DriftReport:
    """One row per signal (``signal, statistic, value, threshold, drifted, detail``) plus the new terms and
    new documents tables; ``metrics`` holds every number (for Dagster metadata / MLflow)."""

    rows: list[dict]
    new_terms: pd.DataFrame
    new_documents: pd.DataFrame
    overall_drifted: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)

    def row(self, signal: str) -> dict:
        return next(r for r in self.rows if r["signal"] == signal)

    @property
    def drifted_signals(self) -> list[str]:
        return [r["signal"] for r in self.rows if r["drifted"]]

    def to_markdown(self, max_items: int = 10) -> str:
        lines = [f"**Drift: {'YES' if self.overall_drifted else 'no'}** ({self.reason})", "",
                 "| signal | statistic | value | threshold | drifted | detail |",
                 "|---|---|---:|---:|---|---|"]
        for r in self.rows:
            lines.append(f"| {r['signal']} | {r['statistic']} | {_fmt(r['value'])} | {_fmt(r['threshold'])} | "
                         f"{'**yes**' if r['drifted'] else 'no'} | {_md(r['detail'])} |")
        for title, table, key in (("New terms", self.new_terms, "term"),
                                  ("New documents", self.new_documents, "doc_id")):
            lines += ["", f"{title} ({len(table)} listed)", ""]
            if table.empty:
                lines.append("none")
                continue
            counts = [c for c in table.columns if c not in (key, "example_queries")]
            lines.append(f"| {key} | " + " | ".join(counts) + " | example queries |")
            lines.append("|---|" + "---:|" * len(counts) + "---|")
            for rec in table.head(max_items).to_dict("records"):
                cells = [_md(str(rec[key]))] + [_md(_fmt(rec[c])) for c in counts]
                lines.append("| " + " | ".join(cells) + " | " + _md("; ".join(rec["example_queries"])) + " |")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# small distribution statistics (driver, numpy)
# ---------------------------------------------------------------------------------------------------------
def _shares(counts, epsilon: float = 0.0) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("a distribution needs a positive total count")
    shares = counts / total
    return (shares + epsilon) / (1.0 + epsilon * len(shares))


def population_stability_index(reference_counts, window_counts, epsilon: float = 1e-4) -> float:
    """PSI = sum_i (w_i - r_i) ln(w_i / r_i) over aligned bins, shares smoothed as (s + eps) / (1 + k eps)."""
    r, w = _shares(reference_counts, epsilon), _shares(window_counts, epsilon)
    with np.errstate(divide="ignore"):
        return float(np.sum((w - r) * np.log(w / r)))


def jensen_shannon_distance(p_counts, q_counts) -> float:
    """sqrt of the Jensen-Shannon divergence in bits: 0 for equal distributions, 1 for disjoint ones."""
    p, q = _shares(p_counts), _shares(q_counts)
    m = 0.5 * (p + q)

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return math.sqrt(max(0.0, 0.5 * kl(p) + 0.5 * kl(q)))


@dataclass(frozen=True)
class MmdTest:
    mmd2: float          # unbiased MMD² estimate
    p_value: float
    bandwidth: float     # sigma of exp(-d² / (2 sigma²)): the median pairwise distance of the pooled sample
    permutations: int


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, permutations: int = 100, seed: int = 0) -> MmdTest:
    """Kernel two-sample test (Gretton et al. 2012): unbiased MMD² with an RBF kernel whose bandwidth is the
    median pairwise distance (the median heuristic), p-value = (1 + #{permuted MMD² >= observed}) / (1 + P)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("the MMD test needs at least 2 samples per side")
    z = np.vstack([x, y])
    sq = np.einsum("ij,ij->i", z, z)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)
    np.fill_diagonal(d2, 0.0)
    median_d2 = float(np.median(d2[np.triu_indices(n + m, 1)]))
    if median_d2 <= 0:
        median_d2 = 1.0  # all points identical: any bandwidth gives MMD² = 0
    kernel = np.exp(-d2 / (2.0 * median_d2))
    # Row 0 is the observed split, the others random relabellings; all MMD²s in two matrix products.
    rng = np.random.default_rng(seed)
    membership = np.zeros((permutations + 1, n + m))
    membership[0, :n] = 1.0
    for i in range(1, permutations + 1):
        membership[i, rng.permutation(n + m)[:n]] = 1.0
    k_x = kernel @ membership.T                              # (n+m, P+1): kernel row sums over the x side
    row_sums = kernel.sum(axis=1)[:, None]
    sum_xx = np.einsum("pn,np->p", membership, k_x) - n      # minus the diagonal k(z, z) = 1
    sum_xy = np.einsum("pn,np->p", membership, row_sums - k_x)
    sum_yy = np.einsum("pn,np->p", 1.0 - membership, row_sums - k_x) - m
    mmd2 = sum_xx / (n * (n - 1)) + sum_yy / (m * (m - 1)) - 2.0 * sum_xy / (n * m)
    p_value = (1.0 + float(np.sum(mmd2[1:] >= mmd2[0]))) / (permutations + 1.0)
    return MmdTest(float(mmd2[0]), p_value, math.sqrt(median_d2), permutations)


# ---------------------------------------------------------------------------------------------------------
# Spark side
# ---------------------------------------------------------------------------------------------------------
def query_requests(logs: DataFrame) -> DataFrame:
    """One row per request: request_id, session_id, query (as typed), norm_query, language, tokens,
    n_tokens."""
    tokens = F.coalesce(F.regexp_extract_all(F.lower(F.col("query")), F.lit(TOKEN_PATTERN), 0),
                        F.array().cast("array<string>"))  # a null query has no token (not size -1)
    return (logs.select("request_id", "session_id", "query", "language").dropDuplicates(["request_id"])
            .withColumn("norm_query", normalize_query(F.col("query")))
            .withColumn("tokens", tokens)
            .withColumn("n_tokens", F.size("tokens")))


def drift_report(reference_logs: DataFrame, window_logs: DataFrame, embedder: TextEncoder | None = None,
                 settings: DriftSettings = DriftSettings()) -> DriftReport:
    """Compare the window's query logs with the reference's; see the module docstring for the signals.

    ``embedder``: anything with ``encode(texts) -> [N, d]`` array; None loads the packaged MiniLM
    (``models.embeddings.SentenceEmbedder``) unless ``settings.embedding_sample_size`` is 0.
    """
    settings.validate()
    requests = (query_requests(reference_logs).withColumn("side", F.lit(REFERENCE))
                .unionByName(query_requests(window_logs).withColumn("side", F.lit(WINDOW)))).cache()
    try:
        metrics: dict[str, float] = {}
        rows = [*_mix_rows(requests, settings, metrics), _term_row(requests, settings, metrics)]
        rows.append(_embedding_row(requests, embedder, settings, metrics))
        new_terms, new_terms_row = _new_terms(requests, settings, metrics)
        new_documents, new_documents_row = _new_documents(reference_logs, window_logs, settings, metrics)
        rows += [new_terms_row, new_documents_row]
    finally:
        requests.unpersist()
    embedding_drifted = any(r["drifted"] for r in rows if r["signal"] == "embedding")
    others = [r["signal"] for r in rows if r["drifted"] and r["signal"] != "embedding"]
    overall = embedding_drifted or len(others) >= settings.min_signals_for_drift
    if embedding_drifted:
        reason = "embedding distribution shifted" + (f"; also {', '.join(others)}" if others else "")
    elif others:
        reason = (f"{len(others)} signals drifted ({', '.join(others)}; "
                  f"{settings.min_signals_for_drift} needed without the embedding signal)")
    else:
        reason = "no signal drifted"
    metrics["overall_drifted"] = float(overall)
    return DriftReport(rows, new_terms, new_documents, overall, reason, metrics)


def _row(signal: str, statistic: str, value: float, threshold: float, drifted: bool, detail: str) -> dict:
    return {"signal": signal, "statistic": statistic, "value": float(value), "threshold": float(threshold),
            "drifted": bool(drifted), "detail": detail}


def _mix_rows(requests: DataFrame, s: DriftSettings, metrics: dict) -> list[dict]:
    """Language mix and query length from one small aggregate (side x language x length bucket)."""
    bucket = F.least(F.greatest(F.col("n_tokens"), F.lit(1)), F.lit(s.max_length_bucket))
    counts = (requests.groupBy("side", "language", bucket.alias("bucket"))
              .agg(F.count(F.lit(1)).alias("requests"), F.sum("n_tokens").alias("tokens")).toPandas())
    totals = counts.groupby("side")["requests"].sum()
    for side in (REFERENCE, WINDOW):
        if totals.get(side, 0) == 0:
            raise ValueError(f"the {side} logs hold no request")
    counts["language"] = counts["language"].fillna("und")

    lang = counts.pivot_table(index="language", columns="side", values="requests", aggfunc="sum",
                              fill_value=0).reindex(columns=[REFERENCE, WINDOW], fill_value=0)
    lang_psi = population_stability_index(lang[REFERENCE], lang[WINDOW], s.psi_epsilon)
    lang_js = jensen_shannon_distance(lang[REFERENCE], lang[WINDOW])
    shares = lang / lang.sum()
    moves = (shares[WINDOW] - shares[REFERENCE]).abs().sort_values(ascending=False, kind="stable").index[:3]
    lang_detail = (f"Jensen-Shannon distance {lang_js:.3f}; {_psi_band(lang_psi)}; largest moves: "
                   + ", ".join(f"{k} {shares.at[k, REFERENCE]:.1%}→{shares.at[k, WINDOW]:.1%}" for k in moves))

    buckets = counts.pivot_table(index="bucket", columns="side", values="requests", aggfunc="sum",
                                 fill_value=0).reindex(index=range(1, s.max_length_bucket + 1),
                                                       columns=[REFERENCE, WINDOW], fill_value=0)
    length_psi = population_stability_index(buckets[REFERENCE], buckets[WINDOW], s.psi_epsilon)
    tokens = counts.groupby("side")["tokens"].sum()
    mean_ref, mean_win = tokens[REFERENCE] / totals[REFERENCE], tokens[WINDOW] / totals[WINDOW]
    length_detail = f"mean tokens per query {mean_ref:.2f}→{mean_win:.2f}; {_psi_band(length_psi)}"

    metrics.update(reference_requests=float(totals[REFERENCE]), window_requests=float(totals[WINDOW]),
                   language_psi=lang_psi, language_js_distance=lang_js, length_psi=length_psi,
                   mean_tokens_reference=float(mean_ref), mean_tokens_window=float(mean_win))
    return [
        _row("language_mix", "PSI (language shares)", lang_psi, s.language_psi_threshold,
             lang_psi > s.language_psi_threshold, lang_detail),
        _row("query_length", f"PSI (tokens per query, buckets 1..{s.max_length_bucket - 1}, "
             f"{s.max_length_bucket}+)", length_psi, s.length_psi_threshold,
             length_psi > s.length_psi_threshold, length_detail),
    ]


def _term_counts(requests: DataFrame) -> DataFrame:
    """token, reference_count, window_count (occurrences)."""
    return (requests.select("side", F.explode("tokens").alias("token"))
            .groupBy("token")
            .agg(F.sum(F.when(F.col("side") == REFERENCE, 1).otherwise(0)).cast("long").alias("reference_count"),
                 F.sum(F.when(F.col("side") == WINDOW, 1).otherwise(0)).cast("long").alias("window_count")))


def _session_unit():
    """What relabelling moves between the sides: a session keeps its language and its reformulations, so
    relabelling single requests would understate the noise (language is drawn per session)."""
    return F.coalesce(F.col("session_id").cast("string"), F.col("request_id").cast("string"))


def _reference_fraction(metrics: dict) -> float:
    return metrics["reference_requests"] / (metrics["reference_requests"] + metrics["window_requests"])


def _relabelled(df: DataFrame, permutations: int, seed: int, reference_fraction: float) -> DataFrame:
    """``df`` (with ``side`` and ``unit``) repeated for draws 0..permutations, with a ``pside`` column: draw 0
    keeps the real side, draw d > 0 puts each unit on the reference side with ``reference_fraction`` odds
    (a seeded hash, so the draws are reproducible and independent of partitioning)."""
    draw = F.explode(F.sequence(F.lit(0), F.lit(permutations))).alias("draw")
    uniform = (F.abs(F.xxhash64("unit", F.col("draw"), F.lit(seed))) % 1_000_000) / 1_000_000.0
    pseudo_side = (F.when(F.col("draw") == 0, F.col("side"))
                   .when(uniform < reference_fraction, F.lit(REFERENCE)).otherwise(F.lit(WINDOW)))
    return df.select("*", draw).withColumn("pside", pseudo_side)


def _term_row(requests: DataFrame, s: DriftSettings, metrics: dict) -> dict:
    """JS distance of the token distributions minus its value under random session relabellings.

    Raw JS distance between two finite samples is far from 0 even without drift (a long tail of tokens seen
    once on one side only), and that bias shrinks as windows grow, so no fixed threshold on it transfers
    across window sizes. Relabelling whole sessions between the sides ``permutations`` times estimates that
    bias with the same sample sizes (see ``_relabelled``); the excess over it is the signal. Tokens rarer than ``term_min_count`` (both sides) share one bin.
    Everything is summed in Spark: the vocabulary never has to fit the driver.
    """
    per_session = (requests.select("side", _session_unit().alias("unit"), F.explode("tokens").alias("token"))
                   .groupBy("side", "unit", "token").agg(F.count(F.lit(1)).alias("n")))
    counts = (_relabelled(per_session, s.permutations, s.seed, _reference_fraction(metrics))
              .groupBy("draw", "token")
              .agg(F.sum(F.when(F.col("pside") == REFERENCE, F.col("n")).otherwise(0)).alias("r"),
                   F.sum(F.when(F.col("pside") == WINDOW, F.col("n")).otherwise(0)).alias("w")))
    # a token's pooled count is the same in every draw, so every draw pools the same rare tokens
    binned = (counts.withColumn("bin", F.when(F.col("r") + F.col("w") >= s.term_min_count, F.col("token"))
                                .otherwise(F.lit("\u0000rare")))
              .groupBy("draw", "bin").agg(F.sum("r").alias("r"), F.sum("w").alias("w")))
    totals = binned.groupBy("draw").agg(F.sum("r").alias("r_total"), F.sum("w").alias("w_total"))
    p = F.col("r") / F.col("r_total")
    q = F.col("w") / F.col("w_total")
    m = (p + q) / 2

    def kl_term(a):
        return F.when(a > 0, a * F.log2(a / m)).otherwise(F.lit(0.0))

    per_draw = (binned.join(totals, "draw")
                .groupBy("draw")
                .agg(F.sum(0.5 * kl_term(p) + 0.5 * kl_term(q)).alias("js_divergence"),
                     F.count(F.lit(1)).alias("bins"), F.first("r_total").alias("r_total"),
                     F.first("w_total").alias("w_total"))
                .toPandas().set_index("draw").sort_index())
    distance = {d: (math.sqrt(max(0.0, row.js_divergence)) if row.r_total and row.w_total else float("nan"))
                for d, row in per_draw.iterrows()}
    observed = distance.get(0, 0.0)
    null = [v for d, v in distance.items() if d > 0 and not math.isnan(v)]
    baseline = float(np.mean(null)) if null else 0.0
    excess = observed - baseline
    obs_row = per_draw.loc[0] if 0 in per_draw.index else None
    metrics.update(term_js_distance=observed, term_js_baseline=baseline, term_js_excess=excess)
    detail = (f"JS distance {observed:.3f}, session-permutation baseline {baseline:.3f} "
              f"({len(null)} relabellings); {int(obs_row.bins) if obs_row is not None else 0} bins (tokens with "
              f">= {s.term_min_count} occurrences, one for the rest)")
    return _row("term_distribution", "Jensen-Shannon distance (base 2, word tokens) minus permutation baseline",
                excess, s.term_js_threshold, excess > s.term_js_threshold, detail)


def _embedding_row(requests: DataFrame, embedder: TextEncoder | None, s: DriftSettings, metrics: dict) -> dict:
    statistic = "MMD² (RBF kernel, median heuristic) + permutation test"
    if s.embedding_sample_size <= 0:
        return _row("embedding", statistic, float("nan"), s.embedding_mmd_floor, False, "turned off")
    # A seeded sample of distinct queries: ordering by a hash of (query, seed) does not depend on partitioning.
    distinct = requests.select("side", "norm_query").where(F.length("norm_query") > 0).distinct()
    rank = F.row_number().over(Window.partitionBy("side").orderBy(F.xxhash64("norm_query", F.lit(s.seed)),
                                                                  "norm_query"))
    sample = (distinct.withColumn("rank", rank).where(F.col("rank") <= s.embedding_sample_size)
              .select("side", "norm_query").toPandas().sort_values(["side", "norm_query"], kind="stable"))
    ref_q = sample.loc[sample["side"] == REFERENCE, "norm_query"].tolist()
    win_q = sample.loc[sample["side"] == WINDOW, "norm_query"].tolist()
    if len(ref_q) < 2 or len(win_q) < 2:
        return _row("embedding", statistic, float("nan"), s.embedding_mmd_floor, False,
                    f"too few distinct queries ({len(ref_q)} reference, {len(win_q)} window)")
    if embedder is None:
        from models.embeddings import SentenceEmbedder

        embedder = SentenceEmbedder(autocast=True)  # bf16 where native: the test does not feel the rounding
    unique = sorted(set(ref_q) | set(win_q))  # a query on both sides is encoded once
    vectors = np.asarray(embedder.encode(unique), dtype=np.float64)
    index = {q: i for i, q in enumerate(unique)}
    test = mmd_permutation_test(vectors[[index[q] for q in ref_q]], vectors[[index[q] for q in win_q]],
                                s.embedding_permutations, s.seed)
    drifted = test.p_value < s.embedding_alpha and test.mmd2 > s.embedding_mmd_floor
    metrics.update(embedding_mmd2=test.mmd2, embedding_p_value=test.p_value, embedding_bandwidth=test.bandwidth)
    detail = (f"p = {test.p_value:.4f} (alpha {s.embedding_alpha}, {test.permutations} permutations); "
              f"bandwidth {test.bandwidth:.3f}; {len(ref_q)} vs {len(win_q)} distinct queries")
    return _row("embedding", statistic, test.mmd2, s.embedding_mmd_floor, drifted, detail)


def _new_terms(requests: DataFrame, s: DriftSettings, metrics: dict) -> tuple[pd.DataFrame, dict]:
    """Tokens seen at least ``new_term_min_count`` times in the window and never in the reference."""
    counts = _term_counts(requests)
    new = counts.where((F.col("reference_count") == 0) & (F.col("window_count") >= s.new_term_min_count)
                       & (F.length("token") >= s.new_term_min_chars))
    if s.new_term_ignore_numeric:
        new = new.where(~F.col("token").rlike(r"^\p{N}+$"))
    hits = (requests.where(F.col("side") == WINDOW)
            .select("request_id", "norm_query", "language", F.explode("tokens").alias("token"))
            .join(new.select("token", "window_count"), "token"))
    table = (hits.groupBy("token")
             .agg(F.first("window_count").alias("window_count"),
                  F.countDistinct("request_id").alias("window_requests"),
                  F.array_sort(F.collect_set("language")).alias("languages"),
                  F.slice(F.array_sort(F.collect_set("norm_query")), 1, s.examples).alias("example_queries"))
             .orderBy(F.desc("window_count"), "token").limit(s.max_listed).toPandas()
             .rename(columns={"token": "term"}))
    table["languages"] = table["languages"].map(lambda v: ", ".join(v))
    table["example_queries"] = table["example_queries"].map(list)
    # every new term occurs in the window, so the hits alone count the terms and the queries holding them
    found = hits.agg(F.countDistinct("token").alias("terms"), F.countDistinct("request_id").alias("requests"))
    n_terms, with_new = (int(v or 0) for v in found.collect()[0])
    share = with_new / metrics["window_requests"]
    metrics.update(new_terms=float(n_terms), new_term_query_share=share)
    detail = (f"{int(metrics['new_terms'])} terms (>= {s.new_term_min_count} occurrences, none in the reference) "
              f"in {with_new} window queries")
    if len(table):
        detail += "; top: " + ", ".join(table["term"].head(5))
    row = _row("new_terms", "share of window queries with a new term", share, s.new_term_share_threshold,
               share > s.new_term_share_threshold, detail)
    return table[["term", "window_count", "window_requests", "languages", "example_queries"]], row


def _new_documents(reference_logs: DataFrame, window_logs: DataFrame, s: DriftSettings,
                   metrics: dict) -> tuple[pd.DataFrame, dict]:
    """Documents shown in the window at least ``new_document_min_impressions`` times and never shown in the
    reference. A small reference misses many catalogue documents by chance, so the signal is the share of
    window clicks on new documents minus that share under random session relabellings (launches stay
    "new" only in the real split; chance gaps appear in every split)."""
    logs = (reference_logs.withColumn("side", F.lit(REFERENCE))
            .unionByName(window_logs.withColumn("side", F.lit(WINDOW)), allowMissingColumns=True))
    per_unit = (logs.groupBy("side", _session_unit().alias("unit"), "doc_id")
                .agg(F.count(F.lit(1)).alias("impressions"), F.sum(F.col("clicked").cast("long")).alias("clicks")))
    per_doc = (_relabelled(per_unit, s.permutations, s.seed, _reference_fraction(metrics))
               .groupBy("draw", "doc_id")
               .agg(F.sum(F.when(F.col("pside") == REFERENCE, F.col("impressions")).otherwise(0)).alias("r_imp"),
                    F.sum(F.when(F.col("pside") == WINDOW, F.col("impressions")).otherwise(0)).alias("w_imp"),
                    F.sum(F.when(F.col("pside") == WINDOW, F.col("clicks")).otherwise(0)).alias("w_clicks")))
    is_new = (F.col("r_imp") == 0) & (F.col("w_imp") >= s.new_document_min_impressions)
    per_draw = (per_doc.groupBy("draw")
                .agg(F.sum(F.when(is_new, 1).otherwise(0)).alias("documents"),
                     F.sum(F.when(is_new, F.col("w_clicks")).otherwise(0)).alias("new_clicks"),
                     F.sum(F.when(is_new, F.col("w_imp")).otherwise(0)).alias("new_impressions"),
                     F.sum("w_clicks").alias("clicks"), F.sum("w_imp").alias("impressions"))
                .toPandas().set_index("draw").sort_index())
    click_share = (per_draw["new_clicks"] / per_draw["clicks"].where(per_draw["clicks"] > 0)).fillna(0.0)
    observed = per_draw.loc[0] if 0 in per_draw.index else pd.Series(0, index=per_draw.columns)
    share = float(click_share.get(0, 0.0))
    baseline = float(click_share.drop(index=0, errors="ignore").mean()) if len(click_share) > 1 else 0.0
    excess = share - baseline
    impression_share = float(observed["new_impressions"]) / max(float(observed["impressions"]), 1.0)

    seen = reference_logs.select("doc_id").distinct()
    table = (window_logs.groupBy("doc_id")
             .agg(F.count(F.lit(1)).alias("impressions"), F.sum(F.col("clicked").cast("long")).alias("clicks"),
                  F.countDistinct("request_id").alias("requests"),
                  F.slice(F.array_sort(F.collect_set(normalize_query(F.col("query")))), 1, s.examples)
                  .alias("example_queries"))
             .where(F.col("impressions") >= s.new_document_min_impressions)
             .join(seen, "doc_id", "left_anti")
             .orderBy(F.desc("clicks"), F.desc("impressions"), "doc_id").limit(s.max_listed).toPandas())
    table["example_queries"] = table["example_queries"].map(list)
    metrics.update(new_documents=float(observed["documents"]), new_document_click_share=share,
                   new_document_click_share_baseline=baseline, new_document_click_share_excess=excess,
                   new_document_impression_share=impression_share)
    detail = (f"{int(observed['documents'])} documents with >= {s.new_document_min_impressions} window impressions "
              f"and none in the reference took {int(observed['new_clicks'])} of {int(observed['clicks'])} window "
              f"clicks ({share:.1%}; session-permutation baseline {baseline:.1%}) and {impression_share:.1%} "
              f"of impressions")
    row = _row("new_documents", "share of window clicks on new documents minus permutation baseline", excess,
               s.new_document_click_share_threshold, excess > s.new_document_click_share_threshold, detail)
    return table[["doc_id", "impressions", "clicks", "requests", "example_queries"]], row


def _psi_band(psi: float) -> str:
    return "no shift" if psi < 0.1 else "moderate shift" if psi <= 0.25 else "major shift"


def _fmt(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")

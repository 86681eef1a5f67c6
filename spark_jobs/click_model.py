"""A position-based click model (PBM) fitted by EM in Spark.

P(click | q, d, position k) = gamma_k * alpha_qd: the user examines position k with probability
gamma_k and clicks what they examine with probability alpha_qd (its attractiveness). EM follows
Chuklin, Markov and de Rijke, "Click Models for Web Search" (2015), section 4.2, on counts
aggregated per (pair, position), with Beta priors so thin pairs shrink towards the prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from spark_jobs.impressions import normalize_query

PAIR = ["query", "language", "doc_id"]


@dataclass(frozen=True)
class PbmSettings:
    iterations: int = 20
    tolerance: float = 1e-4        # stop when no gamma moves more than this
    alpha_prior: tuple[float, float] = (1.0, 1.0)   # Beta(a, b) on attractiveness: 0.5 with no data
    gamma_prior: tuple[float, float] = (1.0, 1.0)
    max_position: int = 50         # deeper positions are folded into this one
    checkpoint_every: int = 5      # cut Spark lineage so 20 iterations do not build a huge plan


@dataclass
class PbmModel:
    examination: pd.Series   # position -> gamma
    attractiveness: DataFrame  # query, language, doc_id, attractiveness, impressions, clicks, support
    iterations: int


def position_counts(query_logs: DataFrame, max_position: int = 50) -> DataFrame:
    """``query, language, doc_id, position, impressions, clicks`` from raw impression rows."""
    return (
        query_logs.withColumn("query", normalize_query(F.col("query")))
        .withColumn("position", F.least(F.col("position"), F.lit(max_position)))
        .groupBy(*PAIR, "position")
        .agg(F.count(F.lit(1)).alias("impressions"), F.sum(F.col("clicked").cast("long")).alias("clicks"))
    )


def fit_pbm(counts: DataFrame, settings: PbmSettings = PbmSettings()) -> PbmModel:
    """EM over aggregated counts; gamma is tiny (one value per position) and lives on the driver."""
    a0, b0 = settings.alpha_prior
    g0, h0 = settings.gamma_prior
    pair_window = Window.partitionBy(*PAIR)
    rows = counts.select(*PAIR, "position", F.col("impressions").cast("double").alias("n"),
                         F.col("clicks").cast("double").alias("c")).withColumn("alpha", F.lit(a0 / (a0 + b0)))
    rows = rows.localCheckpoint()
    positions = sorted(r["position"] for r in rows.select("position").distinct().collect())
    gamma = {p: 0.5 for p in positions}
    done = 0
    for done in range(1, settings.iterations + 1):
        gamma_col = F.element_at(F.create_map(*[x for p in positions for x in (F.lit(p), F.lit(gamma[p]))]),
                                 F.col("position"))
        unclicked = F.col("n") - F.col("c")
        denominator = 1.0 - gamma_col * F.col("alpha")
        # expected attractive / examined impressions among the unclicked ones (E-step)
        attractive = F.col("c") + unclicked * F.col("alpha") * (1.0 - gamma_col) / denominator
        examined = F.col("c") + unclicked * gamma_col * (1.0 - F.col("alpha")) / denominator
        step = rows.withColumn("_attractive", attractive).withColumn("_examined", examined)
        new_gamma = {r["position"]: (r["e"] + g0) / (r["n"] + g0 + h0) for r in
                     step.groupBy("position").agg(F.sum("_examined").alias("e"), F.sum("n").alias("n")).collect()}
        rows = step.withColumn("alpha", (F.sum("_attractive").over(pair_window) + a0) /
                               (F.sum("n").over(pair_window) + a0 + b0)).drop("_attractive", "_examined")
        if done % settings.checkpoint_every == 0:
            rows = rows.localCheckpoint()
        moved = max(abs(new_gamma[p] - gamma[p]) for p in positions) if positions else 0.0
        gamma = new_gamma
        if moved < settings.tolerance:
            break
    rows = rows.localCheckpoint()
    gamma_col = F.element_at(F.create_map(*[x for p in positions for x in (F.lit(p), F.lit(gamma[p]))]),
                             F.col("position"))
    attractiveness = rows.groupBy(*PAIR).agg(
        F.first("alpha").alias("attractiveness"),
        F.sum("n").cast("long").alias("impressions"),
        F.sum("c").cast("long").alias("clicks"),
        F.sum(F.col("n") * gamma_col).alias("support"),  # impressions the user actually examined, in expectation
    )
    return PbmModel(pd.Series(gamma, name="examination").sort_index(), attractiveness, done)

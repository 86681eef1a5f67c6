"""Silver: one row per query-document pair per day, from bronze query logs."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def normalize_query(column):
    """Case-folded, trimmed, single-spaced query text: the key pairs are grouped by."""
    return F.regexp_replace(F.lower(F.trim(column)), r"\s+", " ")


def build_impressions(query_logs: DataFrame) -> DataFrame:
    """impressions, clicks, CTR, mean position and mean dwell (over clicks with a dwell).

    No count of distinct sessions: nothing downstream reads one, and its exact count cost a third of this step
    at a million rows (bronze keeps ``session_id`` for whoever needs it)."""
    return (
        query_logs.withColumn("query", normalize_query(F.col("query")))
        .groupBy("date", "query", "language", "doc_id")
        .agg(
            F.count(F.lit(1)).cast("long").alias("impressions"),
            F.sum(F.col("clicked").cast("long")).alias("clicks"),
            F.avg(F.col("position").cast("double")).alias("mean_position"),
            F.avg(F.when(F.col("clicked"), F.col("dwell_ms"))).alias("mean_dwell_ms"),
        )
        .withColumn("ctr", F.col("clicks") / F.col("impressions"))
        .select("date", "query", "language", "doc_id", "impressions", "clicks", "ctr", "mean_position",
                "mean_dwell_ms")
    )

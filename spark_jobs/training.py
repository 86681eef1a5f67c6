"""Training and test data: document texts, labelled pairs, and the static and evolving test sets."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.impressions import normalize_query


def document_texts(catalog: DataFrame) -> DataFrame:
    """``doc_id, language, title, doc_text``: the text the relevance model reads (title, then description)."""
    text = F.concat_ws(". ", F.col("title"), F.coalesce(F.col("description"), F.lit("")))
    return catalog.select("doc_id", "language", "title", F.regexp_replace(text, r"\.\s*$", "").alias("doc_text"))


def labelled_pairs(judgments: DataFrame, documents: DataFrame) -> DataFrame:
    """Judged pairs with their document text; pairs whose document is not in the catalogue are dropped."""
    return (
        judgments.withColumn("query", normalize_query(F.col("query")))
        .join(documents.select("doc_id", "doc_text"), "doc_id", "inner")
        .select("query", "language", "doc_id", "doc_text", F.col("label").cast("int").alias("label"), "split", "ts")
    )


@dataclass(frozen=True)
class TestWindows:
    """How test judgments are split by when the pair was seen (``ts``).

    static: up to the end of the seed period (the last seed judgment's day), or undated;
    evolving: the newest ``evolving_days`` days of dated test judgments.
    """

    evolving_days: int = 3


def split_test_sets(pairs: DataFrame, windows: TestWindows = TestWindows()) -> DataFrame:
    """Test pairs with a ``test_set`` column: ``static`` or ``evolving`` (others are dropped)."""
    seed_end = pairs.where("split = 'seed' AND ts IS NOT NULL").agg(F.max(F.to_date("ts")).alias("d")).collect()[0]["d"]
    test = pairs.where("split = 'test'").withColumn("day", F.to_date("ts"))
    newest = test.agg(F.max("day").alias("d")).collect()[0]["d"]
    evolving_start = F.date_sub(F.lit(newest), windows.evolving_days - 1) if newest else None
    static = F.col("day").isNull()
    if seed_end is not None:
        static = static | (F.col("day") <= F.lit(seed_end))
    label = F.when(static, F.lit("static"))
    if evolving_start is not None:
        label = label.when(F.col("day") >= evolving_start, F.lit("evolving"))
    return test.withColumn("test_set", label).where("test_set IS NOT NULL").drop("day")

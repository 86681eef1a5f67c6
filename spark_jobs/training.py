"""Training and test data: document texts, labelled pairs, and the static and evolving test sets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from models.metrics import TEST, VALIDATION
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
    """How test judgments are split by when the pair was seen (``ts``) and by query.

    static: up to the end of the seed period (the last seed judgment's day), or undated;
    evolving: the ``evolving_days`` days of dated test judgments ending at ``as_of`` (the iteration's window
    end; never a judgment dated after it), or ending at the newest dated test judgment when ``as_of`` is None.
    Each set is cut by query into a ``validation`` part (``validation_share`` of the queries, what promotion
    decides on) and a ``test`` part (what reports show).
    """

    __test__ = False  # not a pytest class, despite its name

    evolving_days: int = 3
    as_of: date | None = None
    validation_share: float = 0.5


# salts the part's hash: a judged set someone cut by a plain hash of the query text (ESCI's development part
# was: 56 of its 60 queries hash below 0.5) would otherwise land nearly whole in one part
PART_SALT = "serm-part\t"


def query_part(query: Column, validation_share: float) -> Column:
    """``validation`` or ``test`` for a query: a stable, salted hash (SHA-256) of the normalised query text,
    so the same query falls in the same part in every test set, window and run."""
    digest = F.sha2(F.concat(F.lit(PART_SALT), normalize_query(query)), 256)
    bucket = F.conv(F.substring(digest, 1, 8), 16, 10).cast("double") / float(16 ** 8)
    return F.when(bucket < F.lit(float(validation_share)), F.lit(VALIDATION)).otherwise(F.lit(TEST))


def split_test_sets(pairs: DataFrame, windows: TestWindows = TestWindows()) -> DataFrame:
    """Test pairs with ``test_set`` (``static`` or ``evolving``; others are dropped) and ``part``."""
    seed_end = pairs.where("split = 'seed' AND ts IS NOT NULL").agg(F.max(F.to_date("ts")).alias("d")).collect()[0]["d"]
    test = pairs.where("split = 'test'").withColumn("day", F.to_date("ts"))
    as_of = windows.as_of or test.agg(F.max("day").alias("d")).collect()[0]["d"]
    static = F.col("day").isNull()
    if seed_end is not None:
        static = static | (F.col("day") <= F.lit(seed_end))
    label = F.when(static, F.lit("static"))
    if as_of is not None:
        evolving = F.col("day").between(F.date_sub(F.lit(as_of), windows.evolving_days - 1), F.lit(as_of))
        label = label.when(evolving, F.lit("evolving"))
    return (test.withColumn("test_set", label).where("test_set IS NOT NULL")
            .withColumn("part", query_part(F.col("query"), windows.validation_share)).drop("day"))

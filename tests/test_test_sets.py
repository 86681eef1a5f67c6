"""The static and evolving test sets, as of an iteration's window end, cut by query into validation and test
parts (real Spark)."""

import hashlib
from datetime import date, datetime, timezone

import pandas as pd

from spark_jobs.training import TestWindows, split_test_sets


def judged_pairs(spark, days: list[int]):
    """Seed judgments on 2026-01-01..02 and, per day in ``days``, 40 test queries of two documents each."""
    rows = [("seed q", "en", "d0", 1, "seed", datetime(2026, 1, d, tzinfo=timezone.utc)) for d in (1, 2)]
    for day in days:
        for q in range(40):
            for doc in ("d1", "d2"):
                rows.append((f"query {day} {q}", "en", doc, q % 4, "test", datetime(2026, 1, day, tzinfo=timezone.utc)))
    return spark.createDataFrame(pd.DataFrame(rows, columns=["query", "language", "doc_id", "label", "split", "ts"])
                                 .assign(doc_text="text"))


def test_the_evolving_set_ends_at_the_as_of_day_and_never_after(spark):
    pairs = judged_pairs(spark, [2, 4, 5, 6, 8])
    split = split_test_sets(pairs, TestWindows(evolving_days=2, as_of=date(2026, 1, 6))).toPandas()
    days = split.assign(day=pd.to_datetime(split["ts"]).dt.day).groupby("test_set")["day"].agg(["min", "max"])
    assert days.loc["evolving"].tolist() == [5, 6]  # day 8 lies after the as-of day, day 4 before the window
    assert days.loc["static"].tolist() == [2, 2]
    newest = split_test_sets(pairs, TestWindows(evolving_days=2)).toPandas()  # no as-of: the newest judgments
    assert sorted(pd.to_datetime(newest.loc[newest.test_set == "evolving", "ts"]).dt.day.unique()) == [8]


def test_parts_are_cut_by_query_with_a_stable_hash(spark):
    pairs = judged_pairs(spark, [2, 5, 6])
    split = split_test_sets(pairs, TestWindows(evolving_days=2, as_of=date(2026, 1, 6))).toPandas()
    assert set(split["part"]) == {"validation", "test"}
    assert split.groupby("query")["part"].nunique().eq(1).all()  # a query's pairs stay together
    share = split.drop_duplicates("query")["part"].eq("validation").mean()
    assert 0.3 < share < 0.7
    # the same query text, however cased or spaced, lands in the same part in every run and with any as-of day
    again = split_test_sets(pairs, TestWindows(3, date(2026, 1, 5))).toPandas()
    parts = split.drop_duplicates("query").set_index("query")["part"]
    assert (again.drop_duplicates("query").set_index("query")["part"] == parts.reindex(again["query"].unique())).all()
    shouted = pairs.selectExpr("upper(query) AS query", "language", "doc_id", "label", "split", "ts", "doc_text")
    assert split_test_sets(shouted, TestWindows(2, date(2026, 1, 6))).toPandas().assign(
        query=lambda f: f["query"].str.lower()).set_index(["query", "doc_id"])["part"].sort_index().equals(
        split.set_index(["query", "doc_id"])["part"].sort_index())
    # the share is one setting: all validation, all test
    assert set(split_test_sets(pairs, TestWindows(2, date(2026, 1, 6), validation_share=1.0)).toPandas()["part"]) \
        == {"validation"}
    assert set(split_test_sets(pairs, TestWindows(2, date(2026, 1, 6), validation_share=0.0)).toPandas()["part"]) \
        == {"test"}


def test_a_set_cut_upstream_by_a_plain_hash_still_splits_in_two(spark):
    """A judged set whose owner kept the queries whose plain SHA-256 falls in the lower half (as ESCI's
    development part was cut) must not land whole in one part: the part's hash is salted."""
    kept = [q for q in (f"lower half {i}" for i in range(400))
            if int(hashlib.sha256(q.encode()).hexdigest()[:8], 16) / 16 ** 8 < 0.5][:80]
    rows = [("seed q", "en", "d0", 1, "seed", datetime(2026, 1, 1, tzinfo=timezone.utc))]
    rows += [(q, "en", "d1", 2, "test", datetime(2026, 1, 6, tzinfo=timezone.utc)) for q in kept]
    pairs = spark.createDataFrame(pd.DataFrame(rows, columns=["query", "language", "doc_id", "label", "split", "ts"])
                                  .assign(doc_text="text"))
    split = split_test_sets(pairs, TestWindows(evolving_days=2, as_of=date(2026, 1, 6))).toPandas()
    assert len(kept) == 80 and 0.3 < split["part"].eq("validation").mean() < 0.7

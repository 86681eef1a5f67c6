"""The storage layer: Delta tables through delta-rs, partition replacement, lineage in commits."""

import datetime as dt
import os

import pyarrow as pa
import pytest
from deltalake.exceptions import SchemaMismatchError

from serm_dagster.storage import DeltaStore, delta_jars_available, partition_predicate


def _day(day: str, values: list[int]) -> pa.Table:
    return pa.table({"date": pa.array([dt.date.fromisoformat(day)] * len(values), pa.date32()),
                     "value": pa.array(values, pa.int64())})


def test_replacing_a_partition_keeps_other_days_and_adds_no_duplicates(tmp_path):
    store = DeltaStore(tmp_path)
    store.write("bronze/t", pa.concat_tables([_day("2026-01-01", [1, 2]), _day("2026-01-02", [3])]),
                lineage={"step": 1}, partition_by=["date"])
    store.write("bronze/t", _day("2026-01-02", [7, 8, 9]), lineage={"step": 2}, partition_by=["date"],
                replace={"date": ["2026-01-02"]})
    store.write("bronze/t", _day("2026-01-02", [7, 8, 9]), lineage={"step": 3}, partition_by=["date"],
                replace={"date": ["2026-01-02"]})
    rows = store.read_arrow("bronze/t").to_pylist()
    by_day = {}
    for row in rows:
        by_day.setdefault(row["date"].isoformat(), []).append(row["value"])
    assert sorted(by_day["2026-01-01"]) == [1, 2]
    assert sorted(by_day["2026-01-02"]) == [7, 8, 9]
    assert store.version("bronze/t") == 2
    assert store.count_rows("bronze/t") == 5


def test_an_empty_replacement_clears_only_that_day(tmp_path):
    store = DeltaStore(tmp_path)
    store.write("bronze/t", pa.concat_tables([_day("2026-01-01", [1]), _day("2026-01-02", [2])]),
                lineage={}, partition_by=["date"])
    store.write("bronze/t", _day("2026-01-02", []), lineage={}, partition_by=["date"],
                replace={"date": ["2026-01-02"]})
    assert [r["value"] for r in store.read_arrow("bronze/t").to_pylist()] == [1]


def test_every_commit_carries_its_lineage(tmp_path):
    store = DeltaStore(tmp_path)
    store.write("silver/t", _day("2026-01-01", [1]), lineage={"dagster_run_id": "r1", "upstream_versions": {"a/b": 3}})
    store.write("silver/t", _day("2026-01-01", [2]), lineage={"dagster_run_id": "r2", "upstream_versions": {"a/b": 4}})
    assert store.lineage("silver/t", 0)["dagster_run_id"] == "r1"
    assert store.lineage("silver/t")["upstream_versions"] == {"a/b": 4}
    assert store.read_arrow("silver/t", version=0).column("value").to_pylist() == [1]


def test_spark_round_trip_through_arrow(tmp_path, spark):
    store = DeltaStore(tmp_path)
    frame = spark.createDataFrame([(dt.date(2026, 1, 1), "q", 1.5)], "date date, query string, score double")
    result = store.write("gold/t", frame, lineage={"x": 1}, partition_by=["date"])
    assert (result.version, result.rows_written, result.native) == (0, 1, False)
    back = store.read_spark(spark, "gold/t", where_in=("date", [dt.date(2026, 1, 1)]))
    assert back.collect()[0]["score"] == 1.5
    empty = store.read_spark(spark, "gold/t", where_in=("date", [dt.date(2026, 1, 2)]))
    assert empty.count() == 0 and set(empty.columns) == {"date", "query", "score"}


def test_spark_reads_the_versions_files_whatever_the_paths_hold(tmp_path, spark):
    """Spark reads a table's Parquet files itself: a root with a space and '%', partition values that need
    escaping or look like numbers, a null partition, the Delta schema's types and column order, an old version."""
    store = DeltaStore(tmp_path / "a b%c")
    table = pa.table({"k": ["x y", "00123", "=/%", None], "v": pa.array([1, 2, 3, 4], pa.int32()),
                      "ts": pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)] * 4, pa.timestamp("us", tz="UTC"))})
    store.write("gold/u", table, lineage={}, partition_by=["k"])
    store.write("gold/u", table.slice(0, 1), lineage={}, partition_by=["k"])
    back = store.read_spark(spark, "gold/u", version=0)
    assert back.columns == ["k", "v", "ts"] and back.schema.simpleString() == "struct<k:string,v:int,ts:timestamp>"
    assert sorted((r["k"] or "", r["v"]) for r in back.collect()) == [("", 4), ("00123", 2), ("=/%", 3), ("x y", 1)]
    assert [r["v"] for r in store.read_spark(spark, "gold/u", version=0, where_in=("k", ["00123", "=/%"]))
            .orderBy("v").collect()] == [2, 3]
    assert [r["k"] for r in store.read_spark(spark, "gold/u").collect()] == ["x y"]  # the latest version


def test_spark_files_are_committed_as_written(tmp_path, spark):
    """A DataFrame's Parquet files, written by Spark, become the table's files (no second write through the driver):
    partition values that need escaping or are null, lists and timestamps, a partition replaced or emptied, the whole
    table overwritten with a new schema; delta-rs and Spark read back what was written, and no staging is left."""
    store = DeltaStore(tmp_path / "a b%c")
    schema = "k string, n int, tags array<string>, ts timestamp"
    when = dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc)
    rows = [("x y", 1, ["a"], when), ("=/%:", 2, [], when), (None, 3, None, when), ("x y", 4, ["b", "c"], None)]
    first = store.write("gold/s", spark.createDataFrame(rows, schema), lineage={"step": 1}, partition_by=["k"])
    assert (first.version, first.rows_written, first.native) == (0, 4, False)
    assert {p.name[:5] for p in (tmp_path / "a b%c" / "gold" / "s").rglob("*.parquet")} == {"part-"}  # Spark's
    assert sorted(store.read_arrow("gold/s").to_pylist(), key=lambda r: r["n"]) == [
        {"k": "x y", "n": 1, "tags": ["a"], "ts": when}, {"k": "=/%:", "n": 2, "tags": [], "ts": when},
        {"k": None, "n": 3, "tags": None, "ts": when}, {"k": "x y", "n": 4, "tags": ["b", "c"], "ts": None}]
    replaced = store.write("gold/s", spark.createDataFrame([("=/%:", 9, ["z"], when)], schema), lineage={"step": 2},
                           partition_by=["k"], replace={"k": ["=/%:"]})
    emptied = store.write("gold/s", spark.createDataFrame([], schema), lineage={"step": 3}, partition_by=["k"],
                          replace={"k": ["x y"]})
    assert (replaced.rows_written, emptied.rows_written, store.lineage("gold/s")["step"]) == (1, 0, 3)
    assert sorted((r["k"], r["n"]) for r in store.read_spark(spark, "gold/s").collect()
                  if r["k"] is not None) == [("=/%:", 9)]
    assert store.count_rows("gold/s") == 2 and store.count_rows("gold/s", version=0) == 4
    with pytest.raises(SchemaMismatchError, match="other columns than the table"):  # never a silent new schema
        store.write("gold/s", spark.createDataFrame([("=/%:", 9)], "k string, n int"), lineage={}, partition_by=["k"],
                    replace={"k": ["=/%:"]})
    anew = store.write("gold/s", spark.createDataFrame([(7, "new")], "n long, note string"), lineage={})
    assert anew.schema.names == ["n", "note"] and store.read_arrow("gold/s").to_pylist() == [{"n": 7, "note": "new"}]
    assert not list((tmp_path / "a b%c" / "_staging").glob("*"))


def test_partition_predicate_quotes_values():
    assert partition_predicate({"date": ["2026-01-01", "o'clock"]}) == "date IN ('2026-01-01', 'o''clock')"


def test_table_names_are_layer_slash_table(tmp_path):
    with pytest.raises(ValueError):
        DeltaStore(tmp_path).path("no_layer")


def test_without_delta_jars_the_session_uses_delta_rs(spark):
    assert delta_jars_available(spark) is False


@pytest.mark.skipif(not os.environ.get("SERM_DELTA_JARS"),
                    reason="native delta-spark path needs the Delta jars on Spark's classpath; set SERM_DELTA_JARS "
                           "to a comma-separated list of delta-spark and delta-storage jars (Maven is not reachable here)")
def test_native_delta_spark_write_carries_the_same_lineage(tmp_path):
    from serm_dagster.resources import build_spark_session

    spark = build_spark_session("local[1]", app_name="serm-native", conf={
        "spark.jars": os.environ["SERM_DELTA_JARS"],
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    })
    assert delta_jars_available(spark)
    store = DeltaStore(tmp_path)
    frame = spark.createDataFrame([(dt.date(2026, 1, 1), 1)], "date date, value long")
    result = store.write("bronze/native", frame, lineage={"dagster_run_id": "n1"}, partition_by=["date"])
    assert result.native and store.lineage("bronze/native")["dagster_run_id"] == "n1"
    assert store.read_arrow("bronze/native").num_rows == 1

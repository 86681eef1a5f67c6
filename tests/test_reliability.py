"""Reliability: a write killed half way leaves the table as it was; two partitions written at once both land."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pyarrow as pa
import pytest

from serm_dagster.storage import DeltaStore

def test_a_write_killed_half_way_leaves_the_previous_version(tmp_path):
    store = DeltaStore(tmp_path / "lakehouse")
    first = pa.table({"day": pa.array([0, 1], pa.int64()), "value": pa.array([10, 11], pa.int64())})
    store.write("gold/example", first, lineage={"step": "first"})
    before = store.version("gold/example")

    # a writer streaming batches into the same table, killed with SIGKILL in the middle of the write
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(f"""
        import time
        import pyarrow as pa
        from deltalake import write_deltalake

        schema = pa.schema([("day", pa.int64()), ("value", pa.int64())])

        def batches():
            for i in range(1000):
                if i == 5:
                    print("writing", flush=True)
                time.sleep(0.05)
                yield pa.record_batch([pa.array([i] * 50_000, pa.int64()), pa.array(range(50_000), pa.int64())],
                                      schema=schema)

        write_deltalake({str(store.path("gold/example"))!r}, pa.RecordBatchReader.from_batches(schema, batches()),
                        mode="overwrite")
    """))
    writer = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert writer.stdout.readline().strip() == "writing"
    time.sleep(0.5)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL

    data_files = list(store.path("gold/example").glob("*.parquet"))
    assert store.version("gold/example") == before  # nothing committed
    assert store.read_arrow("gold/example").equals(first)
    assert len(data_files) >= 1  # the killed writer's parts are orphans, never referenced by the log

    # the rerun completes and the table moves on
    second = pa.table({"day": pa.array([2], pa.int64()), "value": pa.array([12], pa.int64())})
    store.write("gold/example", second, lineage={"step": "rerun"})
    assert store.version("gold/example") == before + 1 and store.read_arrow("gold/example").equals(second)
    assert store.lineage("gold/example")["step"] == "rerun"


@pytest.mark.parametrize("written_by", ["delta-rs", "spark"])
def test_two_partitions_written_at_the_same_time_both_land(tmp_path, request, written_by):
    """Arrow tables go through delta-rs's writer; Spark's files are committed by the store (retrying on a newer
    snapshot when the other day's commit came first)."""
    spark = request.getfixturevalue("spark") if written_by == "spark" else None
    store = DeltaStore(tmp_path / "lakehouse")
    days = [date(2026, 1, d) for d in range(1, 5)]
    seed = pa.table({"date": pa.array(days, pa.date32()), "rows": pa.array([0] * 4, pa.int64())})
    store.write("bronze/example", seed, lineage={}, partition_by=["date"])

    def replace_day(day: date, value: int):
        table = pa.table({"date": pa.array([day] * 3, pa.date32()), "rows": pa.array([value] * 3, pa.int64())})
        table = spark.createDataFrame(table.to_pandas()) if spark else table
        return store.write("bronze/example", table, lineage={"day": day.isoformat()}, partition_by=["date"],
                           replace={"date": [day.isoformat()]})

    versions = []
    for attempt in range(3):  # several rounds, so the two commits really race
        with ThreadPoolExecutor(max_workers=2) as pool:
            versions += [r.version for r in pool.map(replace_day, days[:2], [attempt + 1, attempt + 1])]
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]  # every write committed, each knows its own version
    assert {store.lineage("bronze/example", v)["day"] for v in versions} == {"2026-01-01", "2026-01-02"}
    frame = store.read_arrow("bronze/example").to_pandas()
    counts = frame.groupby("date")["rows"].agg(["count", "max"])
    assert counts.loc[days[0], "count"] == 3 and counts.loc[days[1], "count"] == 3
    assert counts.loc[days[0], "max"] == 3 and counts.loc[days[1], "max"] == 3
    assert counts.loc[days[2], "count"] == 1 and counts.loc[days[3], "count"] == 1  # untouched


MATERIALIZE_DAY = textwrap.dedent("""
    import sys
    from dagster import DagsterInstance, materialize
    from assets.ingest import ingest_assets
    from serm_dagster.definitions import default_resources
    from serm_dagster.resources import LakehouseResource

    home, day = sys.argv[1], sys.argv[2]
    result = materialize(ingest_assets, selection=["silver/impressions"], partition_key=day,
                         resources={**default_resources(), "lakehouse": LakehouseResource(home=home)},
                         instance=DagsterInstance.get())
    print("ok" if result.success else "failed", flush=True)
""")


def test_concurrent_materializations_of_two_partitions(tmp_path, monkeypatch):
    """Two Dagster runs, in two processes, each rebuilding one day of silver/impressions at the same time."""
    from serm_dagster.runner import ingest_landing
    from serm_dagster.settings import SermPaths
    from serm_dagster.simulator import SimulationConfig, simulate

    home = tmp_path / "serm"
    paths = SermPaths.from_env(home).ensure()
    simulate(home, SimulationConfig(days=2, queries_per_day=50, seed=4, seed_days=1, evolving_window_days=1,
                                    seed_judgments=50, test_judgments=20))
    monkeypatch.setenv("SERM_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(paths.dagster_home))
    ingest_landing(paths, echo=lambda *_: None)
    env = dict(os.environ)
    store = DeltaStore(paths.lakehouse)
    before = store.read_arrow("silver/impressions").to_pandas()
    version = store.version("silver/impressions")
    script = tmp_path / "materialize_day.py"
    script.write_text(MATERIALIZE_DAY)
    runs = [subprocess.Popen([sys.executable, str(script), str(home), day], stdout=subprocess.PIPE, text=True,
                             env=env, cwd=os.getcwd()) for day in ("2026-01-01", "2026-01-02")]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs) and all(o.strip().endswith("ok") for o in outputs), outputs
    assert store.version("silver/impressions") == version + 2  # both commits, neither lost
    after = store.read_arrow("silver/impressions").to_pandas()
    key = ["date", "query", "language", "doc_id"]
    assert len(after) == len(before) and not after.duplicated(key).any()
    assert after.groupby("date").size().to_dict() == before.groupby("date").size().to_dict()

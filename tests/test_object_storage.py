"""The lakehouse on object storage: Delta tables through delta-rs on a real S3 API server on loopback (moto in
server mode), configured as a user would, with SERM_LAKEHOUSE and the standard AWS_* environment variables."""

import datetime as dt
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from serm_dagster.cli import app
from serm_dagster.resources import LakehouseResource
from serm_dagster.settings import SermPaths
from serm_dagster.storage import DeltaStore
from tests.test_ingest_assets import landed  # noqa: F401 (the fixture: two days of logs, catalogue, judgments)
from conftest import free_port


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server in its own process: some delta-rs calls (history, its file system handler) hold the GIL
    while they wait for the answer, which a server thread in this process could then never send."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                assert server.poll() is None, "the moto server exited"
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture()
def bucket(s3_endpoint, monkeypatch):
    """A fresh bucket, and the environment delta-rs (and boto3) read: endpoint, plain HTTP, region, dummy keys."""
    for key, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
                       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_CONDITIONAL_PUT": "etag"}.items():
        monkeypatch.setenv(key, value)
    name = f"serm-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def _keys(bucket: str, prefix: str = "") -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def _day(day: str, values: list[int]) -> pa.Table:
    return pa.table({"date": pa.array([dt.date.fromisoformat(day)] * len(values), pa.date32()),
                     "value": pa.array(values, pa.int64())})


def test_a_store_on_s3_writes_replaces_reads_and_keeps_lineage(bucket):
    store = DeltaStore(f"s3://{bucket}/serm/lakehouse/")
    assert not store.exists("bronze/t") and store.version("bronze/t") is None and store.count_rows("bronze/t") == 0
    first = store.write("bronze/t", pa.concat_tables([_day("2026-01-01", [1, 2]), _day("2026-01-02", [3])]),
                        lineage={"dagster_run_id": "r1"}, partition_by=["date"])
    second = store.write("bronze/t", _day("2026-01-02", [7, 8]), lineage={"dagster_run_id": "r2"},
                         partition_by=["date"], replace={"date": ["2026-01-02"]})
    assert (first.version, second.version, second.rows_written) == (0, 1, 2)
    assert second.path == f"s3://{bucket}/serm/lakehouse/bronze/t"
    assert sorted(store.read_arrow("bronze/t").column("value").to_pylist()) == [1, 2, 7, 8]
    assert store.read_arrow("bronze/t", version=0).num_rows == 3 and store.count_rows("bronze/t") == 4
    assert store.version("bronze/t") == 1 and store.exists("bronze/t")
    assert store.lineage("bronze/t")["dagster_run_id"] == "r2" and store.lineage("bronze/t", 0)["dagster_run_id"] == "r1"
    # the table is objects in the bucket, not a local folder
    keys = _keys(bucket, "serm/lakehouse/bronze/t/")
    assert "serm/lakehouse/bronze/t/_delta_log/00000000000000000001.json" in keys
    assert any(k.endswith(".parquet") and "date=2026-01-02" in k for k in keys)
    assert not Path("s3:").exists()


def test_a_spark_frame_goes_to_s3_through_local_staging_and_back(bucket, spark):
    store = DeltaStore(f"s3://{bucket}/lake")
    frame = spark.createDataFrame([(dt.date(2026, 1, 1), "q", 1.5), (dt.date(2026, 1, 2), "r", 2.5)],
                                  "date date, query string, score double")
    result = store.write("gold/t", frame, lineage={"x": 1}, partition_by=["date"])
    assert (result.version, result.rows_written, result.native) == (0, 2, False)
    back = store.read_spark(spark, "gold/t", where_in=("date", [dt.date(2026, 1, 2)])).collect()
    assert [(r["query"], r["score"]) for r in back] == [("r", 2.5)]
    assert not any("_staging" in k for k in _keys(bucket))  # staged on the local disk, removed


def test_ingestion_runs_into_the_s3_lakehouse_and_serm_tables_lists_it(landed, bucket, monkeypatch, spark):  # noqa: F811
    lakehouse = f"s3://{bucket}/serm/lakehouse"
    monkeypatch.setenv("SERM_LAKEHOUSE", lakehouse)
    assert LakehouseResource(home=str(landed)).store.root == lakehouse  # what every asset writes through
    runner = CliRunner()
    ingested = runner.invoke(app, ["ingest"])  # the named ingest jobs, in process, as `serm ingest` runs them
    assert ingested.exit_code == 0, ingested.output
    assert "ingested days 2026-01-01..2026-01-02" in ingested.output
    store = DeltaStore(lakehouse)
    assert store.count_rows("bronze/query_logs") == 13 and store.count_rows("quarantine/query_logs") == 3
    assert store.count_rows("bronze/catalog") == 2 and store.count_rows("bronze/judgments") == 2
    assert store.lineage("silver/impressions")["partition_keys"] == ["2026-01-01", "2026-01-02"]
    assert any(k.startswith("serm/lakehouse/silver/impressions/_delta_log/") for k in _keys(bucket))
    assert not any((landed / "lakehouse").iterdir())  # the local state stays local, the tables do not
    assert (landed / "state" / "landing_index.json").exists()
    listed = runner.invoke(app, ["tables"])
    assert listed.exit_code == 0, listed.output
    rows = {line.split()[0]: line.split()[1:3] for line in listed.output.splitlines()[1:]}
    assert rows["bronze/query_logs"] == ["0", "13"] and "silver/impressions" in rows


def test_serm_home_as_a_uri_says_to_set_the_lakehouse_instead(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SERM_HOME", "s3://bucket/serm")
    with pytest.raises(ValueError, match="SERM_LAKEHOUSE=s3://bucket/serm/lakehouse"):
        SermPaths.from_env()
    assert not (tmp_path / "s3:").exists()


def test_the_lakehouse_uri_belongs_to_serm_home_only(monkeypatch, tmp_path):
    monkeypatch.setenv("SERM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SERM_LAKEHOUSE", "gs://bucket/serm/lakehouse/")
    main = SermPaths.from_env().ensure()
    assert main.lakehouse == "gs://bucket/serm/lakehouse" and not (main.home / "lakehouse").exists()
    arm = SermPaths.from_env(main.home / "compare" / "seed13" / "self-training")  # a comparison arm: its own
    assert arm.lakehouse == arm.home / "lakehouse"
    monkeypatch.setenv("SERM_LAKEHOUSE", str(tmp_path / "disk2" / "lake"))  # a local folder elsewhere works too
    assert SermPaths.from_env().lakehouse == tmp_path / "disk2" / "lake"

"""The Spark resource also speaks Spark Connect: a real local Connect server on loopback."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyspark
import pytest
from conftest import free_port

SPARK_HOME = Path(pyspark.__file__).parent


@pytest.fixture(scope="module")
def connect_url(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("connect") / "server.log"
    server = subprocess.Popen(
        [str(SPARK_HOME / "bin" / "spark-submit"), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
         "--master", "local[1]", "--conf", f"spark.connect.grpc.binding.port={port}",
         "--conf", "spark.connect.grpc.binding.address=127.0.0.1", "--conf", "spark.ui.enabled=false", "spark-internal"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env={"SPARK_HOME": str(SPARK_HOME), "PATH": "/usr/bin:/bin"},
    )
    deadline = time.time() + 120
    while time.time() < deadline and "Spark Connect server started" not in log.read_text():
        if server.poll() is not None:
            break
        time.sleep(1)
    if "Spark Connect server started" not in log.read_text():
        server.kill()
        pytest.skip(f"the local Spark Connect server did not start: {log.read_text()[-500:]}")
    yield f"sc://127.0.0.1:{port}"
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:  # a loaded machine can take longer to stop the JVM: stop it outright
        server.kill()
        server.wait(30)


def test_spark_connect_session_computes_and_writes_delta(connect_url, tmp_path):
    # a separate interpreter: one process holds either a classic or a Connect session
    script = textwrap.dedent(f"""
        import datetime as dt
        from serm_dagster.resources import build_spark_session
        from serm_dagster.storage import DeltaStore
        from spark_jobs.impressions import build_impressions
        spark = build_spark_session({connect_url!r})
        logs = spark.createDataFrame(
            [(dt.date(2026, 1, 1), "Red Shoes", "en", "D1", 1, True, 300.0, "s1"),
             (dt.date(2026, 1, 1), "red shoes", "en", "D1", 2, False, None, "s2")],
            "date date, query string, language string, doc_id string, position int, clicked boolean, "
            "dwell_ms double, session_id string")
        store = DeltaStore({str(tmp_path)!r})
        result = store.write("silver/impressions", build_impressions(logs), lineage={{"via": "connect"}},
                             partition_by=["date"])
        row = store.read_spark(spark, "silver/impressions").collect()[0]
        print("RESULT", result.native, row["impressions"], row["clicks"], row["mean_position"])
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "RESULT False 2 1 1.5" in run.stdout

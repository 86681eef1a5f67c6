"""The command line a newcomer uses: simulate, ingest, tables, on a small stream."""

from typer.testing import CliRunner

from serm_dagster.cli import app
from serm_dagster.storage import DeltaStore


def test_simulate_ingest_tables(home, spark):
    runner = CliRunner()
    simulated = runner.invoke(app, ["simulate", "--days", "3", "--queries-per-day", "60", "--seed", "3"])
    assert simulated.exit_code == 0, simulated.output
    assert "log rows 1800" in simulated.output
    ingested = runner.invoke(app, ["ingest"])
    assert ingested.exit_code == 0, ingested.output
    assert "ingested days 2026-01-01..2026-01-03" in ingested.output
    store = DeltaStore(home / "lakehouse")
    assert store.count_rows("bronze/query_logs") == 1800
    assert store.count_rows("quarantine/query_logs") == 0
    assert store.count_rows("bronze/catalog") > 1000
    listed = runner.invoke(app, ["tables"])
    assert listed.exit_code == 0 and "silver/impressions" in listed.output
    # the runs were recorded in the Dagster instance under SERM_HOME, so `dagster dev` shows them
    from dagster import DagsterInstance

    assert len(DagsterInstance.get().get_runs()) == 2

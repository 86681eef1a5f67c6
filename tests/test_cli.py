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


def test_run_stops_before_any_work_without_judgments(home):
    """`serm run` on logs without judgments: prepare's checks stop it with what to add, nothing ingested."""
    import shutil

    from serm_dagster.simulator import SimulationConfig, simulate

    simulate(home, SimulationConfig(days=4, queries_per_day=20, seed=3, seed_days=2, evolving_window_days=2,
                                    seed_judgments=30, test_judgments=20))
    shutil.rmtree(home / "landing" / "judgments")
    result = CliRunner().invoke(app, ["run", "--window-days", "1"])
    assert result.exit_code == 2, result.output
    assert "no seed judgments" in result.output and "no test judgments" in result.output
    assert not (home / "lakehouse" / "bronze").exists()
    too_short = CliRunner().invoke(app, ["run", "--window-days", "4"])
    assert too_short.exit_code == 2 and "need more than 4 days of logs" in too_short.output

"""Cold start: a landing folder without the judgments (or the days) an evolution needs stops it before any
work is done, with a message that says what is missing and what to add."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from serm_dagster.cli import app
from serm_dagster.evolution import EvolutionPlan, judgment_gaps
from serm_dagster.registry import CHAMPION, Registry
from serm_dagster.settings import SermPaths
from serm_dagster.simulator import SimulationConfig, simulate
from serm_dagster.storage import DeltaStore

PLAN = EvolutionPlan(["2026-01-01", "2026-01-02"], [["2026-01-03", "2026-01-04"], ["2026-01-05", "2026-01-06"]])


def judgments(*rows: tuple[str, str | None]) -> pd.DataFrame:
    """(split, ts) rows of validated judgments."""
    return pd.DataFrame({"query": "q", "doc_id": "d", "language": "en", "label": 2,
                         "split": [split for split, _ in rows],
                         "ts": pd.to_datetime([ts for _, ts in rows], utc=True)})


def test_each_missing_kind_of_judgment_is_named_with_what_to_add():
    assert judgment_gaps(judgments(("seed", None), ("test", "2026-01-04")), PLAN) == []
    none = judgment_gaps(judgments(), PLAN)
    assert len(none) == 2 and "no seed judgments" in none[0] and "split=seed" in none[0]
    assert "no test judgments" in none[1] and "split=test" in none[1]
    undated = judgment_gaps(judgments(("seed", None), ("test", None)), PLAN)
    assert undated == [undated[0]] and "no ts" in undated[0] and "none could ever be promoted" in undated[0]
    late = judgment_gaps(judgments(("seed", None), ("test", "2026-01-09")), PLAN)
    assert "after the last window (2026-01-06)" in late[0]


@pytest.fixture()
def landing(home):
    simulate(home, SimulationConfig(days=6, queries_per_day=40, seed=3, seed_days=2, evolving_window_days=4,
                                    seed_judgments=60, test_judgments=40))
    return SermPaths.from_env(home)


def nothing_done(paths: SermPaths) -> bool:
    return not DeltaStore(paths.lakehouse).exists("bronze/judgments") and \
        Registry.under(paths.home).alias_version(CHAMPION) is None


def test_a_landing_folder_without_judgments_stops_the_loop_before_any_work(landing):
    for file in landing.landing_judgments.iterdir():
        file.unlink()
    result = CliRunner().invoke(app, ["evolve", "--iterations", "2", "--window-days", "2"])
    assert result.exit_code == 2, result.output
    assert "no seed judgments" in result.output and "no test judgments" in result.output
    assert str(landing.landing_judgments) in result.output and "Traceback" not in result.output
    assert nothing_done(landing)


def test_undated_test_judgments_and_too_few_days_stop_it_too(landing):
    test_file = landing.landing_judgments / "test.parquet"
    pd.read_parquet(test_file).assign(ts=None).to_parquet(test_file)
    undated = CliRunner().invoke(app, ["evolve", "--iterations", "2", "--window-days", "2"])
    assert undated.exit_code == 2 and "the test judgments have no ts" in undated.output
    short = CliRunner().invoke(app, ["evolve", "--iterations", "3", "--window-days", "2"])
    assert short.exit_code == 2 and "need more than 6 days of logs" in short.output and "--iterations" in short.output
    assert nothing_done(landing)

"""The self-evolution loop end to end on a small stream, with a tiny backbone so training is quick.

Real Spark, Delta, MLflow (SQLite), DuckDB and Dagster materializations; the embedded judges use the
packaged MiniLM for their similarity view.
"""

import pytest
from typer.testing import CliRunner

from models.backbone import tiny_backbone
from serm_dagster.cli import app
from serm_dagster.registry import Registry
from serm_dagster.evolution import compare, comparison_rows, evolve, plan_windows, summary_table
from serm_dagster.resources import MiningSettings, ModelSettings
from serm_dagster.settings import SermPaths
from serm_dagster.simulator import SimulationConfig, simulate
from serm_dagster.storage import DeltaStore


def test_plan_cuts_the_newest_days_into_windows():
    days = [f"2026-01-{d:02d}" for d in range(1, 11)]
    plan = plan_windows(days, iterations=3, window_days=2)
    assert plan.before == days[:4]
    assert plan.windows == [days[4:6], days[6:8], days[8:10]]
    with pytest.raises(ValueError, match="need more than 10 days"):
        plan_windows(days, iterations=5, window_days=2)


@pytest.fixture(scope="module")
def stream_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("evolve")
    simulate(home, SimulationConfig(days=7, queries_per_day=80, seed=3, seed_days=3, evolving_window_days=2,
                                    seed_judgments=300, test_judgments=120))
    return home


def settings(tiny: str) -> dict:
    return {"model_settings": ModelSettings(backbone=tiny, epochs=1, max_length=32, batch_size=16),
            "mining_settings": MiningSettings(window_days=2, budget=80, sample_rest=100, mc_passes=3,
                                              embedding_sample_size=60)}


def test_evolve_records_each_iteration_and_resumes_without_redoing_work(stream_home, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(SermPaths.from_env(stream_home).ensure().dagster_home))
    paths = SermPaths.from_env(stream_home).ensure()
    tiny = tiny_backbone(tmp_path / "tiny")
    history = evolve(paths, iterations=2, strategy="agents", window_days=2, echo=lambda *_: None, **settings(tiny))
    assert history["iteration"].tolist() == [1, 2]
    assert history["window_end"].astype(str).tolist() == ["2026-01-05", "2026-01-07"]
    assert (history["mined"] > 0).all() and (history["accepted"] <= history["mined"]).all()
    assert history["model_before"].iat[0] == "1" and history["strategy"].eq("agents").all()
    assert {"drift", "mine", "annotate", "train", "evaluate"} <= set(eval(history["stage_seconds"].iat[1]))

    store = DeltaStore(paths.lakehouse)
    labels_before = store.read_arrow("gold/consensus_labels").to_pandas()
    votes_version = store.version("gold/agent_votes")
    # resuming: both iterations are recorded, nothing runs again
    again = evolve(paths, iterations=2, strategy="agents", window_days=2, echo=lambda *_: None, **settings(tiny))
    assert again["recorded_at"].tolist() == history["recorded_at"].tolist()
    assert store.version("gold/agent_votes") == votes_version

    # re-running the annotation of the newest iteration: no duplicate labels and no new agent calls
    from serm_dagster.cli import materialize_selection

    monkeypatch.setenv("SERM_HOME", str(stream_home))
    result = materialize_selection(paths, ["gold/agent_votes", "gold/agent_labels", "gold/consensus_labels"])
    meta = {m.asset_key.to_user_string(): m.materialization.metadata for m in result.get_asset_materialization_events()}
    assert meta["gold/consensus_labels"]["new_calls"].value == 0
    labels_after = store.read_arrow("gold/consensus_labels").to_pandas()
    assert len(labels_after) == len(labels_before)
    assert not labels_after.duplicated(["iteration", "query", "language", "doc_id"]).any()


def test_compare_runs_the_arms_and_reports(stream_home, tmp_path, monkeypatch):
    monkeypatch.setenv("SERM_HOME", str(stream_home))
    monkeypatch.setenv("DAGSTER_HOME", str(SermPaths.from_env(stream_home).ensure().dagster_home))
    paths = SermPaths.from_env(stream_home).ensure()
    tiny = tiny_backbone(tmp_path / "tiny")
    rows = compare(paths, iterations=2, seeds=(13,), window_days=2, echo=lambda *_: None, workers=2, **settings(tiny))
    assert set(rows["arm"]) == {"seed", "self-training", "serm"}
    assert sorted(rows["iteration"].unique()) == [0, 1, 2]
    seed_arm = rows[(rows["arm"] == "seed") & (rows["slice_type"] == "overall")]
    assert seed_arm.groupby(["test_set", "metric"])["value"].nunique().eq(1).all()  # frozen
    self_training = DeltaStore(stream_home / "compare" / "seed13" / "self-training" / "lakehouse")
    assert set(self_training.read_arrow("gold/agent_votes").to_pandas()["agent"]) == {"self_training"}
    # both arms start from one seed model: the self-training arm adopts the SERM arm's, so they score alike
    starts = rows[(rows["iteration"] == 0) & (rows["slice_type"] == "overall")]
    by_arm = starts.pivot_table(index=["test_set", "metric"], columns="arm", values="value")
    assert (by_arm["serm"] - by_arm["self-training"]).abs().max() < 1e-9
    adopted = Registry.under(stream_home / "compare" / "seed13" / "self-training")
    assert adopted.client().get_run(adopted.version_tags("1")["mlflow_run_id"]).data.params["adopted"] == "True"
    table = summary_table(comparison_rows(paths, (13,)))
    assert {"evolving ndcg@1", "static ndcg@1", "evolving accuracy"} <= set(table.columns)

    runner = CliRunner()
    materialized = runner.invoke(app, ["report"])
    assert materialized.exit_code == 1 and "serm evolve --compare" in materialized.output
    from serm_dagster.cli import materialize_selection

    materialize_selection(paths, ["gold/evolution_report"])
    shown = runner.invoke(app, ["report"])
    assert shown.exit_code == 0 and "self-training" in shown.output and "evolution_ndcg1.png" in shown.output
    assert (stream_home / "reports" / "evolution_ndcg1.png").stat().st_size > 1000

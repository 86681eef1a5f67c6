"""The self-evolution loop end to end on a small stream, with a tiny backbone so training is quick.

Real Spark, Delta, MLflow (SQLite), DuckDB and Dagster materializations; the embedded judges use the
packaged MiniLM for their similarity view.
"""

import pandas as pd
import pytest
from typer.testing import CliRunner

from assets.comparison import comparison_rows, paired_differences, pooled_reports, summary_table
from models.backbone import tiny_backbone
from serm_dagster.cli import app
from serm_dagster.registry import Registry
from serm_dagster.evolution import compare, evolve, plan_windows
from serm_dagster.resources import MiningSettings, ModelSettings, SparkResource
from serm_dagster.runner import ingest_landing, materialize_selection
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
    # evolving test judgments dated over both windows (days 4-7), so iteration 1's gate has its own
    simulate(home, SimulationConfig(days=7, queries_per_day=80, seed=3, seed_days=3, evolving_window_days=4,
                                    seed_judgments=300, test_judgments=120))
    return home


def settings(tiny: str) -> dict:
    return {"model_settings": ModelSettings(backbone=tiny, epochs=1, max_length=32, batch_size=16),
            "mining_settings": MiningSettings(window_days=2, budget=80, sample_rest=100, mc_passes=3,
                                              embedding_sample_size=60)}


def evolving_pairs_judged(store, first: str, last: str) -> int:
    """Test judgments dated first..last (ISO days)."""
    judgments = store.read_arrow("bronze/judgments").to_pandas()
    days = pd.to_datetime(judgments["ts"], utc=True).dt.strftime("%Y-%m-%d")
    return int(((judgments["split"] == "test") & (days >= first) & (days <= last)).sum())


def report_rows(values: dict[tuple[str, str], float], iteration: int = 2) -> pd.DataFrame:
    """Evolving test NDCG@1 rows of the last iteration, per (arm, query), for one training seed."""
    return pd.DataFrame([{"seed": 13, "arm": arm, "iteration": iteration, "test_set": "evolving", "part": "test",
                          "slice_type": "query", "slice": query, "metric": "ndcg@1", "value": value}
                         for (arm, query), value in values.items()])


def test_replays_pool_their_queries_each_under_its_own_name():
    # the same query text in two replays is two units: the pooled mean is over all four (replay, query) pairs
    first = report_rows({("serm", "q1"): 1.0, ("self-training", "q1"): 0.0, ("serm", "q2"): 0.5,
                         ("self-training", "q2"): 0.5})
    second = report_rows({("serm", "q1"): 0.0, ("self-training", "q1"): 0.5, ("serm", "q3"): 1.0,
                          ("self-training", "q3"): 0.0})
    pooled = paired_differences(pooled_reports({"r7": first, "r8": second})).set_index("contrast")
    assert pooled.loc["serm - self-training", "n_queries"] == 4
    assert pooled.loc["serm - self-training", "mean"] == pytest.approx((1.0 + 0.0 - 0.5 + 1.0) / 4)
    with pytest.raises(ValueError, match="different numbers of iterations"):
        pooled_reports({"r7": first, "r9": report_rows({("serm", "q1"): 1.0}, iteration=3)})


def test_evolve_after_ingesting_every_day_replays_window_by_window(stream_home, tmp_path, monkeypatch):
    """`serm ingest` (every day) then `serm evolve`: each iteration still mines its own window, and its gate
    reads no test judgment dated after that window's end. Then resuming redoes nothing."""
    monkeypatch.setenv("DAGSTER_HOME", str(SermPaths.from_env(stream_home).ensure().dagster_home))
    paths = SermPaths.from_env(stream_home).ensure()
    store = DeltaStore(paths.lakehouse)
    ingest_landing(paths, echo=lambda *_: None)
    assert str(store.read_arrow("bronze/query_logs", columns=["date"]).column("date").to_pandas().max()) == "2026-01-07"
    tiny = tiny_backbone(tmp_path / "tiny")
    lines = []
    history = evolve(paths, iterations=2, strategy="agents", window_days=2, echo=lines.append, **settings(tiny))
    assert history["iteration"].tolist() == [1, 2]
    assert history["window_end"].astype(str).tolist() == ["2026-01-05", "2026-01-07"]
    mined = store.read_arrow("gold/mined_samples").to_pandas()
    windows = {i: (str(f["window_start"].min()), str(f["window_end"].max())) for i, f in mined.groupby("iteration")}
    assert windows == {1: ("2026-01-04", "2026-01-05"), 2: ("2026-01-06", "2026-01-07")}
    assert sorted(store.read_arrow("gold/drift_reports").to_pandas()["window_end"].astype(str).unique()) == \
        ["2026-01-05", "2026-01-07"]
    assert any(line.startswith("iteration 1 [agents] 2026-01-04..2026-01-05:") for line in lines)
    assert any(line.startswith("iteration 2 [agents] 2026-01-06..2026-01-07:") for line in lines)
    # iteration 1's gate: the challenger's evaluation as of 2026-01-05 holds the evolving pairs judged on days
    # 4-5 (3 evolving days, day 3 is the static seed period), none of the later ones already ingested
    evaluations = store.read_arrow("gold/evaluations").to_pandas()
    gate = evaluations[(evaluations["model_version"] == history["challenger"].iat[0])
                       & (evaluations["as_of"].astype(str) == "2026-01-05") & (evaluations["slice_type"] == "overall")
                       & (evaluations["metric"] == "ndcg@1") & (evaluations["test_set"] == "evolving")]
    assert set(gate["part"]) == {"validation", "test"}
    assert gate["n_pairs"].sum() == evolving_pairs_judged(store, "2026-01-04", "2026-01-05") > 0
    assert evolving_pairs_judged(store, "2026-01-06", "2026-01-07") > 0  # judged later, and ingested already
    # and it decided on the validation part of that evaluation
    validation = gate.set_index("part")["value"]["validation"]
    reason = Registry.under(stream_home).version_tags(history["challenger"].iat[0])["promotion_reason"]
    assert f"{validation:.2f}" in reason or reason.startswith("static NDCG@1")
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
    # every arm's served model after each iteration on the same held-out pairs: the test parts as of the last
    # window's end; earlier champions (evaluated as of their own windows) were scored on them once, and stored
    assert set(rows["part"]) == {"test"} and set(rows["as_of"].astype(str)) == {"2026-01-07"}
    assert rows["test_pairs_digest"].nunique() == 1
    assert {"query", "overall", "family"} <= set(rows["slice_type"])
    evaluations = {arm: DeltaStore(stream_home / "compare" / "seed13" / arm / "lakehouse") if arm != "serm" else
                   DeltaStore(stream_home / "lakehouse") for arm in ("serm", "self-training")}
    versions = {arm: store.version("gold/evaluations") for arm, store in evaluations.items()}
    digest = rows["test_pairs_digest"].iat[0]
    for arm, store in evaluations.items():
        stored = store.read_arrow("gold/evaluations").to_pandas()
        served = set(rows.loc[rows["arm"] == arm, "model_version"])
        assert served <= set(stored.loc[stored["test_pairs_digest"] == digest, "model_version"])
    session = SparkResource().get_session()
    again = comparison_rows(paths, (13,), session, settings(tiny)["model_settings"])
    assert {arm: store.version("gold/evaluations") for arm, store in evaluations.items()} == versions  # reused
    table = summary_table(again)
    assert {"evolving ndcg@1", "static ndcg@1", "evolving accuracy"} <= set(table.columns)
    differences = paired_differences(again).set_index("contrast")
    assert set(differences.index) == {"serm - self-training", "serm - seed"}
    assert (differences["low"] <= differences["mean"]).all() and (differences["mean"] <= differences["high"]).all()
    last = again[(again["iteration"] == 2) & (again["test_set"] == "evolving") & (again["metric"] == "ndcg@1")]
    overall = last[last["slice_type"] == "overall"].groupby("arm")["value"].first()
    # the mean per-query difference is the difference of the overall NDCG@1 (both average the same queries)
    assert differences.at["serm - seed", "mean"] == pytest.approx(overall["serm"] - overall["seed"])
    assert differences.at["serm - seed", "n_queries"] == last[(last["slice_type"] == "overall")]["n_queries"].iat[0]

    runner = CliRunner()
    materialized = runner.invoke(app, ["report"])
    assert materialized.exit_code == 1 and "serm evolve --compare" in materialized.output
    report = materialize_selection(paths, ["gold/evolution_report"])
    assert {arm: store.version("gold/evaluations") for arm, store in evaluations.items()} == versions
    meta = next(m for m in report.get_asset_materialization_events()).materialization.metadata
    assert "serm - self-training" in meta["paired_differences"].value and meta["as_of"].value == "2026-01-07"
    shown = runner.invoke(app, ["report"])
    assert shown.exit_code == 0 and "self-training" in shown.output and "evolution_ndcg1.png" in shown.output
    assert "serm - self-training: " in shown.output and "95% CI" in shown.output and "2026-01-07" in shown.output
    assert (stream_home / "reports" / "evolution_ndcg1.png").stat().st_size > 1000

"""Training, registry, evaluation and promotion, materialized in process with real MLflow (SQLite)."""

import pandas as pd
import pyarrow as pa
import pytest
from dagster import DagsterInstance, materialize

from assets.analytics import analytics_assets
from assets.annotation import annotation_assets
from assets.evaluation import evaluation_assets, evaluation_checks
from assets.ingest import ingest_assets
from assets.mining import mining_assets
from assets.training import training_assets, training_checks
from models.agents.embedded import DEFAULT_AGENTS
from serm_dagster.checks import table_checks
from serm_dagster.runner import ingest_landing
from serm_dagster.definitions import asset_keys
from serm_dagster.registry import CHALLENGER, CHAMPION, Registry
from serm_dagster.resources import (
    AnnotatorSettings,
    LakehouseResource,
    MiningSettings,
    MlflowResource,
    ModelSettings,
    SparkResource,
)
from serm_dagster.settings import SermPaths
from serm_dagster.simulator import SimulationConfig, simulate
from serm_dagster.storage import DeltaStore

ALL = [*ingest_assets, *mining_assets, *annotation_assets, *analytics_assets, *training_assets, *evaluation_assets]
CHECKS = [*table_checks(asset_keys(ALL)), *training_checks, *evaluation_checks]


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory):
    """A small simulated stream, ingested, with a seed model trained on the real MiniLM backbone."""
    home = tmp_path_factory.mktemp("serm")
    paths = SermPaths.from_env(home).ensure()
    simulate(home, SimulationConfig(days=6, queries_per_day=120, seed=5, seed_days=2, evolving_window_days=2,
                                    seed_judgments=1500, test_judgments=240))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(paths.dagster_home))
        ingest_landing(paths, echo=lambda *_: None)
    return home


def resources(home, **settings):
    return {"spark": SparkResource(), "lakehouse": LakehouseResource(home=str(home)), "mlflow_resource": MlflowResource(),
            "model_settings": ModelSettings(**{"epochs": 2, "batch_size": 16, "max_length": 48, "encoder_lr": 1e-4,
                                               **settings}),
            "mining_settings": MiningSettings(budget=150, sample_rest=600, mc_passes=4, embedding_sample_size=200),
            "annotator_settings": AnnotatorSettings()}


def run(home, selection, instance=None, **settings):
    return materialize([*ALL, *CHECKS], resources=resources(home, **settings), selection=selection,
                       instance=instance or DagsterInstance.ephemeral(), raise_on_error=False)


def test_seed_model_is_registered_evaluated_and_becomes_champion(trained_home):
    instance = DagsterInstance.ephemeral()
    result = run(trained_home, ["gold/training_sets", "models/seed_model", "gold/evaluations", "gold/test_scores",
                              "gold/promotions"],
                 instance)
    assert result.success
    # the run's log (the UI's) says how far the long steps are, terminal or not
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(m.startswith("training: ") and " steps (100%)" in m for m in messages)
    assert any(m.startswith("evaluating version 1: ") and " pairs (100%)" in m for m in messages)
    registry = Registry.under(trained_home)
    assert registry.alias_version(CHAMPION) == registry.alias_version("seed") == "1"
    tags = registry.version_tags("1")
    store = DeltaStore(trained_home / "lakehouse")
    training = store.read_arrow("gold/training_sets").to_pandas()
    assert tags["training_set"] == training["training_set"].iat[0] and set(training["source"]) == {"seed"}
    run_data = registry.client().get_run(tags["mlflow_run_id"]).data
    assert run_data.params["training_set"] == tags["training_set"] and int(run_data.params["training_pairs"]) > 300
    assert "evolving_ndcg_at_1" in run_data.metrics and "static_ndcg_at_1" in run_data.metrics
    evaluation = store.read_arrow("gold/evaluations").to_pandas()
    assert set(evaluation["test_set"]) == {"static", "evolving"}
    assert set(evaluation["slice_type"]) == {"overall", "family", "language", "query"}
    assert set(evaluation["part"]) == {"validation", "test"}
    # as of the newest ingested day (no window_end set); each query's pairs in one part of its set
    newest = store.read_arrow("bronze/query_logs", columns=["date"]).column("date").to_pandas().max()
    assert set(evaluation["as_of"]) == {newest}
    queries = evaluation[evaluation.slice_type == "query"].drop_duplicates(["test_set", "part", "slice"])
    assert not queries.duplicated(["test_set", "slice"]).any()
    assert set(evaluation["metric"]) == {"ndcg@1", "ndcg@4", "accuracy"}
    assert set(evaluation["model_version"]) == {"1"}
    overall = evaluation[(evaluation.slice_type == "overall") & (evaluation.metric == "ndcg@1")]
    assert (overall["value"] > 40).all()  # far above a random ranking of graded pairs
    event = next(m for m in result.get_asset_materialization_events()
                 if m.asset_key.to_user_string() == "gold/evaluations").materialization
    assert "ndcg@1" in event.metadata["evaluation"].value and "static" in event.metadata["evaluation"].value

    # loading models:/serm-relevance@champion back gives the same scores as the evaluation
    model = registry.load_pyfunc(CHAMPION)
    scored = model.predict(pd.DataFrame({"query": ["red shoes", "red shoes"], "doc_text": ["Red shoes", "A lamp"]}))
    assert list(scored.columns) == ["p0", "p1", "p2", "p3", "score"]
    from models.inference import Scorer

    direct = Scorer.from_folder(registry.model_dir("1")).score(["red shoes", "red shoes"], ["Red shoes", "A lamp"])
    assert scored["score"].to_numpy() == pytest.approx(direct, abs=1e-9)


def model_error_rate(home, pairs: pd.DataFrame) -> pd.Series:
    """Per pair: does the champion's score miss the hidden true label by a full grade or more?"""
    import numpy as np

    from models.inference import Scorer

    truth = pd.read_parquet(home / "simulator" / "truth" / "truth.parquet")
    truth["query"] = truth["query"].map(lambda q: " ".join(q.lower().split()))
    truth = truth.drop_duplicates(["query", "language", "doc_id"])[["query", "language", "doc_id", "label"]]
    catalog = DeltaStore(home / "lakehouse").read_arrow("bronze/catalog").to_pandas()
    catalog["doc_text"] = catalog["title"] + ". " + catalog["description"].fillna("")
    frame = pairs.merge(catalog[["doc_id", "doc_text"]], on="doc_id").merge(truth, on=["query", "language", "doc_id"])
    registry = Registry.under(home)
    scores = Scorer.from_folder(registry.model_dir(registry.alias_version(CHAMPION))).score(
        frame["query"].tolist(), frame["doc_text"].tolist())
    return frame.assign(wrong=np.abs(scores - frame["label"].to_numpy()) >= 1.0)


def test_drift_report_and_mined_samples_are_enriched_for_model_errors(trained_home):
    result = run(trained_home, ["gold/drift_reports", "gold/mined_samples"])
    assert result.success
    store = DeltaStore(trained_home / "lakehouse")
    drift = store.read_arrow("gold/drift_reports").to_pandas()
    assert drift["overall_drifted"].all() and {"language_mix", "embedding", "new_terms"} <= set(drift["signal"])
    mined = store.read_arrow("gold/mined_samples").to_pandas()
    assert 0 < len(mined) <= 150 and (mined["n_agents"] >= 1).all()
    meta = {m.asset_key.to_user_string(): m.materialization.metadata for m in result.get_asset_materialization_events()}
    assert meta["gold/mined_samples"]["union"].value > 150  # over budget: the per-query cap applies
    assert mined.groupby(["query", "language"]).size().max() <= 3
    mined_meta = meta["gold/mined_samples"]
    assert mined_meta["model_scored_pairs"].value < mined_meta["logged_pairs"].value
    assert "pairs_seen" in mined_meta["agents"].value
    # truth from the simulator, read only here: the miner finds pairs the serving model gets wrong
    window = store.read_arrow("silver/impressions").to_pandas()
    window = window[window["date"] >= mined["window_start"].iat[0]][["query", "language", "doc_id"]].drop_duplicates()
    random_pairs = model_error_rate(trained_home, window.sample(min(600, len(window)), random_state=0))
    mined_pairs = model_error_rate(trained_home, mined[["query", "language", "doc_id", "agents"]])
    enrichment = mined_pairs["wrong"].mean() / random_pairs["wrong"].mean()
    flagged_by = {a: mined_pairs[mined_pairs["agents"].map(lambda s: a in s)] for a in
                  ("user_feedback", "click_model", "disagreement", "uncertainty")}
    per_agent = {a: (len(f), round(f["wrong"].mean() / random_pairs["wrong"].mean(), 2)) for a, f in flagged_by.items()
                 if len(f)}
    print(f"error rate mined {mined_pairs['wrong'].mean():.3f} random {random_pairs['wrong'].mean():.3f} "
          f"enrichment {enrichment:.2f}; per agent (pairs, enrichment) {per_agent}")
    # measured 1.82 overall (user feedback 1.89, disagreement 1.77, uncertainty 2.01) on this stream
    assert enrichment > 1.4
    assert all(ratio > 1.2 for n, ratio in per_agent.values() if n >= 20)


def truth_labels(home) -> pd.DataFrame:
    truth = pd.read_parquet(home / "simulator" / "truth" / "truth.parquet")
    truth["query"] = truth["query"].map(lambda q: " ".join(q.lower().split()))
    return truth.drop_duplicates(["query", "language", "doc_id"])[["query", "language", "doc_id", "label"]]


def test_annotator_labels_mined_pairs_reliably_and_analytics_show_agreement(trained_home, monkeypatch):
    """The embedded panel (knowledge, features, behaviour) labels the mined pairs: at least 35% accepted,
    at least 85% of accepted labels right against the simulator's hidden truth (read only here). This stream
    is small (150 mined pairs): the demo-size streams' figures are in the README."""
    result = run(trained_home, ["gold/agent_votes", "gold/agent_labels", "gold/consensus_labels",
                                "analytics/agent_agreement"])
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    store = DeltaStore(trained_home / "lakehouse")
    mined = store.read_arrow("gold/mined_samples").to_pandas()
    consensus = store.read_arrow("gold/consensus_labels").to_pandas()
    votes = store.read_arrow("gold/agent_votes").to_pandas()
    labels = store.read_arrow("gold/agent_labels").to_pandas()
    assert set(votes["agent"]) == set(DEFAULT_AGENTS)
    assert set(consensus["iteration"]) == {1} and (consensus["language_family"] != "").all()
    truth = truth_labels(trained_home)
    judged = consensus.merge(truth, on=["query", "language", "doc_id"], suffixes=("", "_true"))
    acceptance, accuracy = len(consensus) / len(mined), (judged["label"] == judged["label_true"]).mean()
    per_agent = labels.dropna(subset=["label"]).merge(truth, on=["query", "language", "doc_id"],
                                                      suffixes=("", "_true"))
    agent_accuracy = per_agent.groupby("agent").apply(lambda f: round((f["label"] == f["label_true"]).mean(), 3),
                                                      include_groups=False).to_dict()
    coverage = (labels.dropna(subset=["label"]).groupby("agent").size() / len(mined)).round(3).to_dict()
    print(f"annotator: accepted {acceptance:.1%} of {len(mined)} mined pairs, consensus right {accuracy:.1%} "
          f"(n={len(judged)}); per agent accuracy {agent_accuracy} coverage {coverage}")
    assert acceptance >= 0.35 and accuracy >= 0.85
    assert len(judged) >= 0.9 * len(consensus)  # the truth covers the accepted pairs: the figure is real

    # the DuckDB file holds every analytic; `serm sql` prints one by name or runs a query
    import duckdb

    with duckdb.connect(str(trained_home / "analytics.duckdb"), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert {"pairwise_kappa", "fleiss_kappa", "krippendorff_alpha", "acceptance_rate"} <= tables
        rate = con.execute("SELECT * FROM acceptance_rate").df()
    assert len(rate) >= 1
    from typer.testing import CliRunner

    from serm_dagster.cli import app

    monkeypatch.setenv("SERM_HOME", str(trained_home))
    runner = CliRunner()
    named = runner.invoke(app, ["sql", "pairwise_kappa"])
    assert named.exit_code == 0 and "knowledge" in named.output
    query = runner.invoke(app, ["sql", "SELECT agent, count(*) AS n FROM agent_votes GROUP BY agent ORDER BY agent"])
    assert query.exit_code == 0 and "behaviour" in query.output and "features" in query.output
    refused = runner.invoke(app, ["sql", "DROP TABLE agent_votes"])
    assert refused.exit_code != 0


def test_promotion_refuses_a_worse_model(trained_home):
    """A challenger trained on inverted labels loses on the evolving set: champion stays."""
    store = DeltaStore(trained_home / "lakehouse")
    seed = store.read_arrow("bronze/judgments").to_pandas().query("split == 'seed'")
    inverted = pa.Table.from_pandas(pd.DataFrame({
        "iteration": 1, "pair_id": range(len(seed)), "query": seed["query"].str.lower(), "language": seed["language"],
        "language_family": "", "doc_id": seed["doc_id"], "label": 3 - seed["label"], "agreeing_agents": [["x"]] * len(seed),
        "n_voters": 2, "rationale": "inverted on purpose"}).astype({"pair_id": str}), preserve_index=False)
    store.write("gold/consensus_labels", inverted, lineage={"test": "inverted labels"})
    result = run(trained_home, ["gold/training_sets", "models/relevance_model", "gold/evaluations", "gold/test_scores",
                              "gold/promotions"])
    registry = Registry.under(trained_home)
    assert registry.alias_version(CHALLENGER) == "2"
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "challenger_beats_champion")
    assert not check.passed and check.metadata["decision"].value == "reject"
    evaluated = next(m for m in result.get_asset_materialization_events()
                     if m.asset_key.to_user_string() == "gold/evaluations").materialization
    assert evaluated.metadata["evaluated"].value == ["2"]  # the champion's rows on the same test pairs are reused
    # the gate read the validation parts, not the test parts the reports show
    rows = store.read_arrow("gold/evaluations").to_pandas()
    headline = rows[(rows.model_version == "2") & (rows.slice_type == "overall") & (rows.metric == "ndcg@1")
                    & (rows.test_set == "evolving")].set_index("part")["value"]
    assert check.metadata["challenger_evolving"].value == pytest.approx(headline["validation"])
    assert headline["validation"] != headline["test"]
    assert registry.alias_version(CHAMPION) == "1"
    assert registry.version_tags("2")["promotion_decision"] == "reject"
    # blocked: gold/promotions did not run, so its history has only the seed model's decision
    history = store.read_arrow("gold/promotions").to_pandas()
    assert history["promoted"].tolist() == [False] and history["champion"].tolist() == ["1"]
    training = store.read_arrow("gold/training_sets").to_pandas()
    newest = training[training["training_set"] == registry.version_tags("2")["training_set"]]
    assert set(newest["source"]) == {"iteration"} or newest["iteration"].max() == 1


def test_seed_training_and_retraining_have_their_own_recipes():
    settings = ModelSettings()
    seed = settings.training_config(progress=False)
    retrain = settings.training_config(progress=False, warm_start=True)
    assert (seed.epochs, seed.encoder_lr, seed.frozen_layers) == (settings.epochs, settings.encoder_lr, 0)
    assert (retrain.epochs, retrain.encoder_lr, retrain.frozen_layers) == (
        settings.retrain_epochs, settings.retrain_encoder_lr, settings.retrain_frozen_layers)
    # fine-tuning the serving model takes a smaller step than training from the backbone
    assert retrain.encoder_lr < seed.encoder_lr

"""Training, registry, evaluation and promotion, materialized in process with real MLflow (SQLite)."""

import pandas as pd
import pyarrow as pa
import pytest
from dagster import DagsterInstance, materialize

from assets.evaluation import evaluation_assets, evaluation_checks
from assets.ingest import ingest_assets
from assets.training import training_assets
from serm_dagster.checks import table_checks
from serm_dagster.cli import ingest_landing
from serm_dagster.definitions import asset_keys
from serm_dagster.registry import CHALLENGER, CHAMPION, Registry
from serm_dagster.resources import LakehouseResource, MlflowResource, ModelSettings, SparkResource
from serm_dagster.settings import SermPaths
from serm_dagster.simulator import SimulationConfig, simulate
from serm_dagster.storage import DeltaStore

ALL = [*ingest_assets, *training_assets, *evaluation_assets]
CHECKS = [*table_checks(asset_keys(ALL)), *evaluation_checks]


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory):
    """A small simulated stream, ingested, with a seed model trained on the real MiniLM backbone."""
    home = tmp_path_factory.mktemp("serm")
    paths = SermPaths.from_env(home).ensure()
    simulate(home, SimulationConfig(days=6, queries_per_day=120, seed=5, seed_days=2, evolving_window_days=2,
                                    seed_judgments=500, test_judgments=240))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(paths.dagster_home))
        ingest_landing(paths, echo=lambda *_: None)
    return home


def resources(home, **settings):
    return {"spark": SparkResource(), "lakehouse": LakehouseResource(home=str(home)), "mlflow_resource": MlflowResource(),
            "model_settings": ModelSettings(**{"epochs": 2, "batch_size": 16, "max_length": 64, "encoder_lr": 1e-4,
                                               **settings})}


def run(home, selection, **settings):
    return materialize([*ALL, *CHECKS], resources=resources(home, **settings), selection=selection,
                       instance=DagsterInstance.ephemeral(), raise_on_error=False)


def test_seed_model_is_registered_evaluated_and_becomes_champion(trained_home):
    result = run(trained_home, ["gold/training_sets", "models/seed_model", "gold/evaluations", "gold/promotions"])
    assert result.success
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
    assert set(evaluation["slice_type"]) == {"overall", "family", "language"}
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


def test_promotion_refuses_a_worse_model(trained_home):
    """A challenger trained on inverted labels loses on the evolving set: champion stays."""
    store = DeltaStore(trained_home / "lakehouse")
    seed = store.read_arrow("bronze/judgments").to_pandas().query("split == 'seed'")
    inverted = pa.Table.from_pandas(pd.DataFrame({
        "iteration": 1, "pair_id": range(len(seed)), "query": seed["query"].str.lower(), "language": seed["language"],
        "language_family": "", "doc_id": seed["doc_id"], "label": 3 - seed["label"], "agreeing_agents": [["x"]] * len(seed),
        "n_voters": 2, "rationale": "inverted on purpose"}).astype({"pair_id": str}), preserve_index=False)
    store.write("gold/consensus_labels", inverted, lineage={"test": "inverted labels"})
    result = run(trained_home, ["gold/training_sets", "models/relevance_model", "gold/evaluations", "gold/promotions"])
    registry = Registry.under(trained_home)
    assert registry.alias_version(CHALLENGER) == "2"
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "challenger_beats_champion")
    assert not check.passed and check.metadata["decision"].value == "reject"
    assert registry.alias_version(CHAMPION) == "1"
    assert registry.version_tags("2")["promotion_decision"] == "reject"
    # blocked: gold/promotions did not run, so its history has only the seed model's decision
    history = store.read_arrow("gold/promotions").to_pandas()
    assert history["promoted"].tolist() == [False] and history["champion"].tolist() == ["1"]
    training = store.read_arrow("gold/training_sets").to_pandas()
    newest = training[training["training_set"] == registry.version_tags("2")["training_set"]]
    assert set(newest["source"]) == {"iteration"} or newest["iteration"].max() == 1

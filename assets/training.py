"""Train stage: the training sets, the seed model and the retrained relevance model (MLflow-registered)."""

import hashlib
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from assets.ingest import BRONZE_CATALOG, BRONZE_JUDGMENTS
from models.mixing import COLUMNS as TRAINING_COLUMNS
from models.mixing import PAIR_KEY, mix_training_set
from models.progress import reporting_to
from models.relevance import RelevanceModel
from models.training import train
from serm_dagster.registry import CHALLENGER, CHAMPION, MODEL_NAME
from serm_dagster.resources import LakehouseResource, MlflowResource, ModelSettings, SparkResource
from serm_dagster.tables import table_name, write_asset_table
from spark_jobs.training import document_texts, labelled_pairs

GROUP = "training"
OWNERS = ["team:serm"]
TRAINING_SETS = AssetKey(["gold", "training_sets"])
CONSENSUS_LABELS = AssetKey(["gold", "consensus_labels"])
AGENT_LABELS = AssetKey(["gold", "agent_labels"])
SEED_MODEL = AssetKey(["models", "seed_model"])
RELEVANCE_MODEL = AssetKey(["models", "relevance_model"])
SEED_ALIAS = "seed"

# What a cluster deployment needs to run training on a GPU node, and a pool that serializes GPU work.
GPU_POOL = "gpu"
GPU_TAGS = {
    "dagster/concurrency_key": GPU_POOL,
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {"node_selector": {"serm.dev/pool": GPU_POOL},
                            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    },
}

TRAINING_SET_TYPES = pa.schema([
    ("training_set", pa.string()), ("query", pa.string()), ("language", pa.string()), ("doc_id", pa.string()),
    ("doc_text", pa.string()), ("label", pa.int32()), ("source", pa.string()), ("iteration", pa.int32()),
    ("weight", pa.float64()),
])


def _documents(spark, store):
    return document_texts(store.read_spark(spark, table_name(BRONZE_CATALOG)))


def _consensus_by_iteration(spark, store, documents) -> dict[int, pd.DataFrame]:
    """Accepted labels of every iteration so far, with document texts (none before the annotator runs)."""
    name = table_name(CONSENSUS_LABELS)
    if not store.exists(name):
        return {}
    labels = store.read_spark(spark, name).join(documents.select("doc_id", "doc_text"), "doc_id")
    frame = labels.select("iteration", "query", "language", "doc_id", "doc_text", "label").toPandas()
    return {int(i): part.drop(columns="iteration") for i, part in frame.groupby("iteration")}


@asset(
    key=TRAINING_SETS,
    deps=[BRONZE_JUDGMENTS, BRONZE_CATALOG, CONSENSUS_LABELS],
    group_name=GROUP,
    kinds={"spark", "delta"},
    owners=OWNERS,
    code_version="1",
    description="Exactly which labelled pairs each model version trains on: the seed (SFT) judgments plus "
                "every iteration's accepted labels, newest label per pair, with source, iteration and weight. "
                "One training_set id per assembly; model versions record theirs.",
)
def training_sets(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource,
                  model_settings: ModelSettings) -> MaterializeResult:
    session, store = spark.get_session(), lakehouse.store
    upstream = {table_name(k): store.version(table_name(k)) for k in (BRONZE_JUDGMENTS, BRONZE_CATALOG)}
    documents = _documents(session, store)
    seed = labelled_pairs(store.read_spark(session, table_name(BRONZE_JUDGMENTS)).where("split = 'seed'"),
                          documents).toPandas()
    iterations = _consensus_by_iteration(session, store, documents)
    if store.exists(table_name(CONSENSUS_LABELS)):
        upstream[table_name(CONSENSUS_LABELS)] = store.version(table_name(CONSENSUS_LABELS))
    test_pairs = labelled_pairs(store.read_spark(session, table_name(BRONZE_JUDGMENTS)).where("split = 'test'"),
                                documents).select(*PAIR_KEY).distinct().toPandas()
    mixed = without_pairs(mix_training_set(seed, iterations, weights=model_settings.mix_weights()), test_pairs)
    current = max(iterations, default=0)
    digest = hashlib.sha1(pd.util.hash_pandas_object(mixed[TRAINING_COLUMNS], index=False).values.tobytes()).hexdigest()
    training_set = f"iter{current:03d}-{digest[:10]}"
    table = pa.Table.from_pandas(mixed.assign(training_set=training_set)[TRAINING_SET_TYPES.names],
                                 schema=TRAINING_SET_TYPES, preserve_index=False)
    counts = mixed.groupby(["source", "iteration"]).size().rename("pairs").reset_index()
    return write_asset_table(
        context, store, TRAINING_SETS, table, upstream=upstream, partition_by=["training_set"],
        replace={"training_set": [training_set]}, lineage={"training_set": training_set},
        metadata={"training_set": training_set, "iteration": current, "pairs": len(mixed),
                  "composition": MetadataValue.md(counts.to_markdown(index=False))},
    )


def without_pairs(frame: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """``frame`` less the rows whose (query, language, doc_id) is in ``pairs``: a test pair the miner picked
    and the agents labelled must not reach training, or the evaluation would grade the model on its homework."""
    if pairs.empty:
        return frame
    marked = frame.merge(pairs[PAIR_KEY].drop_duplicates().assign(_test=True), on=PAIR_KEY, how="left")
    return marked[marked["_test"].isna()].drop(columns="_test").reset_index(drop=True)


def load_training_set(store, training_set: str | None = None, sources: tuple[str, ...] | None = None
                      ) -> tuple[str, int, pd.DataFrame]:
    """(training_set id, Delta version, rows): the newest assembly unless one is named."""
    name = table_name(TRAINING_SETS)
    version = store.version(name)
    if version is None:
        raise FileNotFoundError(f"{name} does not exist yet: materialize it first")
    training_set = training_set or store.lineage(name, version)["training_set"]
    rows = store.read_arrow(name, version, filters=[("training_set", "=", training_set)]).to_pandas()
    if sources:
        rows = rows[rows["source"].isin(sources)]
    return training_set, version, rows.reset_index(drop=True)


def train_and_register(context: AssetExecutionContext, lakehouse: LakehouseResource, mlflow_resource: MlflowResource,
                       settings: ModelSettings, role: str, sources: tuple[str, ...] | None) -> MaterializeResult:
    """Train on the newest training set, log and register the model: the seed model from the backbone, a
    retrained model from the champion's weights (``retrain_from``) or the backbone."""
    store = lakehouse.store
    training_set, ts_version, examples = load_training_set(store, sources=sources)
    if examples.empty:
        raise ValueError(f"training set {training_set} has no {'/'.join(sources or ('',))} pairs to train on")
    registry = mlflow_resource.registry(lakehouse.paths.home)
    champion = registry.alias_version(CHAMPION)
    warm_start = role != "seed" and settings.retrain_from == "champion" and champion is not None
    adopted = role == "seed" and bool(settings.seed_model_from)
    if adopted:  # an existing model becomes the seed: e.g. the arms of a comparison share one
        model, tokenizer = RelevanceModel.load(settings.seed_model_from)
        initialised_from = settings.seed_model_from
    elif warm_start:
        model, tokenizer = RelevanceModel.load(registry.model_dir(champion))
        initialised_from = f"champion v{champion}"
    else:
        model, tokenizer = RelevanceModel.from_backbone(settings.backbone, dropout=settings.dropout,
                                                        max_length=settings.max_length)
        initialised_from = settings.backbone
    config = settings.training_config(warm_start=warm_start)
    with reporting_to(context.log.info):
        report = None if adopted else train(model, tokenizer, examples, config, device=settings.device)
    trained = {} if report is None else {
        "device": report.device, "precision": report.precision, "epochs": len(report.epoch_losses), "train_seconds": round(report.seconds, 1),
        "pairs_per_second": round(report.epoch_pairs_per_second[-1], 1),
        "epoch_losses": MetadataValue.json([round(x, 4) for x in report.epoch_losses])}
    with tempfile.TemporaryDirectory() as tmp:
        folder = model.save(Path(tmp) / "model_dir", tokenizer)  # the artifact keeps this name
        run_id, version = registry.log_model(
            folder,
            run_name=f"{role}-{context.run_id[:8]}",
            params={**config.as_params(), "backbone": settings.backbone, "initialised_from": initialised_from,
                    "role": role, "adopted": adopted,
                    "training_set": training_set, "training_set_delta_version": ts_version,
                    "training_pairs": len(examples), "sources": ",".join(sources or ("seed", "iteration"))},
            metrics={} if report is None else {
                "final_epoch_loss": report.epoch_losses[-1], "train_seconds": report.seconds,
                "pairs_per_second": report.epoch_pairs_per_second[-1]},
            step_metrics={} if report is None else {"loss": report.step_losses, "epoch_loss": report.epoch_losses},
            tags={"dagster_run_id": context.run_id, "role": role,
                  "device": "none (adopted)" if report is None else f"{report.device} ({report.precision})"},
        )
    registry.tag_version(version, {"role": role, "training_set": training_set,
                                   "training_set_delta_version": ts_version, "dagster_run_id": context.run_id})
    registry.set_alias(SEED_ALIAS if role == "seed" else CHALLENGER, version)
    if role == "seed" and registry.alias_version(CHAMPION) is None:
        registry.set_alias(CHAMPION, version)  # the first model bootstraps the registry
        registry.tag_version(version, {"promotion": "champion: first model"})
    composition = examples.groupby(["source", "iteration"]).size().rename("pairs").reset_index()
    return MaterializeResult(
        data_version=DataVersion(f"{MODEL_NAME}/{version}"),
        metadata={
            "model_version": version, "model_uri": f"models:/{MODEL_NAME}/{version}", "mlflow_run_id": run_id,
            "training_set": training_set, "training_set_delta_version": ts_version, "training_pairs": len(examples),
            "initialised_from": initialised_from, **trained,
            "composition": MetadataValue.md(composition.to_markdown(index=False)),
        },
    )


@asset(
    key=SEED_MODEL,
    deps=[TRAINING_SETS],
    group_name=GROUP,
    kinds={"pytorch", "mlflow"},
    owners=OWNERS,
    code_version="1",
    op_tags=GPU_TAGS,
    pool=GPU_POOL,
    description="The seed model: the cross-encoder fine-tuned on the seed (SFT) judgments only (or the model "
                "ModelSettings.seed_model_from names, adopted as it is). Registered in "
                f"MLflow as {MODEL_NAME} with alias '{SEED_ALIAS}'; the first one also becomes '{CHAMPION}'.",
)
def seed_model(context: AssetExecutionContext, lakehouse: LakehouseResource, mlflow_resource: MlflowResource,
               model_settings: ModelSettings) -> MaterializeResult:
    return train_and_register(context, lakehouse, mlflow_resource, model_settings, "seed", ("seed",))


@asset(
    key=RELEVANCE_MODEL,
    deps=[TRAINING_SETS],
    group_name=GROUP,
    kinds={"pytorch", "mlflow"},
    owners=OWNERS,
    code_version="1",
    op_tags=GPU_TAGS,
    pool=GPU_POOL,
    description="The relevance model retrained (from the champion's weights by default) on the mixed training set (this iteration's "
                "labels + all earlier iterations' + the seed set). Runs on the GPU when there is one; registered "
                f"as {MODEL_NAME} with alias '{CHALLENGER}' until the promotion check moves '{CHAMPION}'.",
)
def relevance_model(context: AssetExecutionContext, lakehouse: LakehouseResource, mlflow_resource: MlflowResource,
                    model_settings: ModelSettings) -> MaterializeResult:
    return train_and_register(context, lakehouse, mlflow_resource, model_settings, "relevance", None)


@asset_check(asset=TRAINING_SETS, description="no pair of the test judgments is in the newest training set")
def no_test_pairs_in_training(spark: SparkResource, lakehouse: LakehouseResource) -> AssetCheckResult:
    session, store = spark.get_session(), lakehouse.store
    training_set, version, rows = load_training_set(store)
    test = store.read_spark(session, table_name(BRONZE_JUDGMENTS)).where("split = 'test'")
    test_pairs = labelled_pairs(test, _documents(session, store)).select(*PAIR_KEY).distinct().toPandas()
    leaked = rows.merge(test_pairs, on=PAIR_KEY)
    return AssetCheckResult(passed=leaked.empty, metadata={
        "training_set": training_set, "delta_version": version, "leaked_pairs": len(leaked),
        "sample": MetadataValue.md(leaked[PAIR_KEY].head(10).to_markdown(index=False) if len(leaked) else "none")})


training_assets = [training_sets, seed_model, relevance_model]
training_checks = [no_test_pairs_in_training]

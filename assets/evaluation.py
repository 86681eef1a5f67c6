"""Evaluate stage: every model of interest on the static and evolving test sets; promotion."""

import hashlib

import pandas as pd
import pyarrow as pa
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from assets.ingest import BRONZE_CATALOG, BRONZE_JUDGMENTS
from assets.training import RELEVANCE_MODEL, SEED_ALIAS, SEED_MODEL
from models.evaluation import evaluate_on_test_sets, markdown_table, promotion_decision
from serm_dagster.registry import CHALLENGER, CHAMPION
from serm_dagster.resources import LakehouseResource, MlflowResource, ModelSettings, SparkResource
from serm_dagster.tables import table_name, write_asset_table
from spark_jobs.training import TestWindows, document_texts, labelled_pairs, split_test_sets

PROMOTION_CHECK = "challenger_beats_champion"
GROUP = "evaluation"
OWNERS = ["team:serm"]
EVALUATIONS = AssetKey(["gold", "evaluations"])
PROMOTIONS = AssetKey(["gold", "promotions"])

EVALUATION_TYPES = pa.schema([
    ("model_version", pa.string()), ("aliases", pa.string()), ("test_set", pa.string()), ("slice_type", pa.string()),
    ("slice", pa.string()), ("metric", pa.string()), ("value", pa.float64()), ("n_queries", pa.int64()),
    ("n_pairs", pa.int64()), ("dagster_run_id", pa.string()), ("judgments_version", pa.int64()),
    ("test_pairs_digest", pa.string()),
])


def test_pairs(spark, store, windows: TestWindows) -> pd.DataFrame:
    """Judged test pairs with document texts and ``test_set`` (static or evolving)."""
    documents = document_texts(store.read_spark(spark, table_name(BRONZE_CATALOG)))
    pairs = labelled_pairs(store.read_spark(spark, table_name(BRONZE_JUDGMENTS)), documents)
    return split_test_sets(pairs, windows).toPandas()


def models_of_interest(registry) -> dict[str, list[str]]:
    """version -> its aliases, for the champion, the challenger and the seed model."""
    versions: dict[str, list[str]] = {}
    for alias in (CHAMPION, CHALLENGER, SEED_ALIAS):
        version = registry.alias_version(alias)
        if version is not None:
            versions.setdefault(version, []).append(alias)
    return versions


@asset(
    key=EVALUATIONS,
    deps=[RELEVANCE_MODEL, SEED_MODEL, BRONZE_JUDGMENTS, BRONZE_CATALOG],
    group_name=GROUP,
    kinds={"pytorch", "mlflow", "delta"},
    owners=OWNERS,
    code_version="1",
    description="NDCG@1, NDCG@4 and label accuracy of the champion, challenger and seed models on the static "
                "test set (seen in the seed period) and the evolving one (the newest window), overall, per "
                "language family and per language: one row per model version x test set x slice x metric.",
)
def evaluations(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource,
                mlflow_resource: MlflowResource, model_settings: ModelSettings) -> MaterializeResult:
    store = lakehouse.store
    registry = mlflow_resource.registry(lakehouse.paths.home)
    pairs = test_pairs(spark.get_session(), store, TestWindows(model_settings.evolving_days))
    digest = pairs_digest(pairs)
    judgments_version = store.version(table_name(BRONZE_JUDGMENTS))
    interest = models_of_interest(registry)
    # a version already evaluated on these very test pairs keeps its rows: a model's scores do not change
    stored = {v: latest_evaluation(store, v) for v in interest}
    stale = {v: a for v, a in interest.items() if not evaluated_on(stored[v], digest)}
    tables = []
    for version, aliases in stale.items():
        scorer = model_settings.scorer(registry.model_dir(version))
        table = evaluate_on_test_sets(scorer, pairs).assign(
            model_version=version, aliases=",".join(aliases), dagster_run_id=context.run_id,
            judgments_version=judgments_version, test_pairs_digest=digest)
        tables.append(table)
        for row in table[table.slice_type == "overall"].itertuples():
            registry.client().log_metric(registry.version_tags(version)["mlflow_run_id"],
                                         f"{row.test_set}_{row.metric.replace('@', '_at_')}", row.value)
    current = pd.concat([*tables, *[stored[v].assign(aliases=",".join(a))
                                    for v, a in interest.items() if v not in stale]], ignore_index=True)
    shown = current.assign(model=current["model_version"] + " (" + current["aliases"] + ")")
    metadata = {"test_pairs": MetadataValue.json(pairs.groupby("test_set").size().to_dict()),
                "evaluated": MetadataValue.json(sorted(stale)), "evaluation": MetadataValue.md(markdown_table(shown))}
    upstream = {table_name(BRONZE_JUDGMENTS): judgments_version,
                table_name(BRONZE_CATALOG): store.version(table_name(BRONZE_CATALOG))}
    if not tables:
        return MaterializeResult(metadata={**metadata, "delta_version": store.version(table_name(EVALUATIONS))})
    evaluated = pd.concat(tables, ignore_index=True)
    data = pa.Table.from_pandas(evaluated[EVALUATION_TYPES.names], schema=EVALUATION_TYPES, preserve_index=False)
    return write_asset_table(context, store, EVALUATIONS, data, partition_by=["model_version"],
                             replace={"model_version": sorted(stale)}, upstream=upstream, metadata=metadata)


def pairs_digest(pairs: pd.DataFrame) -> str:
    """A fingerprint of the test pairs and their labels (order-free)."""
    key = pairs[["test_set", "query", "language", "doc_id", "label"]].astype(str).sort_values(
        ["test_set", "query", "language", "doc_id"]).reset_index(drop=True)
    return hashlib.sha1(pd.util.hash_pandas_object(key, index=False).values.tobytes()).hexdigest()[:16]


def evaluated_on(rows: pd.DataFrame | None, digest: str) -> bool:
    """Whether a version's stored evaluation rows were scored on the test pairs with this digest."""
    return rows is not None and "test_pairs_digest" in rows and bool((rows["test_pairs_digest"] == digest).all())


def latest_evaluation(store, version: str) -> pd.DataFrame | None:
    if version is None or not store.exists(table_name(EVALUATIONS)):
        return None
    rows = store.read_arrow(table_name(EVALUATIONS), filters=[("model_version", "=", version)]).to_pandas()
    return rows if len(rows) else None


def decide_promotion(store, registry, challenger: str, champion: str | None, static_margin: float):
    """The promotion rule on the stored evaluations of the challenger, the champion and the seed model (the
    blocking check and gold/promotions must decide alike)."""
    return promotion_decision(latest_evaluation(store, challenger), latest_evaluation(store, champion),
                              static_margin, latest_evaluation(store, registry.alias_version(SEED_ALIAS)))


@asset_check(asset=EVALUATIONS, name=PROMOTION_CHECK, blocking=True,
             description="The challenger is promoted only if evolving-set NDCG@1 improves on the champion's and "
                         "static-set NDCG@1 stays within the configured margin of the seed model's; blocks "
                         "gold/promotions otherwise.")
def challenger_beats_champion(context: AssetCheckExecutionContext, lakehouse: LakehouseResource,
                              mlflow_resource: MlflowResource, model_settings: ModelSettings) -> AssetCheckResult:
    registry = mlflow_resource.registry(lakehouse.paths.home)
    challenger, champion = registry.alias_version(CHALLENGER), registry.alias_version(CHAMPION)
    if challenger is None or challenger == champion:
        return AssetCheckResult(passed=True, metadata={"decision": "nothing to promote", "champion": str(champion)})
    decision = decide_promotion(lakehouse.store, registry, challenger, champion, model_settings.static_margin)
    registry.tag_version(challenger, {"promotion_decision": "promote" if decision.promote else "reject",
                                      "promotion_reason": decision.reason, "compared_with": str(champion)})
    return AssetCheckResult(passed=decision.promote, metadata={
        "challenger": challenger, "champion": str(champion), "decision": "promote" if decision.promote else "reject",
        **{k: v for k, v in decision.as_dict().items() if v is not None and k != "promote"}})


PROMOTION_TYPES = pa.schema([
    ("decided_at", pa.timestamp("us", tz="UTC")), ("dagster_run_id", pa.string()), ("challenger", pa.string()),
    ("previous_champion", pa.string()), ("champion", pa.string()), ("promoted", pa.bool_()), ("reason", pa.string()),
    ("challenger_evolving_ndcg1", pa.float64()), ("champion_evolving_ndcg1", pa.float64()),
    ("challenger_static_ndcg1", pa.float64()), ("champion_static_ndcg1", pa.float64()), ("static_margin", pa.float64()),
])


@asset(
    key=PROMOTIONS,
    deps=[EVALUATIONS],
    group_name=GROUP,
    kinds={"mlflow", "delta"},
    owners=OWNERS,
    code_version="1",
    description="Moves the 'champion' alias to the challenger once the blocking promotion check has passed, and "
                "records each decision with its numbers (one row per decision; rejections are also tagged on the "
                "MLflow version by the check).",
)
def promotions(context: AssetExecutionContext, lakehouse: LakehouseResource, mlflow_resource: MlflowResource,
               model_settings: ModelSettings) -> MaterializeResult:
    store = lakehouse.store
    registry = mlflow_resource.registry(lakehouse.paths.home)
    challenger, champion = registry.alias_version(CHALLENGER), registry.alias_version(CHAMPION)
    if challenger is None or challenger == champion:
        decision = None
        reason = "no challenger: the champion is the newest model"
    else:
        decision = decide_promotion(store, registry, challenger, champion, model_settings.static_margin)
        reason = decision.reason
    promoted = bool(decision and decision.promote)
    if promoted:
        registry.set_alias(CHAMPION, challenger)
        registry.tag_version(challenger, {"promotion": f"champion after {champion}"})
    numbers = decision.as_dict() if decision else {}
    row = pa.Table.from_pylist([{
        "decided_at": pd.Timestamp.now(tz="UTC"), "dagster_run_id": context.run_id, "challenger": challenger,
        "previous_champion": champion, "champion": challenger if promoted else champion, "promoted": promoted,
        "reason": reason, "challenger_evolving_ndcg1": numbers.get("challenger_evolving"),
        "champion_evolving_ndcg1": numbers.get("champion_evolving"),
        "challenger_static_ndcg1": numbers.get("challenger_static"),
        "champion_static_ndcg1": numbers.get("champion_static"), "static_margin": model_settings.static_margin,
    }], schema=PROMOTION_TYPES)
    history = store.read_arrow(table_name(PROMOTIONS)) if store.exists(table_name(PROMOTIONS)) else \
        PROMOTION_TYPES.empty_table()
    return write_asset_table(context, store, PROMOTIONS, pa.concat_tables([history.select(PROMOTION_TYPES.names)
                                                                           .cast(PROMOTION_TYPES), row]),
                             upstream={table_name(EVALUATIONS): store.version(table_name(EVALUATIONS))},
                             metadata={"promoted": promoted, "champion": str(row["champion"][0]), "reason": reason})


evaluation_assets = [evaluations, promotions]
evaluation_checks = [challenger_beats_champion]

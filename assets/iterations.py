"""The record of each SERM iteration: what it mined and accepted, which model served before and after,
the drift verdict, the metrics, the promotion decision and the wall time of each stage."""


import pandas as pd
import pyarrow as pa
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from assets.annotation import annotate_mined_samples
from assets.evaluation import EVALUATIONS, PROMOTIONS, TestPairs, evaluation_on, evaluations
from assets.mining import DRIFT_REPORTS, MINED_SAMPLES
from assets.training import CONSENSUS_LABELS, RELEVANCE_MODEL, TRAINING_SETS
from models.metrics import TEST
from serm_dagster.registry import CHALLENGER, CHAMPION
from serm_dagster.resources import AnnotatorSettings, LakehouseResource, MlflowResource, ModelSettings, SparkResource
from serm_dagster.tables import table_name, write_asset_table
from spark_jobs.training import TestWindows

ITERATIONS = AssetKey(["gold", "iterations"])
# the step that materializes each stage's table, as Dagster names it
STAGE_STEPS = {
    "drift": "gold__drift_reports", "mine": "gold__mined_samples", "annotate": annotate_mined_samples.op.name,
    "assemble": "gold__training_sets", "train": "models__relevance_model", "evaluate": evaluations.op.name,
    "promote": "gold__promotions",
}
ITERATION_TYPES = pa.schema([
    ("iteration", pa.int64()), ("strategy", pa.string()), ("window_start", pa.date32()), ("window_end", pa.date32()),
    ("drifted", pa.bool_()), ("drift_reason", pa.string()), ("mined", pa.int64()), ("accepted", pa.int64()),
    ("acceptance_rate", pa.float64()), ("training_set", pa.string()), ("model_before", pa.string()),
    ("challenger", pa.string()), ("model_after", pa.string()), ("promoted", pa.bool_()),
    ("promotion_reason", pa.string()), ("evolving_ndcg1", pa.float64()), ("evolving_ndcg4", pa.float64()),
    ("evolving_accuracy", pa.float64()), ("static_ndcg1", pa.float64()), ("static_ndcg4", pa.float64()),
    ("static_accuracy", pa.float64()), ("stage_seconds", pa.string()), ("recorded_at", pa.timestamp("us", tz="UTC")),
])


def overall_metrics(store, version: str, digest: str) -> dict:
    """``evolving_ndcg1`` ... ``static_accuracy`` of one model version on the test parts of the test pairs with
    this digest (what reports show; promotion read the validation parts)."""
    evaluation = evaluation_on(store, version, digest)
    rows = evaluation[(evaluation["slice_type"] == "overall") & (evaluation["part"] == TEST)] \
        if evaluation is not None else pd.DataFrame()
    names = {"ndcg@1": "ndcg1", "ndcg@4": "ndcg4", "accuracy": "accuracy"}
    return {f"{r.test_set}_{names[r.metric]}": float(r.value) for r in rows.itertuples()}


def stage_seconds(instance, runs: dict[str, str | None]) -> dict[str, float]:
    """Wall time of each stage's step in the run that wrote this home's copy of its table (from Dagster's run
    storage). The run comes from the table's own lineage, not the instance's latest materialization: arms of a
    comparison share one instance."""
    seconds = {}
    for stage, run_id in runs.items():
        if not run_id:
            continue
        for stats in instance.get_run_step_stats(run_id, step_keys=[STAGE_STEPS[stage]]):
            if stats.start_time and stats.end_time:
                seconds[stage] = round(stats.end_time - stats.start_time, 1)
    return seconds


def iteration_digest(session, store, model_settings: ModelSettings, window_end) -> str:
    """The digest of the test pairs as of an iteration's window end, the pairs its evaluation scored."""
    windows = TestWindows(model_settings.evolving_days, window_end, model_settings.validation_share)
    return TestPairs.read(session, store, windows).digest


@asset(
    key=ITERATIONS,
    deps=[DRIFT_REPORTS, MINED_SAMPLES, CONSENSUS_LABELS, TRAINING_SETS, RELEVANCE_MODEL, EVALUATIONS, PROMOTIONS],
    group_name="evaluation",
    kinds={"delta", "mlflow"},
    owners=["team:serm"],
    code_version="2",
    description="One row per SERM iteration: its window, drift verdict, samples mined and accepted, the model "
                "serving before and after, the promotion decision, the champion's metrics on the test parts of "
                "both test sets as of the window's end, and the wall time of each stage.",
)
def iterations(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource,
               mlflow_resource: MlflowResource, annotator_settings: AnnotatorSettings,
               model_settings: ModelSettings) -> MaterializeResult:
    store = lakehouse.store
    registry = mlflow_resource.registry(lakehouse.paths.home)
    mined = store.read_arrow(table_name(MINED_SAMPLES)).to_pandas()
    iteration = int(mined["iteration"].max())
    mined = mined[mined["iteration"] == iteration]
    window_end = mined["window_end"].iat[0]
    drift = store.read_arrow(table_name(DRIFT_REPORTS)).to_pandas()
    drift = drift[drift["window_end"] == window_end]
    consensus = store.read_arrow(table_name(CONSENSUS_LABELS), filters=[("iteration", "=", iteration)]) \
        if store.exists(table_name(CONSENSUS_LABELS)) else pa.table({})
    challenger, champion = registry.alias_version(CHALLENGER), registry.alias_version(CHAMPION)
    tags = registry.version_tags(challenger) if challenger else {}
    model_before = str(mined["model_version"].iat[0])
    tables = {"drift": DRIFT_REPORTS, "mine": MINED_SAMPLES, "annotate": CONSENSUS_LABELS, "assemble": TRAINING_SETS,
              "evaluate": EVALUATIONS, "promote": PROMOTIONS}
    runs = {stage: store.lineage(table_name(key)).get("dagster_run_id") for stage, key in tables.items()
            if store.exists(table_name(key))}
    runs["train"] = tags.get("dagster_run_id")
    if runs.get("promote") != runs.get("evaluate"):  # a rejected challenger: no promotion ran this iteration
        runs.pop("promote", None)
    row = {
        "iteration": iteration, "strategy": annotator_settings.strategy,
        "window_start": mined["window_start"].iat[0], "window_end": window_end,
        "drifted": bool(drift["overall_drifted"].any()) if len(drift) else None,
        "drift_reason": str(drift["reason"].iat[0]) if len(drift) else None,
        "mined": len(mined), "accepted": consensus.num_rows,
        "acceptance_rate": round(consensus.num_rows / max(len(mined), 1), 4),
        "training_set": tags.get("training_set"), "model_before": model_before, "challenger": challenger,
        "model_after": champion, "promoted": champion != model_before,
        "promotion_reason": tags.get("promotion_reason"),
        **overall_metrics(store, champion, iteration_digest(spark.get_session(), store, model_settings,
                                                            window_end)),
        "stage_seconds": pd.Series(stage_seconds(context.instance, runs)).to_json(),
        "recorded_at": pd.Timestamp.now(tz="UTC"),
    }
    table = pa.Table.from_pylist([row], schema=ITERATION_TYPES)
    history = store.read_arrow(table_name(ITERATIONS)).to_pandas() if store.exists(table_name(ITERATIONS)) else None
    if history is not None:  # re-running an iteration replaces its row
        kept = pa.Table.from_pandas(history[history["iteration"] != iteration], schema=ITERATION_TYPES,
                                    preserve_index=False)
        table = pa.concat_tables([kept, table]).sort_by("iteration")
    shown = table.to_pandas()[["iteration", "window_end", "drifted", "mined", "accepted", "model_before",
                               "model_after", "promoted", "evolving_ndcg1", "static_ndcg1"]]
    return write_asset_table(context, store, ITERATIONS, table, lineage={"iteration": iteration},
                             metadata={"iteration": iteration, "promoted": row["promoted"],
                                       "iterations": MetadataValue.md(shown.to_markdown(index=False))})


iteration_assets = [iterations]

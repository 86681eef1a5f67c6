"""The retraining sensor and the two-weekly schedule, evaluated against real Delta tables and a real instance."""

from datetime import date, datetime, timedelta, timezone

import pyarrow as pa
from dagster import (
    DagsterInstance,
    RunRequest,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

from serm_dagster.definitions import defs
from serm_dagster.jobs import retrain_job
from serm_dagster.resources import LakehouseResource, MlflowResource
from serm_dagster.sensors import MIN_NEW_LABELS, MIN_UNLABELLED, retraining_sensor, two_weekly_iteration
from serm_dagster.storage import DeltaStore


def write_mined(store: DeltaStore, iteration: int, pairs: int) -> None:
    table = pa.table({"iteration": [iteration] * pairs, "query": [f"q{i}" for i in range(pairs)],
                      "language": ["en"] * pairs, "doc_id": [f"d{i}" for i in range(pairs)]})
    store.write("gold/mined_samples", table, lineage={"iteration": iteration}, partition_by=["iteration"],
                replace={"iteration": [iteration]})


def write_drift(store: DeltaStore, drifted: bool) -> None:
    store.write("gold/drift_reports", pa.table({"window_end": [date(2026, 1, 10)], "signal": ["embedding"],
                                                "overall_drifted": [drifted]}), lineage={})


def evaluate(home, instance=None):
    context = build_sensor_context(instance=instance or DagsterInstance.ephemeral(),
                                   resources={"lakehouse": LakehouseResource(home=str(home)),
                                              "mlflow_resource": MlflowResource()})
    return retraining_sensor(context)


def test_retraining_sensor_requests_a_run_on_drift_with_the_reason_in_its_tags(home):
    store = DeltaStore(home / "lakehouse")
    assert isinstance(evaluate(home), SkipReason)  # nothing mined yet
    write_mined(store, 1, 20)
    write_drift(store, drifted=False)
    skipped = evaluate(home)
    assert isinstance(skipped, SkipReason) and "no drift" in skipped.skip_message

    write_drift(store, drifted=True)
    request = evaluate(home)
    assert isinstance(request, RunRequest)
    assert request.tags["serm/trigger"] == "sensor" and "drift" in request.tags["serm/reason"]
    assert "20 unlabelled mined samples (iteration 1)" in request.tags["serm/reason"]
    assert request.run_key == evaluate(home).run_key  # the same mined version is requested once

    # once the iteration is annotated there is nothing to retrain on, even when no label was accepted
    store.write("gold/agent_labels", pa.table({"iteration": [1], "status": ["abstained"]}), lineage={})
    assert isinstance(evaluate(home), SkipReason)


def test_retraining_sensor_requests_a_run_for_many_mined_samples_without_drift(home):
    store = DeltaStore(home / "lakehouse")
    write_drift(store, drifted=False)
    write_mined(store, 2, MIN_UNLABELLED)
    request = evaluate(home)
    assert isinstance(request, RunRequest) and "drift" not in request.tags["serm/reason"]
    assert request.tags["serm/reason"].startswith(f"{MIN_UNLABELLED} unlabelled")


def test_schedule_runs_every_two_weeks_unless_a_run_already_did(home):
    with instance_for_test() as instance:
        now = datetime.now(timezone.utc)
        request = two_weekly_iteration(build_schedule_context(instance=instance, scheduled_execution_time=now))
        assert isinstance(request, RunRequest) and request.tags["serm/trigger"] == "schedule"

        # a sensor-requested retraining run recorded in the instance counts as this fortnight's iteration
        instance.create_run_for_job(defs.resolve_job_def(retrain_job.name), tags={"serm/trigger": "sensor"})
        skipped = two_weekly_iteration(build_schedule_context(instance=instance, scheduled_execution_time=now))
        assert isinstance(skipped, SkipReason) and "14 days" in skipped.skip_message
        later = now + timedelta(days=15)
        assert isinstance(two_weekly_iteration(build_schedule_context(instance=instance,
                                                                      scheduled_execution_time=later)), RunRequest)


def register_champion(home, training_set: str) -> str:
    """A real (tiny) model registered in the home's MLflow as champion, trained on ``training_set``."""
    from models.backbone import tiny_backbone
    from models.relevance import RelevanceModel
    from serm_dagster.registry import CHAMPION, Registry

    model, tokenizer = RelevanceModel.from_backbone(tiny_backbone(home / "tiny"))
    folder = model.save(home / "model_dir", tokenizer)
    registry = Registry.under(home)
    _, version = registry.log_model(folder, run_name="test", params={}, metrics={})
    registry.tag_version(version, {"training_set": training_set})
    registry.set_alias(CHAMPION, version)
    return version


def test_retraining_sensor_requests_a_run_for_labels_the_champion_has_not_seen(home):
    store = DeltaStore(home / "lakehouse")
    version = register_champion(home, "iter001-abcdef0123")
    write_mined(store, 2, 10)
    # iteration 2 is annotated, so the mined samples do not ask; its labels are newer than the champion's
    store.write("gold/agent_labels", pa.table({"iteration": [2], "status": ["decided"]}), lineage={})
    labels = pa.table({"iteration": [1] * 50 + [2] * (MIN_NEW_LABELS - 1), "label": [1] * (49 + MIN_NEW_LABELS)})
    store.write("gold/consensus_labels", labels, lineage={})
    skipped = evaluate(home)
    assert isinstance(skipped, SkipReason) and f"{MIN_NEW_LABELS - 1} accepted labels newer" in skipped.skip_message
    more = pa.table({"iteration": [1] * 50 + [2] * MIN_NEW_LABELS, "label": [1] * (50 + MIN_NEW_LABELS)})
    store.write("gold/consensus_labels", more, lineage={})
    request = evaluate(home)
    assert isinstance(request, RunRequest)
    assert request.tags["serm/reason"] == (f"{MIN_NEW_LABELS} accepted labels newer than champion v{version}'s "
                                           "training set iter001-abcdef0123")


def test_relevance_model_materializes_when_its_training_set_changes():
    """The automation condition (eager) on models/relevance_model, evaluated with Dagster's own helper."""
    from dagster import AssetKey, AssetMaterialization, evaluate_automation_conditions

    with instance_for_test() as instance:
        first = evaluate_automation_conditions(defs=defs, instance=instance)
        relevance = AssetKey(["models", "relevance_model"])
        assert first.get_num_requested(relevance) == 0
        instance.report_runless_asset_event(AssetMaterialization(AssetKey(["gold", "training_sets"])))
        second = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert second.get_num_requested(relevance) == 1
        third = evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
        assert third.get_num_requested(relevance) == 0  # requested once, not again until the inputs change


def _failed_run(instance, check_passes: bool, asset_fails: bool = False):
    """A real run of a stand-in evaluations asset whose blocking check has the promotion check's name."""
    from dagster import AssetCheckResult, asset, asset_check, materialize

    from assets.evaluation import PROMOTION_CHECK

    @asset(name="evaluations")
    def stand_in():
        if asset_fails:
            raise RuntimeError("the evaluation itself broke")

    @asset_check(asset=stand_in, name=PROMOTION_CHECK, blocking=True)
    def check():
        return AssetCheckResult(passed=check_passes)

    @asset(deps=[stand_in])
    def downstream():
        pass

    return materialize([stand_in, check, downstream], instance=instance, raise_on_error=False)


def test_a_rejected_challenger_is_recorded_by_the_run_failure_sensor():
    from dagster import DagsterEventType, build_run_status_sensor_context

    from serm_dagster.jobs import record_iteration_job
    from serm_dagster.sensors import rejected_challenger_sensor

    with instance_for_test() as instance:
        def evaluate_failure(result):
            failure = next(e for e in instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_FAILURE))
            context = build_run_status_sensor_context(
                sensor_name=rejected_challenger_sensor.name, dagster_instance=instance,
                dagster_run=instance.get_run_by_id(result.run_id), dagster_event=failure.dagster_event,
            ).for_run_failure()
            return rejected_challenger_sensor(context)

        rejected = _failed_run(instance, check_passes=False)
        assert not rejected.success
        request = evaluate_failure(rejected)
        assert isinstance(request, RunRequest) and request.run_key == f"record-{rejected.run_id}"
        assert "challenger rejected" in request.tags["serm/reason"]
        assert rejected_challenger_sensor.job_name == record_iteration_job.name

        broken = _failed_run(instance, check_passes=True, asset_fails=True)
        assert isinstance(evaluate_failure(broken), SkipReason)  # a real failure is not recorded as an outcome

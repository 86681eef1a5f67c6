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
    resources = {"lakehouse": LakehouseResource(home=str(home)), "mlflow_resource": MlflowResource()}
    with instance_for_test() as instance:
        now = datetime.now(timezone.utc)

        def tick(when):
            # closed after each tick: a context left open keeps its resources, and Dagster's current defs-state
            # storage, pointing at this test's instance after it is gone
            with build_schedule_context(instance=instance, scheduled_execution_time=when,
                                        resources=resources) as context:
                return two_weekly_iteration(context)

        skipped = tick(now)
        assert isinstance(skipped, SkipReason) and "no champion" in skipped.skip_message  # nothing to mine with
        register_champion(home, "iter000-seed")
        request = tick(now)
        assert isinstance(request, RunRequest) and request.tags["serm/trigger"] == "schedule"

        # a sensor-requested retraining run recorded in the instance counts as this fortnight's iteration
        run = instance.create_run_for_job(defs.resolve_job_def(retrain_job.name), tags={"serm/trigger": "sensor"})
        skipped = tick(now)
        assert isinstance(skipped, SkipReason) and "14 days" in skipped.skip_message
        busy = tick(now + timedelta(days=15))  # that run is still queued (never started): no second one
        assert isinstance(busy, SkipReason) and f"retrain_job run {run.run_id[:8]}" in busy.skip_message
        instance.report_run_failed(run)
        assert isinstance(tick(now + timedelta(days=15)), RunRequest)


def register_champion(home, training_set: str, alias: str = "champion") -> str:
    """A real (tiny) model registered in the home's MLflow as champion (or ``alias``), trained on ``training_set``."""
    from models.backbone import tiny_backbone
    from models.relevance import RelevanceModel
    from serm_dagster.registry import CHAMPION, Registry

    model, tokenizer = RelevanceModel.from_backbone(tiny_backbone(home / "tiny"))
    folder = model.save(home / "model_dir", tokenizer)
    registry = Registry.under(home)
    _, version = registry.log_model(folder, run_name="test", params={}, metrics={})
    registry.tag_version(version, {"training_set": training_set})
    registry.set_alias(alias or CHAMPION, version)
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
    # a challenger trained on those labels lost its promotion: retraining on them again would only repeat it
    tried = register_champion(home, "iter002-0123abcdef", alias="challenger")
    skipped = evaluate(home)
    assert isinstance(skipped, SkipReason)
    assert f"challenger v{tried} was trained on them (iter002-0123abcdef) and not promoted" in skipped.skip_message


def test_the_drift_report_is_requested_once_after_new_days_are_ingested():
    """The automation condition on gold/drift_reports, evaluated with Dagster's own helper: requested after an
    ingestion of days, not while one still runs, and once."""
    from dagster import AssetKey, AssetMaterialization, evaluate_automation_conditions

    from serm_dagster.sensors import automation_condition_sensor

    drift = AssetKey(["gold", "drift_reports"])
    assert automation_condition_sensor.asset_selection.resolve(defs.resolve_asset_graph()) == {drift}
    with instance_for_test() as instance:
        first = evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0  # nothing ingested, and nothing else is automated
        for day in ("2026-01-03", "2026-01-04"):
            instance.report_runless_asset_event(AssetMaterialization(AssetKey(["bronze", "query_logs"]), partition=day))
        second = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert second.get_num_requested(drift) == 1 and second.total_requested == 1  # one report for both days
        third = evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
        assert third.get_num_requested(drift) == 0  # requested once, not again until new days come
        instance.report_runless_asset_event(AssetMaterialization(AssetKey(["bronze", "judgments"])))
        fourth = evaluate_automation_conditions(defs=defs, instance=instance, cursor=third.cursor)
        assert fourth.get_num_requested(drift) == 0  # judgments alone do not ask (with no logs it could not run)


def test_drift_sensor_requests_an_iteration_when_the_newest_window_drifted(home):
    from serm_dagster.jobs import iteration_job
    from serm_dagster.sensors import drift_sensor

    store = DeltaStore(home / "lakehouse")

    def evaluate_drift():
        context = build_sensor_context(instance=DagsterInstance.ephemeral(),
                                       resources={"lakehouse": LakehouseResource(home=str(home)),
                                                  "mlflow_resource": MlflowResource()})
        return drift_sensor(context)

    def report(drifted: bool, end: date):
        store.write("gold/drift_reports", pa.table({"window_end": [end], "signal": ["embedding"],
                                                    "overall_drifted": [drifted], "reason": ["embedding moved"]}),
                    lineage={"window": [str(end - timedelta(days=2)), str(end)]})

    assert "no drift report" in evaluate_drift().skip_message
    report(False, date(2026, 1, 10))
    assert evaluate_drift().skip_message == "no drift in 2026-01-08..2026-01-10"
    report(True, date(2026, 1, 10))
    assert "no champion" in evaluate_drift().skip_message
    register_champion(home, "iter000-seed")
    request = evaluate_drift()
    assert isinstance(request, RunRequest) and drift_sensor.job_name == iteration_job.name
    assert request.tags["serm/reason"] == "drift in 2026-01-08..2026-01-10: embedding moved"
    assert request.tags["serm/trigger"] == "sensor"
    # once the window is mined (by the iteration the request started), the same report asks for nothing
    store.write("gold/mined_samples", pa.table({"iteration": [1], "window_end": [date(2026, 1, 10)]}),
                lineage={"iteration": 1})
    assert "already mined" in evaluate_drift().skip_message


def test_seed_model_sensor_trains_the_first_model_once_judgments_and_logs_are_in(home):
    from serm_dagster.sensors import seed_model_sensor

    store = DeltaStore(home / "lakehouse")

    def evaluate_seed():
        context = build_sensor_context(instance=DagsterInstance.ephemeral(),
                                       resources={"lakehouse": LakehouseResource(home=str(home)),
                                                  "mlflow_resource": MlflowResource()})
        return seed_model_sensor(context)

    assert "no judgments ingested" in evaluate_seed().skip_message
    store.write("bronze/judgments", pa.table({"split": ["test"]}), lineage={})
    assert "no seed judgments" in evaluate_seed().skip_message
    store.write("bronze/judgments", pa.table({"split": ["seed", "seed", "test"]}), lineage={})
    assert "no query logs" in evaluate_seed().skip_message
    store.write("bronze/query_logs", pa.table({"date": [date(2026, 1, 1)]}), lineage={})
    request = evaluate_seed()
    assert isinstance(request, RunRequest)
    assert request.tags["serm/reason"] == "no champion yet: the seed model on 2 seed judgments"
    register_champion(home, "iter000-seed")
    assert evaluate_seed().skip_message == "the champion is v1"


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

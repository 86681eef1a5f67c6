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
from serm_dagster.resources import LakehouseResource
from serm_dagster.sensors import MIN_UNLABELLED, retraining_sensor, two_weekly_iteration
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
                                   resources={"lakehouse": LakehouseResource(home=str(home))})
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

    # once the iteration is labelled there is nothing to retrain on
    store.write("gold/consensus_labels", pa.table({"iteration": [1], "label": [2]}), lineage={})
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

"""Sensors and schedules: new landing files request ingestion; drift and mined samples request an iteration."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

from dagster import (
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    schedule,
    sensor,
)

from assets.evaluation import PROMOTION_CHECK
from assets.mining import annotated_iterations
from serm_dagster.jobs import ingest_daily_job, ingest_reference_job, iteration_job, record_iteration_job, retrain_job
from serm_dagster.panel import choose_panel, panel_tags
from serm_dagster.partitions import daily_partitions
from serm_dagster.registry import CHAMPION
from serm_dagster.resources import LakehouseResource, MlflowResource
from serm_dagster.settings import SermPaths
from spark_jobs.ingest import home_day, landing_index
from spark_jobs.landing import LandingFileError, file_fingerprints


def _digest(items) -> str:
    return hashlib.sha1(json.dumps(items, sort_keys=True).encode()).hexdigest()[:12]


@sensor(jobs=[ingest_daily_job, ingest_reference_job], minimum_interval_seconds=30,
        description="Watches SERM_HOME/landing: new or changed files request ingestion of their days.")
def landing_sensor(context: SensorEvaluationContext, lakehouse: LakehouseResource):
    paths = lakehouse.paths
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    index = landing_index(paths.landing, paths.state / "landing_index.json")
    current = {path: entry["fingerprint"] for path, entry in index.items()}
    reference = file_fingerprints((paths.landing_catalog, paths.landing_judgments, paths.landing_knowledge))
    changed = [p for p in index if seen.get(p) != current[p]]
    changed_reference = sorted(p for p in reference if seen.get(p) != reference[p])

    valid_days = set(daily_partitions.get_partition_keys(dynamic_partitions_store=context.instance))
    days: dict[str, list[str]] = {}
    for path in changed:
        try:
            owned = set(index[path]["days"]) | {home_day(path, index[path])}
        except LandingFileError as exc:
            context.log.warning(str(exc))
            continue
        for day in owned:
            days.setdefault(day, []).append(f"{path}:{current[path]}")
    requests = []
    for day in sorted(days):
        if day not in valid_days:
            context.log.warning(f"{day}: outside the daily partitions (start {daily_partitions.start:%Y-%m-%d}); "
                                "set SERM_PARTITIONS_START earlier to ingest it")
            continue
        requests.append(RunRequest(run_key=f"{day}:{_digest(days[day])}", job_name=ingest_daily_job.name,
                                   partition_key=day, tags={"serm/reason": "new landing files"}))
    if changed_reference:
        requests.append(RunRequest(
            run_key=f"reference:{_digest([(p, reference[p]) for p in changed_reference])}",
            job_name=ingest_reference_job.name, tags={"serm/reason": "new catalogue, judgment or glossary files"}))
    cursor = json.dumps({**current, **reference}, sort_keys=True)
    if not requests:
        return SensorResult(skip_reason=SkipReason("no new landing files"), cursor=cursor)
    return SensorResult(run_requests=requests, cursor=cursor)


RETRAIN_EVERY = timedelta(days=14)


def retraining_reason(store) -> tuple[str | None, str | None]:
    """(run key, reason) when the newest mined iteration has no labels yet and the stream drifted,
    or there are enough unlabelled mined samples; (None, why not) otherwise."""
    if not store.exists("gold/mined_samples"):
        return None, "nothing mined yet"
    mined_lineage = store.lineage("gold/mined_samples")
    iteration = mined_lineage.get("iteration")
    if iteration is None or iteration in annotated_iterations(store):
        return None, f"iteration {iteration} is already labelled"
    mined = store.count_rows("gold/mined_samples")
    drifted = False
    if store.exists("gold/drift_reports"):
        drift = store.read_arrow("gold/drift_reports").to_pandas()
        newest = drift[drift["window_end"] == drift["window_end"].max()]
        drifted = bool(newest["overall_drifted"].any())
    if not drifted and mined < MIN_UNLABELLED:
        return None, f"no drift and only {mined} unlabelled mined samples (< {MIN_UNLABELLED})"
    reason = ("drift in the newest window" if drifted else "") + \
        (" and " if drifted else "") + f"{mined} unlabelled mined samples (iteration {iteration})"
    return f"iteration-{iteration}-v{store.version('gold/mined_samples')}", reason


MIN_UNLABELLED = 200
MIN_NEW_LABELS = 200


def new_labels_reason(store, registry) -> tuple[str | None, str | None]:
    """(run key, reason) when the accepted labels of iterations the champion has not trained on reach
    ``MIN_NEW_LABELS`` (e.g. labels that arrived after a rejected or failed retraining)."""
    if not store.exists("gold/consensus_labels"):
        return None, "no accepted labels yet"
    champion = registry.alias_version(CHAMPION)
    if champion is None:
        return None, "no champion model yet"
    trained_on = registry.version_tags(champion).get("training_set", "iter000")
    seen = int(trained_on[4:7]) if trained_on.startswith("iter") and trained_on[4:7].isdigit() else 0
    iterations = store.read_arrow("gold/consensus_labels", columns=["iteration"]).column("iteration").to_pylist()
    new = sum(1 for i in iterations if i > seen)
    if new < MIN_NEW_LABELS:
        return None, f"{new} accepted labels newer than the champion's training set (< {MIN_NEW_LABELS})"
    return (f"labels-after-{seen}-v{store.version('gold/consensus_labels')}",
            f"{new} accepted labels newer than champion v{champion}'s training set {trained_on}")


@sensor(job=retrain_job, minimum_interval_seconds=300,
        description="Requests retraining (label the newest mined samples, retrain, evaluate, promote) when the drift "
                    "report says the stream moved or enough mined samples wait for labels, or when enough accepted "
                    "labels are newer than the champion's training set; the reason is in the run's tags.")
def retraining_sensor(context: SensorEvaluationContext, lakehouse: LakehouseResource,
                      mlflow_resource: MlflowResource):
    run_key, reason = retraining_reason(lakehouse.store)
    if run_key is None:
        labels_key, labels_reason = new_labels_reason(lakehouse.store, mlflow_resource.registry(lakehouse.paths.home))
        if labels_key is None:
            return SkipReason(f"{reason}; {labels_reason}")
        run_key, reason = labels_key, labels_reason
    panel = choose_panel(home=lakehouse.paths.home)  # what the run's annotator_settings resolve to
    return RunRequest(run_key=run_key, tags={"serm/reason": reason, "serm/trigger": "sensor",
                                             **panel_tags(panel, "agents", lakehouse.paths)})


@schedule(job=iteration_job, cron_schedule="0 3 * * 1", execution_timezone="UTC",
          description="Every two weeks (checked each Monday), an iteration runs unless one already ran in the last "
                      "14 days, e.g. because the retraining sensor requested it.")
def two_weekly_iteration(context: ScheduleEvaluationContext):
    since = (context.scheduled_execution_time or datetime.now(timezone.utc)) - RETRAIN_EVERY
    recent = [record for job in (iteration_job, retrain_job)
              for record in context.instance.get_run_records(RunsFilter(job_name=job.name, created_after=since),
                                                             limit=1)]
    if recent:
        last = max(r.create_timestamp for r in recent)
        return SkipReason(f"an iteration or retraining ran on {last:%Y-%m-%d}; the next is due 14 days later")
    paths = SermPaths.from_env()
    return RunRequest(tags={"serm/reason": "two-weekly cadence", "serm/trigger": "schedule",
                            **panel_tags(choose_panel(home=paths.home), "agents", paths)})


def rejected_only(failed_step_keys: list[str]) -> bool:
    """Whether a run failed only because the blocking promotion check rejected its challenger."""
    return bool(failed_step_keys) and all(PROMOTION_CHECK in key for key in failed_step_keys)


@run_failure_sensor(monitored_jobs=[retrain_job, iteration_job], request_job=record_iteration_job,
                    default_status=DefaultSensorStatus.RUNNING,
                    description="A retraining or iteration run stopped by the promotion check (the challenger lost) "
                                "is an outcome, not an error: this records it in gold/iterations.")
def rejected_challenger_sensor(context: RunFailureSensorContext):
    failed = [event.step_key for event in context.get_step_failure_events()]
    if not rejected_only(failed):
        return SkipReason(f"run {context.dagster_run.run_id[:8]} failed in {failed}: not a rejected challenger")
    return RunRequest(run_key=f"record-{context.dagster_run.run_id}",
                      tags={"serm/reason": f"challenger rejected in run {context.dagster_run.run_id[:8]}",
                            "serm/trigger": "sensor"})

"""Sensors, the automation sensor and the schedule: what runs the loop unattended.

New landing files -> ``landing_sensor`` (ingestion) -> ``automation_condition_sensor`` (the drift report,
by ``drift_reports``' automation condition) -> ``drift_sensor`` (``iteration_job`` when the report says
drifted) or ``two_weekly_iteration`` (when it comes due) -> mining, annotation, training mix, retraining,
evaluation, promotion in that run. ``seed_model_sensor`` trains the first model; ``retraining_sensor``
resumes what a mining-only or failed run left; ``rejected_challenger_sensor`` records a lost promotion.
Every request carries its reason (``serm/reason``) and who asked (``serm/trigger``) in the run's tags.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DagsterRunStatus,
    DefaultScheduleStatus,
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
from assets.ingest import BRONZE_JUDGMENTS, BRONZE_QUERY_LOGS
from assets.mining import DRIFT_REPORTS, MINED_SAMPLES, annotated_iterations, drift_reports
from serm_dagster.jobs import (
    ingest_daily_job,
    ingest_reference_job,
    iteration_job,
    mining_job,
    record_iteration_job,
    retrain_job,
    seed_model_job,
)
from serm_dagster.panel import choose_panel, panel_tags
from serm_dagster.partitions import daily_partitions
from serm_dagster.registry import CHALLENGER, CHAMPION
from serm_dagster.resources import LakehouseResource, MlflowResource
from serm_dagster.tables import table_name
from spark_jobs.ingest import home_day, landing_index
from spark_jobs.landing import LandingFileError, file_fingerprints


def _digest(items) -> str:
    return hashlib.sha1(json.dumps(items, sort_keys=True).encode()).hexdigest()[:12]


SENSOR = "sensor"  # serm/trigger of a run a sensor requested


@sensor(jobs=[ingest_daily_job, ingest_reference_job], minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
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
                                   partition_key=day, tags={"serm/reason": f"new landing files for {day}",
                                                                         "serm/trigger": SENSOR}))
    if changed_reference:
        requests.append(RunRequest(
            run_key=f"reference:{_digest([(p, reference[p]) for p in changed_reference])}",
            job_name=ingest_reference_job.name, tags={"serm/reason": "new catalogue, judgment or glossary files",
                                                     "serm/trigger": SENSOR}))
    cursor = json.dumps({**current, **reference}, sort_keys=True)
    if not requests:
        return SensorResult(skip_reason=SkipReason("no new landing files"), cursor=cursor)
    return SensorResult(run_requests=requests, cursor=cursor)


RETRAIN_EVERY = timedelta(days=14)
MIN_UNLABELLED = 200
MIN_NEW_LABELS = 200
# the jobs of the loop: while one of them runs, no sensor or the schedule requests another
LOOP_JOBS = (seed_model_job, mining_job, retrain_job, iteration_job, record_iteration_job)
ACTIVE = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def loop_run_active(instance) -> str | None:
    """Why not to request a loop run now: one of ``LOOP_JOBS`` is queued or running (two at once would train
    and promote over each other); None when none is."""
    for job in LOOP_JOBS:
        for record in instance.get_run_records(RunsFilter(job_name=job.name, statuses=ACTIVE), limit=1):
            return f"{job.name} run {record.dagster_run.run_id[:8]} is still {record.dagster_run.status.value.lower()}"
    return None


def _loop_tags(lakehouse: LakehouseResource, reason: str, trigger: str = SENSOR) -> dict:
    panel = choose_panel(home=lakehouse.paths.home)  # what the run's annotator_settings resolve to
    return {"serm/reason": reason, "serm/trigger": trigger, **panel_tags(panel, "agents", lakehouse.paths)}


automation_condition_sensor = AutomationConditionSensorDefinition(
    "automation_condition_sensor", target=AssetSelection.assets(drift_reports),
    default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
    run_tags={"serm/trigger": "automation", "serm/reason": "new days of query logs ingested: the drift report of the "
              "newest window"},
    description="Evaluates the assets' automation conditions: gold/drift_reports after each ingestion of new days "
                "(once the ingestion runs are done). Its evaluations, with the condition that held, are in the "
                "UI's Automation tab.")


def seed_model_reason(store, registry) -> tuple[str | None, str]:
    """(run key, reason) when there is no champion yet and the seed judgments and some query logs are ingested
    (the seed model's evaluation is as of the newest day); (None, why not) otherwise."""
    champion = registry.alias_version(CHAMPION)
    if champion is not None:
        return None, f"the champion is v{champion}"
    judgments, logs = table_name(BRONZE_JUDGMENTS), table_name(BRONZE_QUERY_LOGS)
    if not store.exists(judgments):
        return None, "no judgments ingested yet: add seed and test judgments to landing/judgments/"
    splits = store.read_arrow(judgments, columns=["split"]).column("split").to_pylist()
    seeds = splits.count("seed")
    if not seeds:
        return None, "no seed judgments (split=seed) in bronze/judgments: add them to landing/judgments/"
    if not store.exists(logs) or not store.count_rows(logs):
        return None, "no query logs ingested yet: add logs to landing/logs/"
    return (f"seed-judgments-v{store.version(judgments)}",
            f"no champion yet: the seed model on {seeds} seed judgments")


@sensor(job=seed_model_job, minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING,
        description="Cold start: when there is no champion and the seed judgments and some logs are ingested, "
                    "trains, registers and evaluates the seed model (it becomes the first champion).")
def seed_model_sensor(context: SensorEvaluationContext, lakehouse: LakehouseResource,
                      mlflow_resource: MlflowResource):
    run_key, reason = seed_model_reason(lakehouse.store, mlflow_resource.registry(lakehouse.paths.home))
    busy = loop_run_active(context.instance) if run_key else None
    if run_key is None or busy:
        return SkipReason(busy or reason)
    return RunRequest(run_key=run_key, tags=_loop_tags(lakehouse, reason))


def drift_reason(store, registry) -> tuple[str | None, str]:
    """(run key, reason) when the newest drift report (the last one written) says its window drifted, that window
    is not mined yet and a champion can mine it; (None, why not) otherwise."""
    name = table_name(DRIFT_REPORTS)
    if not store.exists(name):
        return None, "no drift report yet"
    start, end = store.lineage(name).get("window") or (None, None)
    report = store.read_arrow(name).to_pandas()
    rows = report[report["window_end"].astype(str) == str(end)]
    if rows.empty or not rows["overall_drifted"].any():
        return None, f"no drift in {start}..{end}"
    if registry.alias_version(CHAMPION) is None:
        return None, f"drift in {start}..{end}, but no champion to mine with yet"
    mined = table_name(MINED_SAMPLES)
    if store.exists(mined):
        newest = max(store.read_arrow(mined, columns=["window_end"]).column("window_end").to_pylist(), default=None)
        if newest is not None and str(newest) >= str(end):
            return None, f"drift in {start}..{end}, already mined (up to {newest})"
    return f"drift-{end}-v{store.version(name)}", f"drift in {start}..{end}: {rows['reason'].iat[0]}"


@sensor(job=iteration_job, minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING,
        description="After each drift report: when it says the newest window drifted and that window is not mined "
                    "yet, requests an iteration over it (drift, mining, annotation, training mix, retraining, "
                    "evaluation, promotion); the report's reason is in the run's tags.")
def drift_sensor(context: SensorEvaluationContext, lakehouse: LakehouseResource, mlflow_resource: MlflowResource):
    run_key, reason = drift_reason(lakehouse.store, mlflow_resource.registry(lakehouse.paths.home))
    busy = loop_run_active(context.instance) if run_key else None
    if run_key is None or busy:
        return SkipReason(busy or reason)
    return RunRequest(run_key=run_key, tags=_loop_tags(lakehouse, reason))


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


def _trained_on(registry, version: str | None) -> tuple[int, str]:
    """(newest iteration of labels, training set name) a registered version was trained on."""
    if version is None:
        return 0, ""
    name = registry.version_tags(version).get("training_set", "iter000")
    return (int(name[4:7]) if name.startswith("iter") and name[4:7].isdigit() else 0), name


def new_labels_reason(store, registry) -> tuple[str | None, str | None]:
    """(run key, reason) when the accepted labels of iterations the champion has not trained on reach
    ``MIN_NEW_LABELS`` (e.g. labels that arrived after a failed retraining), unless the challenger already
    trained on them (and lost: retraining on the same labels would only repeat it)."""
    if not store.exists("gold/consensus_labels"):
        return None, "no accepted labels yet"
    champion = registry.alias_version(CHAMPION)
    if champion is None:
        return None, "no champion model yet"
    seen, trained_on = _trained_on(registry, champion)
    iterations = store.read_arrow("gold/consensus_labels", columns=["iteration"]).column("iteration").to_pylist()
    new = sum(1 for i in iterations if i > seen)
    if new < MIN_NEW_LABELS:
        return None, f"{new} accepted labels newer than the champion's training set (< {MIN_NEW_LABELS})"
    challenger = registry.alias_version(CHALLENGER)
    tried, tried_on = _trained_on(registry, challenger if challenger != champion else None)
    if tried >= max(iterations):
        return None, f"challenger v{challenger} was trained on them ({tried_on}) and not promoted"
    return (f"labels-after-{seen}-v{store.version('gold/consensus_labels')}",
            f"{new} accepted labels newer than champion v{champion}'s training set {trained_on}")


@sensor(job=retrain_job, minimum_interval_seconds=300, default_status=DefaultSensorStatus.RUNNING,
        description="Resumes what an iteration left (a mining-only or failed run): requests retraining (label the "
                    "newest mined samples, retrain, evaluate, promote) when the drift report says the stream moved "
                    "or enough mined samples wait for labels, or when enough accepted labels are newer than the "
                    "champion's training set and no challenger tried them; the reason is in the run's tags.")
def retraining_sensor(context: SensorEvaluationContext, lakehouse: LakehouseResource,
                      mlflow_resource: MlflowResource):
    run_key, reason = retraining_reason(lakehouse.store)
    if run_key is None:
        labels_key, labels_reason = new_labels_reason(lakehouse.store, mlflow_resource.registry(lakehouse.paths.home))
        if labels_key is None:
            return SkipReason(f"{reason}; {labels_reason}")
        run_key, reason = labels_key, labels_reason
    busy = loop_run_active(context.instance)
    if busy:
        return SkipReason(busy)
    return RunRequest(run_key=run_key, tags=_loop_tags(lakehouse, reason))


@schedule(job=iteration_job, cron_schedule="0 3 * * 1", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.RUNNING,
          description="Every two weeks (checked each Monday), an iteration runs unless one already ran in the last "
                      "14 days, e.g. because the drift or retraining sensor requested it, or there is no champion "
                      "yet to mine with.")
def two_weekly_iteration(context: ScheduleEvaluationContext, lakehouse: LakehouseResource,
                         mlflow_resource: MlflowResource):
    since = (context.scheduled_execution_time or datetime.now(timezone.utc)) - RETRAIN_EVERY
    recent = [record for job in (iteration_job, retrain_job)
              for record in context.instance.get_run_records(RunsFilter(job_name=job.name, created_after=since),
                                                             limit=1)]
    if recent:
        last = max(r.create_timestamp for r in recent)
        return SkipReason(f"an iteration or retraining ran on {last:%Y-%m-%d}; the next is due 14 days later")
    if mlflow_resource.registry(lakehouse.paths.home).alias_version(CHAMPION) is None:
        return SkipReason("no champion to mine with yet (the seed_model_sensor trains the seed model)")
    busy = loop_run_active(context.instance)
    if busy:
        return SkipReason(busy)
    return RunRequest(tags=_loop_tags(lakehouse, "two-weekly cadence", trigger="schedule"))


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
                            "serm/trigger": SENSOR})

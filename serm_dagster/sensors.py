"""Sensors: new landing files request the ingestion runs for their days."""

from __future__ import annotations

import hashlib
import json

from dagster import RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from serm_dagster.jobs import ingest_daily_job, ingest_reference_job
from serm_dagster.partitions import daily_partitions
from serm_dagster.resources import LakehouseResource
from spark_jobs.ingest import home_day, landing_index
from spark_jobs.landing import LandingFileError, landing_files


def _digest(items) -> str:
    return hashlib.sha1(json.dumps(items, sort_keys=True).encode()).hexdigest()[:12]


@sensor(jobs=[ingest_daily_job, ingest_reference_job], minimum_interval_seconds=30,
        description="Watches SERM_HOME/landing: new or changed files request ingestion of their days.")
def landing_sensor(context: SensorEvaluationContext, lakehouse: LakehouseResource):
    paths = lakehouse.paths
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    index = landing_index(paths.landing, paths.state / "landing_index.json")
    current = {path: entry["fingerprint"] for path, entry in index.items()}
    reference = {}
    for folder in (paths.landing_catalog, paths.landing_judgments):
        for path in landing_files(folder):
            stat = path.stat()
            reference[str(path)] = f"{stat.st_size}:{stat.st_mtime_ns}"
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
            job_name=ingest_reference_job.name, tags={"serm/reason": "new catalogue or judgment files"}))
    cursor = json.dumps({**current, **reference}, sort_keys=True)
    if not requests:
        return SensorResult(skip_reason=SkipReason("no new landing files"), cursor=cursor)
    return SensorResult(run_requests=requests, cursor=cursor)

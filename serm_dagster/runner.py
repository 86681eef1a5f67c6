"""Running the Definitions' jobs in process: what the command line and the replay start.

Every run is one of the named jobs (``serm_dagster.jobs``), so the schedule, the sensors and the UI see
the same history whoever started it: a run the command line starts is an ``iteration_job`` or an
``ingest_daily_job`` run like one the sensors start. A challenger the blocking promotion check rejects is
an outcome, not an error: as the run-failure sensor does for runs the daemon starts, ``run_job`` then
runs ``record_iteration_job`` (``rejected_only`` decides, in one place).
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Callable

from dagster import AssetKey, DagsterInstance, Definitions, ExecuteInProcessResult, materialize

from serm_dagster.definitions import all_assets, all_checks, default_resources
from serm_dagster.jobs import all_jobs, ingest_daily_job, ingest_reference_job, record_iteration_job
from serm_dagster.partitions import daily_partitions
from serm_dagster.sensors import rejected_only
from serm_dagster.settings import SermPaths
from spark_jobs.ingest import home_day, landing_index
from spark_jobs.landing import file_fingerprints

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# the replay's runs: a rejected challenger is an outcome, its failed check no error to print
SILENT = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


class RunFailed(RuntimeError):
    """A run that failed for another reason than a rejected challenger."""


def run_job(job, resources: dict, tags: dict | None = None, after_rejection: bool = False,
            run_config: dict = QUIET, partition_key: str | None = None) -> ExecuteInProcessResult:
    """Run one named job in process (of one day, ``partition_key``, for a partitioned one), recorded in the
    Dagster instance. With ``after_rejection``, a run that
    failed only because the promotion check rejected its challenger is followed by ``record_iteration_job``
    (returned instead); any other failure raises ``RunFailed``."""
    definitions = Definitions(assets=all_assets, asset_checks=all_checks, jobs=all_jobs, resources=resources)
    instance = DagsterInstance.get()

    def execute(chosen, run_tags, partition=None):
        return definitions.resolve_job_def(chosen.name).execute_in_process(
            instance=instance, tags=run_tags, run_config=run_config, raise_on_error=False, partition_key=partition)

    result = execute(job, tags or {}, partition_key)
    if result.success:
        return result
    failed = sorted({event.step_key for event in result.get_step_failure_events()})
    if after_rejection and rejected_only(failed):
        return execute(record_iteration_job, {**(tags or {}), "serm/reason": f"challenger rejected in run "
                                              f"{result.run_id[:8]}"})
    errors = "; ".join(f"{e.step_key}: {e.step_failure_data.error.message.strip()}"
                       for e in result.get_step_failure_events() if e.step_failure_data.error)
    raise RunFailed(f"{job.name} run {result.run_id} failed in {failed} ({errors}); see the Dagster UI or its "
                    f"event log")


def contiguous(days: list[str]) -> list[tuple[str, str]]:
    """Consecutive days grouped into (first, last) ranges, so each range is one Dagster run."""
    ranges: list[list[str]] = []
    for day in sorted(days):
        if ranges and date.fromisoformat(day) == date.fromisoformat(ranges[-1][1]) + timedelta(days=1):
            ranges[-1][1] = day
        else:
            ranges.append([day, day])
    return [(a, b) for a, b in ranges]


def landing_days(paths: SermPaths) -> list[str]:
    """Every day the log and UBI files of ``landing/`` hold rows for."""
    index = landing_index(paths.landing, paths.state / "landing_index.json")
    return sorted({d for path, entry in index.items() for d in [*entry["days"], home_day(path, entry)]})


def new_landing_days(paths: SermPaths) -> list[str]:
    """The days of the log and UBI files of ``landing/`` that are new or changed since ``ingest_landing`` last
    ingested every day they hold (``state/landing_ingested.json``)."""
    stamp = paths.state / "landing_ingested.json"
    seen = json.loads(stamp.read_text()) if stamp.exists() else {}
    index = landing_index(paths.landing, paths.state / "landing_index.json")
    return sorted({d for path, entry in index.items() if seen.get(path) != entry["fingerprint"]
                   for d in [*entry["days"], home_day(path, entry)]})


def _stamp_ingested(paths: SermPaths, days: list[str]) -> None:
    """Record the fingerprints of the landing files whose every day is now ingested."""
    stamp = paths.state / "landing_ingested.json"
    seen = json.loads(stamp.read_text()) if stamp.exists() else {}
    index = landing_index(paths.landing, paths.state / "landing_index.json")
    done = set(days)
    seen.update({path: entry["fingerprint"] for path, entry in index.items()
                 if {*entry["days"], home_day(path, entry)} <= done})
    stamp.write_text(json.dumps(seen, sort_keys=True))


def reference_fingerprint(paths: SermPaths) -> str:
    return json.dumps(file_fingerprints((paths.landing_catalog, paths.landing_judgments, paths.landing_knowledge)),
                      sort_keys=True)


def ingest_landing(paths: SermPaths, days: list[str] | None = None, echo: Callable[[str], None] = print,
                   reference_if_changed: bool = False, only_new: bool = False) -> dict:
    """Ingest every day found in landing/ (or only ``days``; with ``only_new`` only those of new or changed
    files, ``new_landing_days``): ``ingest_daily_job`` per range of consecutive days, and
    ``ingest_reference_job`` for the catalogue, judgments and glossary; with ``reference_if_changed`` the
    latter only when their files changed since it last ran (what ``serm evolve`` asks for each window)."""
    resources = default_resources(paths.home)
    wanted = [d for d in (new_landing_days(paths) if only_new else landing_days(paths)) if days is None or d in days]
    valid = set(daily_partitions.get_partition_keys())
    outside = [d for d in wanted if d not in valid]
    if outside:
        raise ValueError(f"days {outside[0]}..{outside[-1]} lie outside the daily partitions "
                         f"(start {daily_partitions.start:%Y-%m-%d}); set SERM_PARTITIONS_START")
    stamp, fingerprint = paths.state / "reference_ingested.json", reference_fingerprint(paths)
    if not (reference_if_changed and stamp.exists() and stamp.read_text() == fingerprint):
        reference = run_job(ingest_reference_job, resources, {"serm/reason": "catalogue, judgments and glossary"})
        stamp.write_text(fingerprint)
        echo(f"ingested catalogue, judgments and glossary (run {reference.run_id})")
    runs = []
    for first, last in contiguous(wanted):
        result = run_job(ingest_daily_job, resources, {"dagster/asset_partition_range_start": first,
                                                       "dagster/asset_partition_range_end": last,
                                                       "serm/reason": f"landing days {first}..{last}"})
        runs.append(result.run_id)
        echo(f"ingested days {first}..{last} (run {result.run_id})")
    _stamp_ingested(paths, wanted)
    return {"days": wanted, "runs": runs}


def materialize_assets(keys: list[AssetKey], resources: dict, tags: dict | None = None) -> ExecuteInProcessResult:
    """Materialize assets of the Definitions by key, in process, outside the named jobs: what the automation
    condition sensor launches (an asset run, with its run tags), and the report or a single table by hand."""
    return materialize([*all_assets, *all_checks], resources=resources, instance=DagsterInstance.get(),
                       selection=keys, tags=tags, raise_on_error=False, run_config=QUIET)


def materialize_selection(paths: SermPaths, selection: list[str], echo: Callable[[str], None] = print):
    """``materialize_assets`` by user-string keys in ``paths``' data folder; a failed check is said, a failed
    run raises ``RunFailed``."""
    result = materialize_assets([AssetKey.from_user_string(s) for s in selection], default_resources(paths.home))
    for check in result.get_asset_check_evaluations():
        if not check.passed:
            echo(f"check {check.check_name} on {check.asset_key.to_user_string()} did not pass: "
                 f"{ {k: v.value for k, v in check.metadata.items()} }")
    if not result.success:
        raise RunFailed(f"run {result.run_id} failed; see the Dagster UI or its event log")
    return result

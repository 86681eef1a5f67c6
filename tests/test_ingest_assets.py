"""Ingestion assets materialized in process against real Spark and real Delta tables."""

import json
import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance, build_sensor_context, materialize

from assets.ingest import ingest_catalog, ingest_judgments, ingest_query_logs, landing_assets, silver_impressions
from serm_dagster.checks import table_checks
from serm_dagster.definitions import asset_keys
from serm_dagster.resources import LakehouseResource, SparkResource
from serm_dagster.sensors import landing_sensor
from serm_dagster.storage import DeltaStore
from tests.conftest import write_logs_csv

DAILY = [ingest_query_logs, silver_impressions]
REFERENCE = [ingest_catalog, ingest_judgments]
ALL = [*landing_assets, *DAILY, *REFERENCE]
CHECKS = table_checks(asset_keys(ALL))
EXPORT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ubi" / "esci_ubi_sample.ndjson"


def day_rows(day: str, n: int, prefix: str = "r", bad: int = 0) -> list[str]:
    rows = [f"{prefix}{i},{day}T10:{i % 60:02d}:00Z,s{i % 3},red shoes,en,D{i % 4},{i % 4 + 1},{str(i % 2 == 0).lower()},"
            f"{1000 * i if i % 2 == 0 else ''}" for i in range(n)]
    rows += [f"{prefix}bad{i},{day}T11:00:00Z,s,red shoes,en,D1,0,true," for i in range(bad)]  # position 0
    return rows


@pytest.fixture()
def landed(home: Path) -> Path:
    landing = home / "landing"
    write_logs_csv(landing / "logs" / "2026-01-01.csv", day_rows("2026-01-01", 8, bad=2) + [day_rows("2026-01-01", 1)[0]])
    (landing / "logs" / "2026-01-02.jsonl").write_text("\n".join(json.dumps({
        "request_id": f"j{i}", "ts": 1767348000000 + i, "session_id": "s", "query": "Blue  Shoes", "language": "de",
        "doc_id": f"D{i % 2}", "position": i + 1, "clicked": i == 0, "dwell_ms": 5000 if i == 0 else None})
        for i in range(5)) + "\n")
    (landing / "catalog" / "catalog.csv").write_text(
        'doc_id,language,title,description,attributes\nD0,en,Red shoes,,"{""colour"": ""red""}"\n'
        'D1,en,Blue shoes,,\nD1,en,duplicate,,\nD2,en,,,\n')
    (landing / "judgments" / "judgments.csv").write_text(
        "query,doc_id,language,label,split,ts\nred shoes,D0,en,3,seed,\nred shoes,D1,en,1,test,2026-01-02\n"
        "red shoes,D2,en,9,seed,\n")
    return home


def _resources(home: Path) -> dict:
    return {"spark": SparkResource(), "lakehouse": LakehouseResource(home=str(home))}


def _run_days(home, first, last, instance=None):
    return materialize([*ALL, *CHECKS], resources=_resources(home), instance=instance, selection=DAILY,
                       tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last})


def test_ingest_two_days_into_bronze_silver_and_quarantine(landed, spark):
    instance = DagsterInstance.ephemeral()
    reference = materialize([*ALL, *CHECKS], resources=_resources(landed), instance=instance, selection=REFERENCE)
    assert reference.success
    result = _run_days(landed, "2026-01-01", "2026-01-02", instance)
    assert result.success
    store = DeltaStore(landed / "lakehouse")

    logs = store.read_arrow("bronze/query_logs").to_pandas()
    assert sorted(logs.groupby("date").size().tolist()) == [5, 8]
    quarantine = store.read_arrow("quarantine/query_logs").to_pandas()
    assert len(quarantine) == 3  # two bad positions and one duplicate request
    assert quarantine["reason"].str.contains("duplicate impression").sum() == 1
    assert quarantine["source_file"].str.endswith("2026-01-01.csv").all()
    assert store.count_rows("bronze/catalog") == 2 and store.count_rows("quarantine/catalog") == 2
    assert store.count_rows("bronze/judgments") == 2 and store.count_rows("quarantine/judgments") == 1

    silver = store.read_arrow("silver/impressions").to_pandas()
    blue = silver[silver["language"] == "de"]
    assert set(blue["query"]) == {"blue shoes"}  # normalized
    assert blue["impressions"].sum() == 5 and blue["clicks"].sum() == 1

    # every check passed: rows conserved, schemas valid
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    assert {c.check_name for c in checks} == {"rows_conserved", "schema_valid"}

    # lineage in the commit and in Dagster: run, asset, partitions, code version, upstream versions
    lineage = store.lineage("silver/impressions")
    assert lineage["dagster_run_id"] == result.run_id
    assert lineage["asset_key"] == "silver/impressions" and lineage["code_version"] == "2"
    assert lineage["partition_keys"] == ["2026-01-01", "2026-01-02"]
    assert lineage["upstream_versions"] == {"bronze/query_logs": store.version("bronze/query_logs")}
    materializations = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    silver_event = materializations["silver/impressions"].materialization
    assert silver_event.metadata["delta_version"].value == store.version("silver/impressions")
    assert silver_event.metadata["dagster/row_count"].value == len(silver)
    assert [c.name for c in silver_event.metadata["dagster/column_schema"].schema.columns][:3] == ["date", "query", "language"]
    assert silver_event.tags["dagster/data_version"] == str(store.version("silver/impressions"))


def test_rematerializing_a_day_replaces_exactly_that_day(landed, spark):
    assert _run_days(landed, "2026-01-01", "2026-01-02").success
    store = DeltaStore(landed / "lakehouse")
    write_logs_csv(landed / "landing" / "logs" / "2026-01-01.csv", day_rows("2026-01-01", 3, prefix="new"))
    for _ in range(2):  # twice: still no duplicates
        assert _run_days(landed, "2026-01-01", "2026-01-01").success
    logs = store.read_arrow("bronze/query_logs").to_pandas()
    day1 = logs[logs["date"].astype(str) == "2026-01-01"]
    assert sorted(day1["request_id"]) == ["new0", "new1", "new2"]
    assert (logs["date"].astype(str) == "2026-01-02").sum() == 5
    assert store.count_rows("quarantine/query_logs") == 0
    assert store.lineage("bronze/query_logs")["partition_key"] == "2026-01-01"


def test_an_unreadable_file_fails_the_run_and_changes_nothing(landed, spark):
    assert _run_days(landed, "2026-01-01", "2026-01-02").success
    store = DeltaStore(landed / "lakehouse")
    before = {t: store.version(t) for t in ("bronze/query_logs", "quarantine/query_logs", "silver/impressions")}
    bad = landed / "landing" / "logs" / "2026-01-02-extra.csv"
    bad.write_text("request_id,ts,query\nx,2026-01-02T00:00:00Z,q\n")
    result = materialize([*ALL], resources=_resources(landed), selection=DAILY, raise_on_error=False,
                         tags={"dagster/asset_partition_range_start": "2026-01-02",
                               "dagster/asset_partition_range_end": "2026-01-02"})
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.step_failure_data.error.cause or failure.step_failure_data.error.message)
    assert str(bad) in message and "missing required column(s)" in message
    assert {t: store.version(t) for t in before} == before


def test_sensor_requests_runs_for_new_landing_files(landed):
    instance = DagsterInstance.ephemeral()
    resources = {"lakehouse": LakehouseResource(home=str(landed))}
    first = landing_sensor(build_sensor_context(instance=instance, resources=resources))
    requested = sorted((r.job_name, r.partition_key) for r in first.run_requests)
    assert requested == [("ingest_daily_job", "2026-01-01"), ("ingest_daily_job", "2026-01-02"),
                         ("ingest_reference_job", None)]
    second = landing_sensor(build_sensor_context(instance=instance, resources=resources, cursor=first.cursor))
    assert not second.run_requests
    write_logs_csv(landed / "landing" / "logs" / "2026-01-03.csv", day_rows("2026-01-03", 2))
    third = landing_sensor(build_sensor_context(instance=instance, resources=resources, cursor=second.cursor))
    assert [(r.partition_key, r.tags["serm/reason"]) for r in third.run_requests] == [("2026-01-03", "new landing files for 2026-01-03")]


@pytest.mark.skipif(not EXPORT.exists(), reason=f"the shared UBI export is not at {EXPORT}")
def test_real_ubi_export_ingests_and_loses_nothing(home, spark):
    shutil.copy(EXPORT, home / "landing" / "ubi" / EXPORT.name)
    result = _run_days(home, "2024-12-10", "2024-12-15")
    assert result.success
    store = DeltaStore(home / "lakehouse")
    events = store.read_arrow("bronze/ubi_events").to_pandas()
    assert store.count_rows("quarantine/ubi_events") == 0
    # every document of those days, mapped or not, is in bronze/ubi_events
    from spark_jobs.ubi import read_ubi_file

    raw = read_ubi_file(EXPORT)
    days = raw["timestamp"].str.slice(0, 10)
    assert len(events) == int(days.between("2024-12-10", "2024-12-15").sum())
    # impressions and clicks map to query logs; queries and any other action stay countable, unmapped
    in_days = raw[days.between("2024-12-10", "2024-12-15")]
    mappable = in_days["action_name"].isin(["impression", "click"]) & in_days["object_id"].notna()
    assert (events["maps_to"] == "query_logs").sum() == int(mappable.sum())
    assert (events["kind"] == "query").sum() == int((in_days["kind"] == "query").sum()) > 0
    logs = store.read_arrow("bronze/query_logs").to_pandas()
    quarantined = store.count_rows("quarantine/query_logs")
    checks = {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}
    assert checks[("bronze/query_logs", "rows_conserved")].passed
    assert len(logs) > 900 and logs["clicked"].sum() > 50
    assert checks[("bronze/query_logs", "rows_conserved")].metadata["rows_in"].value == len(logs) + quarantined

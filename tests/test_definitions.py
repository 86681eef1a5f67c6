"""All definitions load, every asset is described for the UI, and the whole graph matches its snapshot."""

import json
import os
from pathlib import Path

from dagster import Definitions

from serm_dagster.definitions import defs


def test_definitions_load():
    Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert repo.get_job("ingest_daily_job") and repo.get_job("ingest_reference_job")
    assert {s.name for s in repo.sensor_defs} >= {"landing_sensor"}


def test_every_asset_has_description_group_kinds_and_owners():
    graph = defs.get_repository_def().asset_graph
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, key
        assert node.group_name and node.group_name != "default", key
        assert node.kinds, key
        assert node.owners, key


def test_every_lakehouse_table_has_a_schema_check():
    graph = defs.get_repository_def().asset_graph
    checked = {check.asset_key.to_user_string() for check in graph.asset_check_keys if check.name == "schema_valid"}
    tables = {k.to_user_string() for k in graph.get_all_asset_keys() if k.path[0] not in ("landing", "models", "analytics")}
    assert tables <= checked


def test_lineage_runs_from_query_logs_to_the_models_without_cycles():
    from dagster import AssetKey

    graph = defs.get_repository_def().asset_graph
    order = graph.toposorted_asset_keys  # raises on a cycle
    assert order.index(AssetKey(["bronze", "query_logs"])) < order.index(AssetKey(["models", "relevance_model"]))
    upstream = graph.get_ancestor_asset_keys(AssetKey(["models", "relevance_model"]))
    assert {AssetKey(["bronze", "query_logs"]), AssetKey(["gold", "mined_samples"]),
            AssetKey(["gold", "consensus_labels"]), AssetKey(["gold", "training_sets"])} <= upstream
    for job in ("iteration_job", "retrain_job", "mining_job", "seed_model_job"):
        assert defs.resolve_job_def(job).asset_layer is not None


SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def definitions_snapshot() -> dict:
    """Every asset (deps, group, kinds, owners, code version, automation), check, job (the assets it runs),
    sensor and schedule of the Definitions, as plain sorted data."""
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    assets = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(k.to_user_string() for k in node.parent_keys), "group": node.group_name,
            "kinds": sorted(node.kinds), "owners": sorted(node.owners), "code_version": node.code_version,
            "automation": str(node.automation_condition.get_label() or type(node.automation_condition).__name__)
            if node.automation_condition else None,
            "partitioned": node.partitions_def is not None,
        }
    jobs = {job.name: sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)
            for job in repo.get_all_jobs() if not job.name.startswith("__")}
    return {
        "assets": assets,
        "checks": sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys),
        "jobs": jobs,
        "sensors": {s.name: {"jobs": sorted(t.job_name for t in s.targets), "default_status": s.default_status.value}
                    for s in repo.sensor_defs},
        "schedules": {s.name: {"job": s.job_name, "cron": s.cron_schedule, "default_status": s.default_status.value}
                      for s in repo.schedule_defs},
    }


def test_the_definitions_match_their_snapshot():
    """A change to an asset, check, job, sensor or schedule must be deliberate: update the snapshot with
    SERM_UPDATE_SNAPSHOTS=1 pytest tests/test_definitions.py, and review its diff."""
    current = definitions_snapshot()
    if os.environ.get("SERM_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    assert SNAPSHOT.exists(), "no snapshot yet: run with SERM_UPDATE_SNAPSHOTS=1"
    assert current == json.loads(SNAPSHOT.read_text()), "the definitions changed: review, then SERM_UPDATE_SNAPSHOTS=1"

"""All definitions load, and every asset is described for the UI."""

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

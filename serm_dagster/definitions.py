"""The one Definitions object: what `dagster dev` (via workspace.yaml) and the CLI load."""

from dagster import Definitions

from assets.ingest import ingest_assets
from serm_dagster.checks import table_checks
from serm_dagster.jobs import ingest_daily_job, ingest_reference_job
from serm_dagster.resources import LakehouseResource, SparkResource
from serm_dagster.sensors import landing_sensor


def _asset_keys(assets_defs) -> list:
    keys = []
    for item in assets_defs:
        keys.extend(getattr(item, "keys", None) or [getattr(item, "key")])
    return keys


defs = Definitions(
    assets=ingest_assets,
    asset_checks=table_checks(_asset_keys(ingest_assets)),
    jobs=[ingest_daily_job, ingest_reference_job],
    sensors=[landing_sensor],
    resources={"spark": SparkResource(), "lakehouse": LakehouseResource()},
)

"""The one Definitions object: what `dagster dev` (via workspace.yaml) and the CLI load."""

import os

from dagster import Definitions

from assets.analytics import analytics_assets
from assets.annotation import annotation_assets
from assets.comparison import comparison_assets
from assets.evaluation import evaluation_assets, evaluation_checks
from assets.ingest import ingest_assets
from assets.iterations import iteration_assets
from assets.mining import mining_assets
from assets.training import training_assets, training_checks
from serm_dagster.checks import table_checks
from serm_dagster.jobs import all_jobs
from serm_dagster.panel import Panel, choose_panel
from serm_dagster.resources import (
    LakehouseResource,
    MiningSettings,
    MlflowResource,
    ModelSettings,
    SparkResource,
)
from serm_dagster.sensors import (
    automation_condition_sensor,
    drift_sensor,
    landing_sensor,
    rejected_challenger_sensor,
    retraining_sensor,
    seed_model_sensor,
    two_weekly_iteration,
)
from serm_dagster.settings import SermPaths

all_assets = [*ingest_assets, *mining_assets, *annotation_assets, *training_assets, *evaluation_assets,
              *iteration_assets, *comparison_assets, *analytics_assets]


def asset_keys(assets_defs) -> list:
    keys = []
    for item in assets_defs:
        keys.extend(getattr(item, "keys", None) or [getattr(item, "key")])
    return keys


def default_resources(home: str | os.PathLike | None = None, panel: Panel | None = None,
                      strategy: str = "agents") -> dict:
    """Every resource, as the sensors, schedules, UI runs and the command line use them: the data folder
    ``home`` (default ``SERM_HOME``), the judge panel ``panel`` (default ``choose_panel``: ``SERM_PANEL``,
    else ``<home>/panel.yaml``, else AnnotatorSettings' defaults) with the annotator ``strategy``."""
    panel = panel or choose_panel(home=home)
    return {"spark": SparkResource(), "lakehouse": LakehouseResource(home=str(SermPaths.from_env(home).home)),
            "mlflow_resource": MlflowResource(), "model_settings": ModelSettings(), "mining_settings": MiningSettings(),
            "annotator_settings": panel.settings(strategy)}


all_checks = [*table_checks(asset_keys(all_assets)), *training_checks, *evaluation_checks]
# what runs the loop unattended (see serm_dagster/sensors.py): each on by default
all_sensors = [landing_sensor, automation_condition_sensor, seed_model_sensor, drift_sensor, retraining_sensor,
               rejected_challenger_sensor]

defs = Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=all_jobs,
    sensors=all_sensors,
    schedules=[two_weekly_iteration],
    resources=default_resources(),
)

"""Dagster resources: one SparkSession and the Delta lakehouse, both configured with defaults."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from serm_dagster.settings import SermPaths
from serm_dagster.storage import DeltaStore


LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def build_spark_session(
    master: str = "local[2]",
    app_name: str = "serm-lakehouse",
    ui_enabled: bool = False,
    shuffle_partitions: int = 4,
    log_level: str = "ERROR",
    conf: dict[str, str] | None = None,
):
    """A SparkSession for a local master, a cluster master, or a Spark Connect URL (``sc://``)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    builder = builder.remote(master) if master.startswith("sc://") else builder.master(master)
    settings = {
        "spark.ui.enabled": str(ui_enabled).lower(),
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
        # quiet start-up: no progress bars, no console log4j chatter below the chosen level
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
    }
    settings.update(conf or {})
    if master.startswith("sc://"):
        settings = {k: v for k, v in settings.items() if not k.startswith(("spark.ui", "spark.driver"))}
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    if not master.startswith("sc://"):
        session.sparkContext.setLogLevel(log_level)
    return session


class SparkResource(ConfigurableResource):
    """One SparkSession per process: ``local[2]`` by default, any master or ``sc://`` URL otherwise."""

    master: str = Field(default_factory=lambda: os.environ.get("SERM_SPARK_MASTER", "local[2]"))
    app_name: str = "serm-lakehouse"
    ui_enabled: bool = False
    shuffle_partitions: int = 4
    log_level: str = "ERROR"
    conf: dict[str, str] = Field(default_factory=dict)

    def get_session(self):
        return build_spark_session(self.master, self.app_name, self.ui_enabled, self.shuffle_partitions,
                                   self.log_level, self.conf)


class LakehouseResource(ConfigurableResource):
    """The data folder (``SERM_HOME``) and its Delta tables."""

    home: str = Field(default_factory=lambda: str(SermPaths.from_env().home))
    _paths: SermPaths | None = PrivateAttr(default=None)

    @property
    def paths(self) -> SermPaths:
        if self._paths is None:
            self._paths = SermPaths.from_env(self.home).ensure()
        return self._paths

    @property
    def store(self) -> DeltaStore:
        return DeltaStore(self.paths.lakehouse)

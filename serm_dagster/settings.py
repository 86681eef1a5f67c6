"""Where everything lives: one data folder, ``SERM_HOME`` (default ``./.serm``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".serm"


@dataclass(frozen=True)
class SermPaths:
    """The layout of ``SERM_HOME``; every component takes its folders from here."""

    home: Path

    @classmethod
    def from_env(cls, home: str | os.PathLike | None = None) -> "SermPaths":
        return cls(Path(home or os.environ.get("SERM_HOME") or DEFAULT_HOME).expanduser().resolve())

    @property
    def lakehouse(self) -> Path:
        return self.home / "lakehouse"

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def landing_logs(self) -> Path:
        return self.landing / "logs"

    @property
    def landing_ubi(self) -> Path:
        return self.landing / "ubi"

    @property
    def landing_catalog(self) -> Path:
        return self.landing / "catalog"

    @property
    def landing_judgments(self) -> Path:
        return self.landing / "judgments"

    @property
    def landing_knowledge(self) -> Path:
        return self.landing / "knowledge"

    @property
    def simulator(self) -> Path:
        return self.home / "simulator"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def analytics_db(self) -> Path:
        return self.home / "analytics.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"

    @property
    def state(self) -> Path:
        """Small bookkeeping files (the landing index)."""
        return self.home / "state"

    def ensure(self) -> "SermPaths":
        for folder in (self.lakehouse, self.landing_logs, self.landing_ubi, self.landing_catalog,
                       self.landing_judgments, self.landing_knowledge, self.mlartifacts,
                       self.dagster_home, self.state):
            folder.mkdir(parents=True, exist_ok=True)
        # Dagster's defaults (SQLite under dagster_home); no telemetry, no missing-config warning
        instance_config = self.dagster_home / "dagster.yaml"
        if not instance_config.exists():
            instance_config.write_text("telemetry:\n  enabled: false\n")
        return self

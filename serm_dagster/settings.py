"""Where everything lives: one data folder, ``SERM_HOME`` (default ``./.serm``).

Two things may live elsewhere (README, "Object storage and a tracking server"): the Delta lakehouse at a
delta-rs URI (``SERM_LAKEHOUSE``: ``s3://``, ``gs://``, ``abfss://`` ...; its credentials and options in the
standard ``AWS_*`` / ``GOOGLE_*`` / ``AZURE_*`` environment variables, which delta-rs reads itself), and MLflow's
tracking store and registry (``MLFLOW_TRACKING_URI``). Both belong to ``SERM_HOME``: another folder (a
comparison arm under ``SERM_HOME/compare/``, a test's folder) keeps its own local lakehouse and SQLite registry.
Everything else (landing files, Dagster's instance, state, analytics) is local state under ``SERM_HOME``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".serm"


def is_uri(location: str | os.PathLike) -> bool:
    """Whether a location is a URI (``s3://bucket/x``) rather than a local path (``file://`` counts as local)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


@dataclass(frozen=True)
class SermPaths:
    """The layout of ``SERM_HOME``; every component takes its folders from here."""

    home: Path
    lakehouse_uri: str = ""  # SERM_LAKEHOUSE for SERM_HOME itself; "" = home/lakehouse
    mlflow_uri: str = ""  # MLFLOW_TRACKING_URI for SERM_HOME itself; "" = SQLite under home

    @classmethod
    def from_env(cls, home: str | os.PathLike | None = None) -> "SermPaths":
        main = os.environ.get("SERM_HOME") or DEFAULT_HOME
        chosen = home or main
        if is_uri(chosen):
            raise ValueError(f"SERM_HOME must be a local folder, got {str(chosen)!r}: the landing files, Dagster's "
                             f"instance, MLflow's SQLite and state live there. To keep the Delta tables on object "
                             f"storage, leave SERM_HOME local and set SERM_LAKEHOUSE={str(chosen).rstrip('/')}"
                             f"/lakehouse (credentials in the AWS_* / GOOGLE_* / AZURE_* environment variables)")
        resolved = Path(chosen).expanduser().resolve()
        if is_uri(main) or resolved != Path(main).expanduser().resolve():
            return cls(resolved)  # not SERM_HOME: its own local lakehouse and registry
        return cls(resolved, os.environ.get("SERM_LAKEHOUSE", "").strip(),
                   os.environ.get("MLFLOW_TRACKING_URI", "").strip())

    @property
    def lakehouse(self) -> Path | str:
        """The Delta tables' root: a URI (``SERM_LAKEHOUSE``) or a local folder (default ``home/lakehouse``)."""
        if not self.lakehouse_uri:
            return self.home / "lakehouse"
        if is_uri(self.lakehouse_uri):
            return self.lakehouse_uri.rstrip("/")
        return Path(self.lakehouse_uri.removeprefix("file://")).expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        """MLflow's tracking store and registry: ``MLFLOW_TRACKING_URI``, else SQLite under ``home``."""
        return self.mlflow_uri or f"sqlite:///{self.mlflow_db}"

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
        local_lakehouse = () if is_uri(self.lakehouse) else (self.lakehouse,)
        for folder in (*local_lakehouse, self.landing_logs, self.landing_ubi, self.landing_catalog,
                       self.landing_judgments, self.landing_knowledge, self.mlartifacts,
                       self.dagster_home, self.state):
            folder.mkdir(parents=True, exist_ok=True)
        # Dagster's defaults (SQLite under dagster_home); no telemetry, no missing-config warning
        instance_config = self.dagster_home / "dagster.yaml"
        if not instance_config.exists():
            instance_config.write_text("telemetry:\n  enabled: false\n")
        return self

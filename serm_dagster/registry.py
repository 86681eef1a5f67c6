"""MLflow tracking and the model registry: versions, aliases, promotion.

Where it lives is decided once, by ``Registry.under`` (``SermPaths.tracking_uri``): ``MLFLOW_TRACKING_URI`` (a
tracking server) for ``SERM_HOME``, else SQLite and artifacts under the data folder. The command line, the
sensors, the comparison and the assets (``MlflowResource.registry``) all go through it.

The registered model is ``serm-relevance``. A new version gets the alias ``challenger``; the
promotion check moves ``champion`` to it only when it wins on the test sets.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from serm_dagster.settings import SermPaths

MODEL_NAME = "serm-relevance"
CHAMPION = "champion"
CHALLENGER = "challenger"
PYFUNC_CODE = Path(__file__).with_name("mlflow_model.py")
# the environment variables MLflow writes when its URIs are set (see Registry.client)
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@dataclass(frozen=True)
class Registry:
    """One MLflow tracking store + registry, with our experiment and artifact root."""

    tracking_uri: str
    artifact_root: str | None  # None: the tracking server's own (proxied) artifact store
    experiment: str = "serm"

    @classmethod
    def under(cls, home: str | Path, experiment: str = "serm", tracking_uri: str = "",
              artifact_root: str = "") -> "Registry":
        """The registry of data folder ``home``: ``tracking_uri`` if given, else ``MLFLOW_TRACKING_URI`` when
        ``home`` is ``SERM_HOME``, else SQLite under ``home``. Artifacts: ``artifact_root`` if given, else the
        server's store for an HTTP tracking server, else ``home/mlartifacts``."""
        paths = SermPaths.from_env(home)
        uri = tracking_uri or paths.tracking_uri
        served = uri.startswith(("http://", "https://", "databricks"))
        return cls(uri, artifact_root or (None if served else paths.mlartifacts.as_uri()), experiment)

    def client(self) -> MlflowClient:
        # MLflow also writes the URIs into the environment; there MLFLOW_TRACKING_URI is the user's setting that
        # SermPaths reads for SERM_HOME, so it is put back as it was: a process that opened one data folder's
        # registry must not send another SERM_HOME's models to it
        saved = {name: os.environ.get(name) for name in URI_VARIABLES}
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        return MlflowClient(self.tracking_uri, self.tracking_uri)

    def experiment_id(self) -> str:
        client = self.client()
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        return client.create_experiment(self.experiment, artifact_location=self.artifact_root)

    def log_model(
        self,
        model_dir: Path,
        *,
        run_name: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        step_metrics: Mapping[str, list[float]] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> tuple[str, str]:
        """Log a trained model folder as a pyfunc and register it; returns (run id, version)."""
        experiment_id = self.experiment_id()
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags or {})) as run:
            mlflow.log_params({k: _param(v) for k, v in params.items()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            for key, values in (step_metrics or {}).items():
                for step, value in enumerate(values):
                    mlflow.log_metric(key, float(value), step=step)
            with _quiet_mlflow():
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(PYFUNC_CODE),
                    artifacts={"model_dir": str(model_dir)},
                    registered_model_name=MODEL_NAME,
                    signature=SIGNATURE,
                    pip_requirements=[],  # the serving environment is this project's; no pip resolution
                )
        version = str(info.registered_model_version)
        self.client().set_model_version_tag(MODEL_NAME, version, "mlflow_run_id", run.info.run_id)
        return run.info.run_id, version

    def alias_version(self, alias: str) -> str | None:
        try:
            return str(self.client().get_model_version_by_alias(MODEL_NAME, alias).version)
        except MlflowException:
            return None

    def set_alias(self, alias: str, version: str) -> None:
        self.client().set_registered_model_alias(MODEL_NAME, alias, version)

    def tag_version(self, version: str, tags: Mapping[str, Any]) -> None:
        client = self.client()
        for key, value in tags.items():
            client.set_model_version_tag(MODEL_NAME, version, key, _param(value))

    def version_tags(self, version: str) -> dict[str, str]:
        return dict(self.client().get_model_version(MODEL_NAME, version).tags)

    def model_dir(self, version: str) -> Path:
        """The local folder of a registered version's weights (downloaded from the artifact store)."""
        uri = f"models:/{MODEL_NAME}/{version}"
        self.client()
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
        return local / "artifacts" / "model_dir"

    def load_pyfunc(self, alias_or_version: str):
        self.client()
        ref = f"@{alias_or_version}" if not alias_or_version.isdigit() else f"/{alias_or_version}"
        return mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}{ref}")


# What the pyfunc (serm_dagster/mlflow_model.py) takes and returns: the registry shows it, and MLflow has no
# type hints to infer it from (it warned on every version logged).
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "query"), ColSpec("string", "doc_text")]),
    outputs=Schema([ColSpec("double", name) for name in ("p0", "p1", "p2", "p3", "score")]),
)


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow prints "Successfully registered model", "Created version" and an input-example hint to stderr for
    every version logged; the registry (versions, tags, aliases) records the same. On an error the captured text
    is shown after all."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="An input example was not provided")
            yield
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."

"""An MLflow tracking server honoured everywhere: a real `mlflow server` on loopback, MLFLOW_TRACKING_URI set as a
user would, a version registered through the project's Registry and read back through the lookups the command
line, the comparison and the sensors use; nothing written to the SQLite file under SERM_HOME."""

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from serm_dagster.cli import app
from serm_dagster.registry import CHAMPION, MODEL_NAME, Registry
from serm_dagster.resources import MlflowResource
from serm_dagster.sensors import new_labels_reason
from serm_dagster.settings import SermPaths
from serm_dagster.storage import DeltaStore
from conftest import free_port

MLFLOW = Path(sys.executable).with_name("mlflow")


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    server = subprocess.Popen([str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
                               "--artifacts-destination", str(root / "artifacts")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=1).status == 200:
                    break
            except OSError:
                assert server.poll() is None, "mlflow server exited"
                time.sleep(0.2)
        yield url, root
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_tracking_server_is_used_by_the_registry_the_cli_and_the_sensors(home, tracking_server, monkeypatch):
    url, server_root = tracking_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    paths = SermPaths.from_env()
    assert paths.tracking_uri == url
    registry = MlflowResource().registry(home)  # what the assets log through
    assert (registry.tracking_uri, registry.artifact_root) == (url, None)  # the server keeps the artifacts
    weights = home / "model_dir"
    weights.mkdir()
    (weights / "config.json").write_text('{"tiny": true}')
    _, version = registry.log_model(weights, run_name="seed", params={"epochs": 1}, metrics={"loss": 0.5},
                                    tags={"serm/test": "server"})
    registry.tag_version(version, {"training_set": "iter000"})
    registry.set_alias(CHAMPION, version)

    # the server holds it (its own client, no project code), and the artifacts went to its destination
    server = MlflowClient(url, url)
    assert server.get_model_version_by_alias(MODEL_NAME, CHAMPION).version == version
    assert list((server_root / "artifacts").rglob("config.json"))
    # the lookups the command line (`serm evaluation`, `serm evolve`) and the comparison make
    assert Registry.under(home).alias_version(CHAMPION) == version
    assert (Registry.under(home).model_dir(version) / "config.json").read_text() == '{"tiny": true}'
    # the retraining sensor's lookup: the champion's training set, read from the server
    store = DeltaStore(paths.lakehouse)
    store.write("gold/consensus_labels", pa.table({"iteration": pa.array([1] * 250, pa.int64())}), lineage={})
    key, reason = new_labels_reason(store, MlflowResource().registry(paths.home))
    assert key is not None and f"champion v{version}'s training set iter000" in reason
    # nothing went to the SQLite file the command line used to open directly
    assert not paths.mlflow_db.exists()
    evaluation = CliRunner().invoke(app, ["evaluation"])
    assert evaluation.exit_code == 0 and "no evaluations yet" in evaluation.output
    assert not paths.mlflow_db.exists()
    # a folder that is not SERM_HOME (a comparison arm) keeps its own SQLite registry
    arm = Registry.under(home / "compare" / "seed13" / "self-training")
    assert arm.tracking_uri.startswith("sqlite:///") and arm.alias_version(CHAMPION) is None

import socket
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=".*PySpark does not yet fully support.*")


def free_port() -> int:
    """A TCP port free on the loopback interface, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def spark():
    """One real local Spark session for the whole test run."""
    from serm_dagster.resources import build_spark_session

    session = build_spark_session("local[2]", app_name="serm-tests")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def one_cpu_thread():
    """Tiny models gain nothing from threads, and on a busy shared machine extra threads cost a lot."""
    import torch  # loaded by the model tests that ask for this, not by every test

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch) -> Path:
    """A fresh SERM_HOME (and Dagster instance folder) for one test."""
    from serm_dagster.settings import SermPaths

    paths = SermPaths.from_env(tmp_path / "serm").ensure()
    monkeypatch.setenv("SERM_HOME", str(paths.home))
    monkeypatch.setenv("DAGSTER_HOME", str(paths.dagster_home))
    for elsewhere in ("SERM_LAKEHOUSE", "MLFLOW_TRACKING_URI"):  # the test's tables and registry stay in it
        monkeypatch.delenv(elsewhere, raising=False)
    return paths.home


LOG_HEADER = "request_id,ts,session_id,query,language,doc_id,position,clicked,dwell_ms"


def write_logs_csv(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([LOG_HEADER, *rows]) + "\n")
    return path

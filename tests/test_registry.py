"""The MLflow registry logs a version with its signature and prints nothing between our progress lines."""

import mlflow

from serm_dagster.registry import SIGNATURE, Registry


def test_logging_versions_prints_nothing_and_records_the_signature(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "WARNING")  # what the command line sets
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    weights = tmp_path / "model_dir"  # the artifact keeps the folder's name (as assets/training.py saves it)
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    registry = Registry.under(tmp_path / "home")
    registry.client()
    capfd.readouterr()  # the database's creation is not a version
    versions = [registry.log_model(weights, run_name="t", params={"epochs": 1}, metrics={"loss": 0.5})[1]
                for _ in range(2)]
    assert versions == ["1", "2"] and (registry.model_dir("2") / "config.json").exists()
    printed = capfd.readouterr()
    assert printed.err == "" and printed.out == ""  # no "Successfully registered", no hint, no download bar
    info = registry.client().get_model_version("serm-relevance", "2")
    assert mlflow.models.get_model_info(info.source).signature == SIGNATURE


def test_the_command_line_keeps_the_new_tracking_database_quiet(tmp_path):
    """MLflow reads MLFLOW_LOGGING_LEVEL when it is imported, before the command line sets it: the logger itself
    must be quieted, or a new home's first registry call prints "Creating initial MLflow database tables"."""
    import os
    import subprocess
    import sys

    script = ("import serm_dagster.cli as cli; cli.quiet_libraries(); "
              "from serm_dagster.registry import Registry; "
              f"print(Registry.under({str(tmp_path / 'home')!r}).alias_version('champion'))")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_LOGGING_LEVEL", "MLFLOW_TRACKING_URI")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None" and "INFO" not in done.stderr and "mlflow" not in done.stderr.lower()


def test_opening_one_folders_registry_does_not_send_another_serm_home_to_it(tmp_path, monkeypatch):
    """MLflow exports the tracking URI it is given to the environment, where MLFLOW_TRACKING_URI means a user's
    tracking server for SERM_HOME: after one folder's registry is opened, another SERM_HOME keeps its own."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    first = Registry.under(tmp_path / "first")
    first.client()
    monkeypatch.setenv("SERM_HOME", str(tmp_path / "second"))
    second = Registry.under(tmp_path / "second")
    assert second.tracking_uri != first.tracking_uri and "second" in second.tracking_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # a user's server stays theirs
    first.client()
    assert Registry.under(tmp_path / "second").tracking_uri == "http://127.0.0.1:9"

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

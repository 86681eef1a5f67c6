"""The judge panel file: parsed into AnnotatorSettings, checked with the file and key named, found the same way
by the command line, the evolution and the Dagster definitions. No Spark."""

import pickle
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from dagster import RunRequest, build_schedule_context, instance_for_test
from test_sensors import register_champion
from typer.testing import CliRunner

from models.agents.embedded import DEFAULT_AGENTS
from serm_dagster import cli
from serm_dagster.definitions import default_resources
from serm_dagster.evolution import resources_for
from serm_dagster.panel import (
    AGREEMENT_KEYS,
    PANEL_ENV,
    Panel,
    PanelError,
    choose_panel,
    load_panel,
    panel_path,
    panel_tags,
)
from serm_dagster.resources import AnnotatorSettings, LakehouseResource, MlflowResource
from serm_dagster.sensors import two_weekly_iteration
from serm_dagster.settings import SermPaths

EXAMPLE = Path(__file__).resolve().parents[1] / "panels" / "example.yaml"
FIRST = DEFAULT_AGENTS[0]  # whatever the embedded judges are called: the names come from the constant
LLM = {"name": "qwen", "base_url": "http://localhost:8000/v1", "model": "Qwen/Qwen2.5-7B-Instruct",
       "api_key_env": "VLLM_API_KEY", "temperature": 0.2, "max_concurrency": 2, "timeout_s": 10.0, "max_retries": 1}


def document() -> dict:
    """A valid panel: every embedded judge (the first with an option), one LLM judge, the agreement rule."""
    judges = [{"embedded": FIRST, "min_accuracy": 0.8, "solo_accuracy": 0.95}, *({"embedded": n} for n in DEFAULT_AGENTS[1:]),
              dict(LLM)]
    return {"judges": judges, "agreement": {"n_paths": 5, "early_stop": False, "quorum": 0.75, "min_voters": 2,
                                            "solo_assured": False}}


def write(folder: Path, doc, name: str = "panel.yaml") -> Path:
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def test_a_valid_file_fills_every_field_of_annotator_settings(tmp_path):
    settings = load_panel(write(tmp_path, document()))
    assert isinstance(settings, AnnotatorSettings) and settings.strategy == "agents"
    assert settings.embedded_agents == list(DEFAULT_AGENTS)
    assert settings.judge_options == {FIRST: {"min_accuracy": 0.8, "solo_accuracy": 0.95}}
    assert [a.model_dump() for a in settings.llm_agents] == [LLM]
    assert (settings.n_paths, settings.early_stop, settings.quorum, settings.min_voters) == (5, False, 0.75, 2)
    assert settings.agreement().quorum == 0.75 and settings.agreement().solo_assured is False and [a.name for a in settings.llm_panel()] == ["qwen"]


def test_absent_agreement_keys_keep_their_defaults_and_the_keys_are_settings(tmp_path):
    settings = load_panel(write(tmp_path, {"judges": [{"embedded": n} for n in DEFAULT_AGENTS]}))
    defaults = AnnotatorSettings()
    assert all(getattr(settings, key) == getattr(defaults, key) for key in AGREEMENT_KEYS)
    assert set(AGREEMENT_KEYS) <= set(AnnotatorSettings.model_fields)


LLM_AT = len(DEFAULT_AGENTS)  # the LLM judge's index in document()


@pytest.mark.parametrize("change, key, problem", [
    (lambda d: d.update(judgez=[]), "judgez", "unknown key"),
    (lambda d: d["judges"][LLM_AT].update(colour="red"), f"judges[{LLM_AT}].colour", "unknown key"),
    (lambda d: d["agreement"].update(quorom=1.0), "agreement.quorom", "unknown key"),
    (lambda d: d["judges"].append({"embedded": "no-such-judge"}), f"judges[{LLM_AT + 1}].embedded",
     "unknown embedded judge"),
    (lambda d: d["judges"][0].update(min_accuracy="high"), "judges[0].min_accuracy", "numbers"),
    (lambda d: d["judges"][LLM_AT].pop("base_url"), f"judges[{LLM_AT}].base_url", "missing"),
    (lambda d: d["judges"][LLM_AT].pop("model"), f"judges[{LLM_AT}].model", "missing"),
    (lambda d: d["judges"][LLM_AT].update(base_url="localhost:8000"), f"judges[{LLM_AT}].base_url", "http"),
    (lambda d: d["judges"][LLM_AT].update(temperature=-1), f"judges[{LLM_AT}].temperature", ">= 0"),
    (lambda d: d["judges"].append(dict(LLM)), "judges", "more than once"),
    (lambda d: d["judges"].append({"model": "m"}), f"judges[{LLM_AT + 1}]", "neither"),
    (lambda d: d["agreement"].update(quorum=1.5), "agreement.quorum", "(0, 1]"),
    (lambda d: d["agreement"].update(quorum=0), "agreement.quorum", "(0, 1]"),
    (lambda d: d["agreement"].update(n_paths=0), "agreement.n_paths", ">= 1"),
    (lambda d: d["agreement"].update(early_stop="yes"), "agreement.early_stop", "true or false"),
    (lambda d: d["agreement"].update(min_voters=99), "agreement.min_voters", "judge(s)"),
    (lambda d: d["agreement"].update(solo_assured="yes"), "agreement.solo_assured", "true or false"),
    (lambda d: d.update(judges=[]), "judges", "non-empty list"),
    (lambda d: d.pop("judges"), "judges", "missing"),
])
def test_each_problem_names_the_file_and_the_key(tmp_path, change, key, problem):
    doc = document()
    change(doc)
    path = write(tmp_path, doc)
    with pytest.raises(PanelError) as raised:
        load_panel(path)
    assert any(line.startswith(f"{path}: {key}") and problem in line for line in str(raised.value).splitlines()), \
        str(raised.value)


@pytest.mark.parametrize("change, key", [
    (lambda d: d["judges"][LLM_AT].update(api_key="sk-proj-0123456789abcdef"), f"judges[{LLM_AT}].api_key"),
    (lambda d: d["judges"][LLM_AT].update(api_key_env="sk-proj-0123456789abcdef"), f"judges[{LLM_AT}].api_key_env"),
    (lambda d: d["judges"][LLM_AT].update(api_key_env="hf_0123456789abcdefABCDEF"), f"judges[{LLM_AT}].api_key_env"),
    (lambda d: d["judges"][0].update(api_key="sk-proj-0123456789abcdef"), "judges[0].api_key"),
])
def test_a_literal_key_is_refused_and_never_repeated(tmp_path, change, key):
    doc = document()
    change(doc)
    path = write(tmp_path, doc)
    with pytest.raises(PanelError) as raised:
        load_panel(path)
    message = str(raised.value)
    assert f"{path}: {key}:" in message and "environment variable" in message
    assert "0123456789abcdef" not in message


def test_an_unreadable_or_malformed_file_is_named(tmp_path):
    with pytest.raises(PanelError, match="cannot read"):
        load_panel(tmp_path / "absent.yaml")
    with pytest.raises(PanelError, match=r"bad\.yaml: not valid YAML"):
        load_panel(write(tmp_path, "judges: [\n", "bad.yaml"))
    with pytest.raises(PanelError, match="must be a mapping"):
        load_panel(write(tmp_path, "- just a list\n", "list.yaml"))


def test_the_example_file_loads():
    settings = load_panel(EXAMPLE)
    assert set(settings.embedded_agents) <= set(DEFAULT_AGENTS)
    assert {a.base_url for a in settings.llm_agents} == {"http://localhost:8000/v1", "http://localhost:11434/v1",
                                                          "https://api.openai.com/v1"}
    assert all(a.api_key_env in (None, "VLLM_API_KEY", "OPENAI_API_KEY") for a in settings.llm_agents)


def test_precedence_flag_then_serm_panel_then_home_file_then_defaults(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    flag, env = write(tmp_path, document(), "flag.yaml"), write(tmp_path, document(), "env.yaml")
    assert panel_path(None, home, {}) is None and choose_panel(None, home, {}) == Panel()
    in_home = write(home, document())
    assert panel_path(None, home, {}) == in_home
    assert panel_path(None, None, {"SERM_HOME": str(home)}) == in_home
    assert panel_path(None, home, {PANEL_ENV: str(env)}) == env
    assert panel_path(flag, home, {PANEL_ENV: str(env)}) == flag
    with pytest.raises(PanelError, match="cannot read"):  # a named file that is not there is an error
        choose_panel(None, home, {PANEL_ENV: str(tmp_path / "gone.yaml")})


def test_the_definitions_resources_use_the_panel_of_serm_panel_or_serm_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SERM_HOME", str(home))
    monkeypatch.delenv(PANEL_ENV, raising=False)
    assert default_resources()["annotator_settings"].model_dump() == AnnotatorSettings().model_dump()
    doc = document()
    write(home, doc)
    assert default_resources()["annotator_settings"].n_paths == 5
    doc["agreement"]["n_paths"] = 2
    monkeypatch.setenv(PANEL_ENV, str(write(tmp_path, doc, "env.yaml")))
    assert default_resources()["annotator_settings"].n_paths == 2


def test_resources_for_an_evolution_carry_the_panel_and_the_strategy(tmp_path, monkeypatch):
    monkeypatch.delenv(PANEL_ENV, raising=False)
    paths = SermPaths.from_env(tmp_path / "home")
    panel = Panel.from_file(write(tmp_path, document()))
    serm = resources_for(paths, "agents", panel)
    assert serm["annotator_settings"].model_dump() == load_panel(panel.path).model_dump()
    assert serm["lakehouse"].home == str(paths.home)
    baseline = resources_for(paths, "self-training", panel)["annotator_settings"]
    assert baseline.strategy == "self-training"
    assert resources_for(paths)["annotator_settings"].model_dump() == AnnotatorSettings().model_dump()
    assert pickle.loads(pickle.dumps(panel)) == panel  # it travels to the comparison's arm processes


def test_a_labelling_run_records_the_panel_and_keeps_its_content(tmp_path):
    paths = SermPaths.from_env(tmp_path / "home")
    path = write(tmp_path, document())
    panel = Panel.from_file(path)
    tags = panel_tags(panel, "agents", paths)
    assert tags == {"serm/panel": str(path.resolve()), "serm/panel_sha256": panel.sha256}
    assert (paths.state / "panels" / f"{panel.sha256}.yaml").read_bytes() == path.read_bytes()
    assert panel_tags(panel, "self-training", paths) == {}
    assert panel_tags(Panel(), "agents", paths) == {"serm/panel": "defaults"}


def test_the_schedule_tags_its_run_with_the_panel(home, tmp_path, monkeypatch):
    path = write(tmp_path, document())
    monkeypatch.setenv(PANEL_ENV, str(path))
    register_champion(home, "iter000-seed")  # the schedule asks for an iteration only once a champion exists
    resources = {"lakehouse": LakehouseResource(home=str(home)), "mlflow_resource": MlflowResource()}
    with instance_for_test() as instance, build_schedule_context(
            instance=instance, scheduled_execution_time=datetime.now(timezone.utc), resources=resources) as context:
        request = two_weekly_iteration(context)
    assert isinstance(request, RunRequest) and request.tags["serm/panel"] == str(path.resolve())


@pytest.fixture()
def captured(home, monkeypatch):
    """The CLI's evolve / compare / demo with the work stubbed out: what they were given."""
    calls = {}
    monkeypatch.delenv(PANEL_ENV, raising=False)
    monkeypatch.setattr(cli, "run_evolution", lambda *args, **kw: calls.update(evolve=(args, kw)))
    monkeypatch.setattr(cli, "compare", lambda *args, **kw: calls.update(compare=(args, kw)))
    for name in ("run_named", "report", "simulate"):
        monkeypatch.setattr(cli, name, lambda *args, **kw: None)
    return calls


def panel_given(call) -> Panel:
    args, kw = call
    return kw["panel"] if "panel" in kw else args[5]


@pytest.mark.parametrize("command, stub", [(["evolve"], "evolve"), (["evolve", "--compare"], "compare"),
                                           (["demo"], "compare")])
def test_the_command_line_passes_panel_through(captured, tmp_path, command, stub):
    path = write(tmp_path, document())
    result = CliRunner().invoke(cli.app, [*command, "--panel", str(path)])
    assert result.exit_code == 0, result.output
    panel = panel_given(captured[stub])
    assert panel == Panel.from_file(path) and f"judge panel: {path.resolve()}" in result.output
    paths = SermPaths.from_env()
    assert resources_for(paths, "agents", panel)["annotator_settings"].model_dump() == load_panel(path).model_dump()


def test_the_command_line_finds_serm_home_panel_yaml_and_refuses_a_bad_file(captured, home, tmp_path):
    write(home, document())
    assert CliRunner().invoke(cli.app, ["evolve"]).exit_code == 0
    assert panel_given(captured["evolve"]).path == str((home / "panel.yaml").resolve())
    doc = document()
    doc["agreement"]["quorum"] = 2
    bad = write(tmp_path, doc, "bad.yaml")
    result = CliRunner().invoke(cli.app, ["evolve", "--panel", str(bad)])
    assert result.exit_code == 2 and "agreement.quorum" in result.output

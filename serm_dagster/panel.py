"""The judge panel as a file: which judges label the mined pairs and how they must agree.

A panel file (YAML) is parsed INTO ``AnnotatorSettings``; it is not a second settings class::

    judges:
      - embedded: knowledge            # an embedded judge, by name (models.agents.embedded.DEFAULT_AGENTS)
        min_accuracy: 0.8              # its options (numbers): AnnotatorSettings.judge_options["knowledge"]
      - name: qwen                     # an LLM judge over an OpenAI-compatible chat API: an LlmAgentConfig
        base_url: http://localhost:8000/v1
        model: Qwen/Qwen2.5-7B-Instruct
        api_key_env: VLLM_API_KEY      # the NAME of the environment variable holding the key, never a key
    agreement:                         # AnnotatorSettings' agreement fields; absent ones keep their defaults
      n_paths: 3
      quorum: 1.0
      min_voters: 2
      min_backends: 2                  # default: 2 when LLM judges are on the panel, else 1

Which file: ``--panel FILE``, else ``SERM_PANEL``, else ``$SERM_HOME/panel.yaml`` if it exists, else
AnnotatorSettings' defaults (``choose_panel``). Errors name the file, the key path and the problem.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from models.agents.embedded import DEFAULT_AGENTS
from models.agents.learned import EMBEDDED_BACKEND
from models.agents.openai_chat import OpenAIChatAgent
from serm_dagster.resources import AnnotatorSettings, LlmAgentConfig
from serm_dagster.settings import SermPaths

PANEL_ENV = "SERM_PANEL"
PANEL_FILE = "panel.yaml"
TOP_KEYS = ("judges", "agreement")
LLM_KEYS = tuple(LlmAgentConfig.model_fields)
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
OPTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KEY_PREFIXES = ("sk-", "sk_", "hf_", "gsk_", "xai-", "pk-", "Bearer ")


class PanelError(ValueError):
    """A panel file that cannot be used: every problem, each as ``file: key.path: what is wrong``."""

    def __init__(self, path: str | os.PathLike, problems: list[str]):
        self.path, self.problems = str(path), problems
        super().__init__("\n".join(f"{path}: {problem}" for problem in problems))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# agreement key -> (is the value valid, what a valid value is)
AGREEMENT_RULES = {
    "n_paths": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "early_stop": (lambda v: isinstance(v, bool), "true or false"),
    "quorum": (lambda v: _is_number(v) and 0.0 < v <= 1.0, "a number in (0, 1]: the share of voting judges "
               "that must agree (1.0 = unanimity)"),
    "min_voters": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "solo_assured": (lambda v: isinstance(v, bool), "true or false: keep a pair one judge alone votes when its "
                     "vote is assured (see AgreementSettings)"),
    "min_backends": (lambda v: _is_int(v) and v >= 1, "an integer >= 1: the different backends (embedded, "
                     "openai-chat) the agreeing judges must run on"),
}
AGREEMENT_KEYS = tuple(AGREEMENT_RULES)  # AnnotatorSettings' agreement fields a panel file may set


def _shown(value) -> str:
    """A value for an error message: a string that might be a secret is not repeated."""
    if isinstance(value, str) and (len(value) > 24 or value.startswith(KEY_PREFIXES)):
        return "a string"
    return repr(value)


def _unknown_keys(entry: Mapping, allowed, where: str) -> list[str]:
    return [f"{where}{key}: unknown key (allowed: {', '.join(allowed)})"
            for key in entry if key not in allowed and key != "api_key"]


def _literal_key(entry: Mapping, where: str) -> list[str]:
    return [f"{where}api_key: a key is never written in a panel file: set api_key_env to the NAME of the "
            f"environment variable that holds it"] if "api_key" in entry else []


def _embedded_judge(entry: Mapping, where: str) -> tuple[str, dict[str, float], list[str]]:
    """(name, options, problems) of an ``embedded:`` entry; every other key is a numeric option."""
    name, problems = entry["embedded"], []
    if name not in DEFAULT_AGENTS:
        problems.append(f"{where}embedded: unknown embedded judge {name!r} (known: {', '.join(DEFAULT_AGENTS)})")
    options = {}
    for key, value in entry.items():
        if key in ("embedded", "api_key"):
            continue
        if not isinstance(key, str) or not OPTION_NAME.match(key):
            problems.append(f"{where}{key}: not a valid option name")
        elif not _is_number(value):
            problems.append(f"{where}{key}: judge options are numbers, got {_shown(value)}")
        else:
            options[key] = float(value)
    return name, options, problems


def _key_problem(value) -> str | None:
    """Why an ``api_key_env`` value is not the name of an environment variable (None: it is one)."""
    if value is None:
        return None
    if not isinstance(value, str) or value.startswith(KEY_PREFIXES) or not ENV_NAME.match(value):
        return ("looks like a key, not the NAME of an environment variable (e.g. OPENAI_API_KEY); keys come from "
                "the environment and are never written in a panel file")
    return None


def _llm_judge(entry: Mapping, where: str) -> tuple[dict, list[str]]:
    """(LlmAgentConfig fields, problems) of an LLM judge entry."""
    problems = _unknown_keys(entry, LLM_KEYS, where)
    problems += [f"{where}{key}: missing (an LLM judge needs name, base_url and model)"
                 for key in ("base_url", "model") if key not in entry]
    problems += [f"{where}{key}: must be a non-empty string, got {_shown(entry[key])}"
                 for key in ("name", "base_url", "model") if key in entry and not (isinstance(entry[key], str)
                                                                                   and entry[key].strip())]
    if isinstance(entry.get("base_url"), str) and not entry["base_url"].startswith(("http://", "https://")):
        problems.append(f"{where}base_url: {entry['base_url']!r} is not an http:// or https:// URL")
    if (why := _key_problem(entry.get("api_key_env"))) is not None:
        problems.append(f"{where}api_key_env: {why}")
    problems += _llm_numbers(entry, where)
    return dict(entry), problems


# LLM judge key -> (is the value valid, what a valid value is)
LLM_RULES = {
    "temperature": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "max_concurrency": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "timeout_s": (lambda v: _is_number(v) and v > 0, "a number of seconds > 0"),
    "max_retries": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
}


def _llm_numbers(entry: Mapping, where: str) -> list[str]:
    return [f"{where}{key}: must be {what}, got {_shown(entry[key])}"
            for key, (valid, what) in LLM_RULES.items() if key in entry and not valid(entry[key])]


def _judge(entry, where: str, fields: dict) -> tuple[object, list[str]]:
    """Add one ``judges`` entry to ``fields``; (its name, the problems)."""
    if not isinstance(entry, Mapping):
        return None, [f"{where[:-1]}: must be a mapping, got {_shown(entry)}"]
    problems = _literal_key(entry, where)
    if "embedded" in entry:
        name, options, found = _embedded_judge(entry, where)
        fields["embedded_agents"].append(name)
        if options and isinstance(name, str):
            fields["judge_options"][name] = options
        return name, problems + found
    if "name" in entry:
        config, found = _llm_judge(entry, where)
        fields["llm_agents"].append(config)
        return entry["name"], problems + found
    return None, problems + [f"{where[:-1]}: neither `embedded: NAME` (an embedded judge) nor `name:` (an LLM judge)"]


def _judges(judges, fields: dict) -> list[str]:
    """Fill ``fields`` (embedded_agents, judge_options, llm_agents) from the ``judges`` list; the problems."""
    if not isinstance(judges, list) or not judges:
        return ["judges: must be a non-empty list of judges (`- embedded: NAME` or `- name: ...` with base_url "
                "and model)"]
    fields.update(embedded_agents=[], judge_options={}, llm_agents=[])
    problems, names = [], []
    for i, entry in enumerate(judges):
        name, found = _judge(entry, f"judges[{i}].", fields)
        problems += found
        names += [str(name)] if name is not None else []
    return problems + [f"judges: {name!r} appears more than once (judge names must be unique)"
                       for name in sorted({n for n in names if names.count(n) > 1})]


def _panel_backends(fields: dict) -> set[str]:
    """The backends the panel's judges run on."""
    return ({EMBEDDED_BACKEND} if fields.get("embedded_agents") else set()) | \
        ({OpenAIChatAgent.backend} if fields.get("llm_agents") else set())


def _agreement(agreement, judges: int, fields: dict) -> list[str]:
    """Fill ``fields`` with the agreement rule; the problems."""
    if agreement is None:
        agreement = {}
    if not isinstance(agreement, Mapping):
        return [f"agreement: must be a mapping of {', '.join(AGREEMENT_KEYS)}"]
    problems = _unknown_keys(agreement, AGREEMENT_KEYS, "agreement.")
    for key, (valid, what) in AGREEMENT_RULES.items():
        if key in agreement and not valid(agreement[key]):
            problems.append(f"agreement.{key}: must be {what}, got {_shown(agreement[key])}")
        elif key in agreement:
            fields[key] = agreement[key]
    min_voters = fields.get("min_voters", AnnotatorSettings.model_fields["min_voters"].default)
    if judges and _is_int(min_voters) and min_voters > judges:
        problems.append(f"agreement.min_voters: {min_voters} voters needed but the panel has {judges} judge(s): "
                        f"no pair could be accepted")
    backends = _panel_backends(fields)
    min_backends = fields.get("min_backends")
    if judges and _is_int(min_backends) and min_backends > len(backends):
        problems.append(f"agreement.min_backends: {min_backends} backends needed but the panel's judges run on "
                        f"{len(backends)} ({', '.join(sorted(backends))}): no pair could be accepted")
    return problems


def panel_fields(document, path: str | os.PathLike = "<panel>") -> dict:
    """The AnnotatorSettings fields a parsed panel document sets; PanelError lists every problem."""
    if not isinstance(document, Mapping):
        raise PanelError(path, ["the file must be a mapping with `judges:` (and optionally `agreement:`)"])
    fields: dict = {}
    problems = _unknown_keys(document, TOP_KEYS, "")
    if "judges" not in document:
        problems.append("judges: missing (the panel needs at least one judge)")
    else:
        problems += _judges(document["judges"], fields)
    judges = len(document["judges"]) if isinstance(document.get("judges"), list) else 0
    problems += _agreement(document.get("agreement"), judges, fields)
    if problems:
        raise PanelError(path, problems)
    return fields


def _read(path: Path) -> tuple[bytes, object]:
    """The file's bytes and its parsed YAML."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PanelError(path, [f"cannot read the panel file ({exc.strerror or exc})"]) from exc
    try:
        return raw, yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise PanelError(path, [f"not valid YAML: {exc}"]) from exc


def load_panel(path: str | os.PathLike) -> AnnotatorSettings:
    """The AnnotatorSettings a panel file describes (strategy 'agents'); PanelError if it cannot be used."""
    return Panel.from_file(path).settings()


@dataclass(frozen=True)
class Panel:
    """A panel and where it came from: plain values, so it travels to the comparison's arm processes."""

    fields: dict = field(default_factory=dict)  # AnnotatorSettings fields it sets (none: the defaults)
    path: str = ""  # the file, resolved; "" for AnnotatorSettings' defaults
    sha256: str = ""  # of the file's bytes

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Panel":
        path = Path(path).expanduser().resolve()
        raw, document = _read(path)
        fields = panel_fields(document, path)
        try:
            AnnotatorSettings(**fields)
        except ValueError as exc:  # pydantic's ValidationError: the resource's own checks, with the file named
            raise PanelError(path, [f"not valid AnnotatorSettings: {exc}"]) from exc
        return cls(fields, str(path), hashlib.sha256(raw).hexdigest())

    def settings(self, strategy: str = "agents") -> AnnotatorSettings:
        """The annotator resource: this panel's fields with ``strategy`` (the comparison's self-training arm
        gets 'self-training', which ignores the panel)."""
        return AnnotatorSettings(**{**self.fields, "strategy": strategy})

    def tags(self) -> dict[str, str]:
        """Run tags recording which panel labelled (the copy kept by ``keep_copy`` has the content)."""
        if not self.path:
            return {"serm/panel": "defaults"}
        return {"serm/panel": self.path, "serm/panel_sha256": self.sha256}

    def keep_copy(self, paths: SermPaths) -> Path | None:
        """The file's content kept under ``state/panels/<sha256>.yaml``, so a run's tag resolves to it even
        after the file is edited."""
        if not self.path:
            return None
        copy = paths.state / "panels" / f"{self.sha256}.yaml"
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(Path(self.path).read_bytes())
        return copy


def panel_path(explicit: str | os.PathLike | None = None, home: str | os.PathLike | None = None,
               environ: Mapping[str, str] = os.environ) -> Path | None:
    """Which panel file applies: ``explicit`` (``--panel``), else ``SERM_PANEL``, else ``<home>/panel.yaml``
    if it exists (home: ``SERM_HOME``), else None (AnnotatorSettings' defaults)."""
    if explicit:
        return Path(explicit)
    if environ.get(PANEL_ENV):
        return Path(environ[PANEL_ENV])
    default = SermPaths.from_env(home or environ.get("SERM_HOME")).home / PANEL_FILE
    return default if default.is_file() else None


def choose_panel(explicit: str | os.PathLike | None = None, home: str | os.PathLike | None = None,
                 environ: Mapping[str, str] = os.environ) -> Panel:
    """The panel that applies (see ``panel_path``), loaded and checked."""
    path = panel_path(explicit, home, environ)
    return Panel.from_file(path) if path is not None else Panel()


def panel_tags(panel: Panel, strategy: str, paths: SermPaths) -> dict[str, str]:
    """The run tags naming the panel that labels (none for self-training, which has no judges); the file's
    content is kept in ``paths``' state/panels/ under the hash the tags give."""
    if strategy != "agents":
        return {}
    panel.keep_copy(paths)
    return panel.tags()

"""The annotator agent interface shared by every backend (LLM over HTTP, local LLM, embedded judges).

An agent judges query-document pairs on the graded 0-3 scale. It is asked for one reasoning
path per pair at a time (``path_index``), so the level-1 vote can stop sampling a pair as soon as
its majority is settled.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

LABELS = (0, 1, 2, 3)

STATUS_OK = "ok"
STATUS_ABSTAIN = "abstain"
STATUS_FAILED = "failed"

# Error prefixes: they tell the cache what a failure means.
# "transient:" a call that never produced an answer (network, 5xx, timeout, out of memory): worth
#              asking again in a later run, so never cached.
# "parse:"     the model answered, but not in the strict format: an answer like any other, cached.
# "rejected:"  the server refused the request (4xx other than 408/429, a redirect): a configuration
#              error (a bad key, a wrong URL), so never cached either: fixed, the next run asks again.
TRANSIENT_ERROR = "transient:"
PARSE_ERROR = "parse:"
REJECTED_ERROR = "rejected:"


MASK = "***"
# What a credential looks like in an error text a server sends back: a bearer token, the usual key
# prefixes, "api_key=..." pairs, a URL's user:password, and any long unbroken token (hex, base64).
_KEY_LIKE = re.compile(
    r"(?i)(?<=bearer )\S+"
    r"|\b(?:sk|pk|rk|hf|gsk|xai|ghp|gho|glpat|AKIA)[-_][A-Za-z0-9_\-]{6,}"
    r"|(?:^|(?<=[?&\s\"'{,]))(?:api[_-]?key|key|token|secret|password|authorization)[\"']?\s*[:=]\s*[\"']?[^\s\"'&,}]+"
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"
    r"|\b[A-Za-z0-9+/_\-]{32,}={0,2}"
)


def mask_secrets(text: str | None, secrets: list[str] | tuple[str, ...] = ()) -> str | None:
    """``text`` with each of ``secrets`` (the keys in use) and anything key-like replaced by ``***``."""
    if not text:
        return text
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _KEY_LIKE.sub(MASK, text)


@dataclass(frozen=True)
class PairToJudge:
    pair_id: str  # stable id of (query, language, doc_id)
    query: str
    language: str
    doc_id: str
    title: str
    description: str  # untrusted text: it comes from the catalogue and may carry injected instructions
    attributes: dict = field(default_factory=dict)  # category, brand, colour, size, material, audience...
    knowledge: dict = field(default_factory=dict)  # glossary matches, behaviour stats... may be empty

    def content_hash(self) -> str:
        """Hash of everything an agent reads: a changed description or new knowledge is a new pair."""
        return stable_hash(
            {
                "query": self.query,
                "language": self.language,
                "doc_id": self.doc_id,
                "title": self.title,
                "description": self.description,
                "attributes": self.attributes,
                "knowledge": self.knowledge,
            }
        )


@dataclass(frozen=True)
class ReasoningPath:
    label: int | None  # 0-3, None = abstain (or failed)
    rationale: str
    status: str  # "ok" | "abstain" | "failed"
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    # the agent's own record says this vote may stand alone (an embedded judge's out-of-fold accuracy at this
    # confidence reaches its solo accuracy); an LLM judge's never is
    assured: bool = False

    @classmethod
    def failed(cls, error: str, latency_ms: float = 0.0, prompt_tokens: int = 0, completion_tokens: int = 0) -> "ReasoningPath":
        return cls(None, "", STATUS_FAILED, latency_ms, prompt_tokens, completion_tokens, error)

    def is_vote(self) -> bool:
        return self.status == STATUS_OK and self.label in LABELS

    def is_transient_failure(self) -> bool:
        return self.status == STATUS_FAILED and (self.error or "").startswith(TRANSIENT_ERROR)


@runtime_checkable
class Agent(Protocol):
    """What the annotator needs from an agent.

    Optional attribute ``max_paths: int``: a deterministic agent (an embedded judge) sets it to 1 so
    the level-1 vote asks it once instead of N times.
    """

    name: str
    backend: str
    model: str
    prompt_version: str

    def config_key(self) -> str:
        """Stable hash of everything that changes the agent's answers (the vote cache key)."""
        ...

    def judge(self, pairs: list[PairToJudge], path_index: int) -> list[ReasoningPath]:
        """One path per pair, in order; path i is an independent sample (seed/temperature)."""
        ...


def stable_hash(value: Any) -> str:
    """sha256 of canonical JSON: the same content gives the same key in every process."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CallableAgent:
    """Wraps a plain function ``(pair, path_index) -> ReasoningPath | (label, rationale)``.

    The easy way to plug in an embedded judge (knowledge, semantic, behaviour) or a test fake: give
    it a name, a model/version string that changes when its logic changes, and the function.
    A function raising an exception gives a failed path for that pair, never a label.
    """

    def __init__(
        self,
        name: str,
        judge_one: Callable[[PairToJudge, int], Any],
        *,
        backend: str = "embedded",
        model: str = "rules",
        prompt_version: str = "v1",
        max_paths: int | None = None,
        config: dict | None = None,
    ):
        self.name = name
        self.backend = backend
        self.model = model
        self.prompt_version = prompt_version
        self.max_paths = max_paths
        self._judge_one = judge_one
        self._config = dict(config or {})

    def config_key(self) -> str:
        return stable_hash(
            {"backend": self.backend, "model": self.model, "prompt_version": self.prompt_version, "config": self._config}
        )

    def judge(self, pairs: list[PairToJudge], path_index: int) -> list[ReasoningPath]:
        return [self._judge_safely(pair, path_index) for pair in pairs]

    def _judge_safely(self, pair: PairToJudge, path_index: int) -> ReasoningPath:
        try:
            result = self._judge_one(pair, path_index)
        except Exception as exc:  # an embedded judge bug must not turn into a label
            return ReasoningPath.failed(f"{TRANSIENT_ERROR} {type(exc).__name__}: {exc}")
        if isinstance(result, ReasoningPath):
            return result
        label, rationale = result
        if label is None:
            return ReasoningPath(None, str(rationale or ""), STATUS_ABSTAIN)
        if isinstance(label, bool) or not isinstance(label, int) or label not in LABELS:
            return ReasoningPath.failed(f"{PARSE_ERROR} label {label!r} is not an int in 0-3")
        return ReasoningPath(label, str(rationale or ""), STATUS_OK)

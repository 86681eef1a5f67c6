"""Two-level agreement (MRA): majority vote within an agent, agreement across agents.

Level 1 (``vote_within_agent``): each agent gives up to N independent reasoning paths per pair;
its label is the majority of the paths that answered. Paths are asked for one index at a time,
batched across pairs, so a pair whose majority is already settled costs no more calls.

Level 2 (``agree_across_agents``): a pair is kept only when the agents that voted agree
(unanimity by default, or a quorum), and, with ``min_backends`` > 1, when the agreeing agents run on
at least that many different backends (two LLM judges that obey the same injected instruction are
one opinion). A pair only one agent votes is kept when that agent's vote is assured and one backend
suffices: its assured paths (those whose out-of-fold record reaches the judge's solo accuracy at their
confidence; models/agents/learned.py) back the label as level 1 backs one. Disagreements stay in the
vote tables for analysis and never become labels.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import pandas as pd

from .. import about
from ..progress import Progress
from .base import (
    LABELS, STATUS_ABSTAIN, STATUS_FAILED, TRANSIENT_ERROR, Agent, PairToJudge, ReasoningPath, mask_secrets,
)
from .cache import CacheKey, VoteCache, should_cache

log = logging.getLogger(__name__)

DECIDED = "decided"
ABSTAINED = "abstained"
FAILED = "failed"

VOTE_COLUMNS = [
    "pair_id", "query", "language", "doc_id", "agent", "path", "label", "status", "rationale",
    "backend", "model", "prompt_version", "config_key", "latency_ms", "prompt_tokens",
    "completion_tokens", "error", "cached",
]
AGENT_LABEL_COLUMNS = [
    "pair_id", "query", "language", "doc_id", "agent", "label", "status", "paths_used",
    "paths_agreeing", "stopped_early", "rationale",
]
CONSENSUS_COLUMNS = ["pair_id", "query", "language", "doc_id", "label", "agreeing_agents", "n_voters", "rationale"]


@dataclass(frozen=True)
class AgreementSettings:
    n_paths: int = about(3, "reasoning paths per agent and pair (level 1); an agent's max_paths may lower it")
    early_stop: bool = about(True, "stop sampling a pair once no further path can change its majority")
    min_path_votes: int = about(1, "an agent's label needs at least this many supporting paths")
    quorum: float = about(1.0, "share of voting agents that must back the label; 1.0 = unanimity")
    min_voters: int = about(2, "fewer voting agents than this: the pair is discarded")
    min_backends: int = about(1, "the agreeing agents must run on at least this many different backends")
    solo_assured: bool = about(True, "a pair only one agent votes is kept when that vote is assured (an embedded "
                               "judge's out-of-fold record at its confidence reaches the judge's solo_accuracy) "
                               "and min_backends is 1")
    batch_size: int = about(64, "pairs per call of an agent")
    parallel_agents: bool = about(True, "agents are independent services: ask them at the same time")
    stop_agent_when_down: bool = about(True, "every call of a path index failed transiently (after its retries): "
                                       "skip the agent's later paths")
    down_after_failed_calls: int = about(3, "...but only when at least this many calls failed (not one unlucky "
                                         "pair)")
    max_path_rationale_chars: int = about(300, "a path's rationale is cut to this many characters when merged")
    max_rationale_chars: int = about(1200, "the longest merged rationale of a label")
    progress: bool = about(True, "a line on a terminal: paths asked of the panel, pairs judged per agent "
                           "(models.progress)")

    def __post_init__(self) -> None:
        if self.n_paths < 1:
            raise ValueError("n_paths must be >= 1")
        if not 0.0 < self.quorum <= 1.0:
            raise ValueError("quorum must be in (0, 1]")
        if self.min_voters < 1:
            raise ValueError("min_voters must be >= 1")
        if self.min_backends < 1:
            raise ValueError("min_backends must be >= 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")


@dataclass(frozen=True)
class PathRecord:
    path_index: int
    path: ReasoningPath
    cached: bool


@dataclass
class AgentVerdict:
    """Level-1 outcome of one agent for one pair, with every path it used."""

    pair: PairToJudge
    agent: str
    label: int | None
    status: str  # decided | abstained | failed
    paths: list[PathRecord]
    paths_agreeing: int
    stopped_early: bool
    rationale: str
    backend: str = ""  # the agent's backend (embedded, openai-chat, transformers...)

    @property
    def paths_used(self) -> int:
        return len(self.paths)

    @property
    def assured(self) -> bool:
        """The label may stand alone: it is also the majority of the agent's assured paths alone."""
        if self.label is None:
            return False
        assured = [r for r in self.paths if r.path.is_vote() and r.path.assured]
        return decide_agent_label(assured)[0] == self.label

    def supporting_rationales(self) -> list[str]:
        if self.label is None:
            return []
        return [r.path.rationale for r in self.paths if r.path.is_vote() and r.path.label == self.label]


@dataclass(frozen=True)
class CrossAgentDecision:
    accepted: bool
    label: int | None
    agreeing_agents: list[str]
    n_voters: int
    reason: str  # why it was accepted or discarded (for logs and analysis)
    rationale: str = ""


@dataclass
class AnnotationResult:
    votes: pd.DataFrame  # one row per pair, agent and path
    agent_labels: pd.DataFrame  # one row per pair and agent
    consensus: pd.DataFrame  # accepted pairs only
    decisions: dict[str, CrossAgentDecision] = field(default_factory=dict)  # every pair, kept or not

    def stats(self) -> dict[str, int]:
        fresh = self.votes[~self.votes["cached"]] if len(self.votes) else self.votes
        return {
            "pairs": len(self.decisions),
            "accepted": len(self.consensus),
            "discarded": len(self.decisions) - len(self.consensus),
            "paths": len(self.votes),
            "new_calls": len(fresh),
            "failed_paths": int((self.votes["status"] == STATUS_FAILED).sum()) if len(self.votes) else 0,
            "prompt_tokens": int(fresh["prompt_tokens"].sum()) if len(fresh) else 0,
            "completion_tokens": int(fresh["completion_tokens"].sum()) if len(fresh) else 0,
        }


# --- level 1 --------------------------------------------------------------------------------------


def _count_votes(records: Iterable[PathRecord]) -> Counter:
    return Counter(r.path.label for r in records if r.path.is_vote())


def majority_is_certain(votes: Counter, remaining_paths: int, min_path_votes: int = 1) -> bool:
    """True when no remaining path can change the majority: the leader is ahead of the runner-up
    by more than the paths left (so it also holds when it already has more than N/2 votes)."""
    if not votes:
        return False
    ranked = votes.most_common()
    leader = ranked[0][1]
    runner_up = ranked[1][1] if len(ranked) > 1 else 0
    return leader >= min_path_votes and leader > runner_up + remaining_paths


def decide_agent_label(records: Sequence[PathRecord], min_path_votes: int = 1) -> tuple[int | None, str, int, str]:
    """(label, status, paths_agreeing, note) from the paths of one agent for one pair."""
    votes = _count_votes(records)
    if not votes:
        if any(r.path.status == STATUS_ABSTAIN for r in records):
            return None, ABSTAINED, 0, "every answering path abstained"
        errors = sorted({(r.path.error or "failed") for r in records})
        return None, FAILED, 0, "; ".join(errors)[:300] or "no paths"
    ranked = votes.most_common()
    label, top = ranked[0]
    if len(ranked) > 1 and ranked[1][1] == top:
        tied = sorted(lab for lab, count in ranked if count == top)
        return None, ABSTAINED, 0, f"tie between labels {tied}"
    if top < min_path_votes:
        return None, ABSTAINED, top, f"label {label} has {top} < {min_path_votes} supporting paths"
    return int(label), DECIDED, top, ""


def _judge_batch(agent: Agent, batch: list[PairToJudge], path_index: int) -> list[ReasoningPath]:
    try:
        paths = list(agent.judge(batch, path_index))
    except Exception as exc:  # a crashing agent fails its paths; it never produces labels
        error = mask_secrets(f"{TRANSIENT_ERROR} {type(exc).__name__}: {exc}")
        log.warning("agent %s failed on path %d: %s", agent.name, path_index, error)
        return [ReasoningPath.failed(error) for _ in batch]
    if len(paths) != len(batch):
        error = f"{TRANSIENT_ERROR} agent returned {len(paths)} paths for {len(batch)} pairs"
        return [ReasoningPath.failed(error) for _ in batch]
    # error text is stored (vote cache, gold/agent_votes): whatever looks like a key goes first
    return [replace(path, error=mask_secrets(path.error)) if path.error else path for path in paths]


def paths_of(agent: Agent, settings: AgreementSettings) -> int:
    """Reasoning paths ``agent`` is asked for per pair at most: ``n_paths``, or fewer if the agent says so."""
    agent_max = getattr(agent, "max_paths", None)
    return max(1, min(settings.n_paths, int(agent_max))) if agent_max else settings.n_paths


def vote_within_agent(
    agent: Agent,
    pairs: Sequence[PairToJudge],
    settings: AgreementSettings | None = None,
    cache: VoteCache | None = None,
    progress: Progress | None = None,
    judged: dict[str, int] | None = None,
) -> dict[str, AgentVerdict]:
    """Level 1 for one agent over many pairs; returns the verdict per pair_id (input order). ``progress`` counts
    the paths as they are answered (a pair settled early discounts the paths it no longer needs);
    ``judged[agent.name]`` the pairs whose verdict is known."""
    settings = settings or AgreementSettings()
    n_paths = paths_of(agent, settings)
    judged = judged if judged is not None else {}
    judged[agent.name] = 0

    def report(answered: int, unneeded: int = 0) -> None:
        if progress is not None:
            progress.discount(unneeded)
            progress.advance(answered, "pairs judged: " + ", ".join(f"{name} {n}" for name, n in judged.items()))
    config_key = agent.config_key()
    unique = list({p.pair_id: p for p in reversed(list(pairs))}.values())[::-1]  # first occurrence wins
    content_hash = {p.pair_id: p.content_hash() for p in unique}
    records: dict[str, list[PathRecord]] = {p.pair_id: [] for p in unique}
    settled: set[str] = set()
    pending = list(unique)

    for path_index in range(n_paths):
        if not pending:
            break
        keys: dict[str, CacheKey] = {p.pair_id: (config_key, content_hash[p.pair_id], path_index) for p in pending}
        cached = cache.get_many(list(keys.values())) if cache is not None else {}
        to_call = [p for p in pending if keys[p.pair_id] not in cached]
        report(len(pending) - len(to_call))
        fresh: dict[str, ReasoningPath] = {}
        for start in range(0, len(to_call), settings.batch_size):
            batch = to_call[start : start + settings.batch_size]
            fresh.update(zip((p.pair_id for p in batch), _judge_batch(agent, batch, path_index)))
            report(len(batch))
        if cache is not None and fresh:
            cache.put_many({keys[pid]: path for pid, path in fresh.items() if should_cache(path)})

        remaining = n_paths - path_index - 1
        still_pending = []
        for pair in pending:
            pid = pair.pair_id
            if pid in fresh:
                records[pid].append(PathRecord(path_index, fresh[pid], cached=False))
            else:
                records[pid].append(PathRecord(path_index, cached[keys[pid]], cached=True))
            if settings.early_stop and majority_is_certain(_count_votes(records[pid]), remaining, settings.min_path_votes):
                settled.add(pid)
            else:
                still_pending.append(pair)
        judged[agent.name] += len(pending) - (len(still_pending) if remaining else 0)
        report(0, remaining * (len(pending) - len(still_pending)))
        pending = still_pending

        if (
            settings.stop_agent_when_down
            and len(fresh) >= settings.down_after_failed_calls
            and all(p.is_transient_failure() for p in fresh.values())
        ):
            # Every call failed after its retries: the service is down. Asking again for the
            # next path index would only repeat the timeouts; the next run retries (not cached).
            log.warning("agent %s looks down (all %d calls of path %d failed); skipping its later paths",
                        agent.name, len(fresh), path_index)
            judged[agent.name] += len(pending)
            report(0, remaining * len(pending))
            break

    verdicts: dict[str, AgentVerdict] = {}
    for pair in unique:
        pid = pair.pair_id
        label, status, agreeing, note = decide_agent_label(records[pid], settings.min_path_votes)
        verdict = AgentVerdict(
            pair=pair, agent=agent.name, label=label, status=status, paths=records[pid],
            paths_agreeing=agreeing, stopped_early=len(records[pid]) < n_paths and pid in settled, rationale="",
            backend=agent.backend,
        )
        if status == DECIDED:
            verdict.rationale = merge_rationales(
                [(None, r) for r in verdict.supporting_rationales()],
                settings.max_path_rationale_chars, settings.max_rationale_chars,
            )
        else:
            verdict.rationale = note
        verdicts[pid] = verdict
    return verdicts


# --- level 2 --------------------------------------------------------------------------------------


def _shorten(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rfind(" ")]  # end on a word boundary when one is near
    return cut.rstrip(" ,;:") + "\u2026"


def merge_rationales(items: Sequence[tuple[str | None, str]], max_item_chars: int = 300, max_total_chars: int = 1200) -> str:
    """Merge (agent, rationale) items: de-duplicated (case and spacing ignored), each prefixed by its
    agent and shortened; whole items are dropped at the end rather than cut mid-way when the total
    limit is reached."""
    seen: set[str] = set()
    lines: list[str] = []
    for agent, rationale in items:
        text = _shorten(rationale or "", max_item_chars)
        if not text or text.lower() in seen:
            continue
        seen.add(text.lower())
        lines.append(f"[{agent}] {text}" if agent else text)
    kept: list[str] = []
    for index, line in enumerate(lines):
        room_for_ellipsis = 2 if index < len(lines) - 1 else 0  # "\n…" if more lines follow
        if len("\n".join([*kept, line])) + room_for_ellipsis > max_total_chars:
            kept.append("\u2026" if kept else _shorten(line, max_total_chars))
            break
        kept.append(line)
    return "\n".join(kept)


def agree_across_agents(
    verdicts: Sequence[AgentVerdict],
    quorum: float = 1.0,
    min_voters: int = 2,
    max_path_rationale_chars: int = 300,
    max_rationale_chars: int = 1200,
    min_backends: int = 1,
    solo_assured: bool = True,
) -> CrossAgentDecision:
    """Level 2 for one pair. Voters are the agents that decided a label; abstaining or failed agents
    do not vote. Accepted when there are at least ``min_voters`` voters, one label (a unique
    leader) is backed by at least ``quorum`` of them (1.0 = unanimity), and its backers run on at
    least ``min_backends`` different backends; or, with ``solo_assured``, when a single agent votes,
    its vote is assured and ``min_backends`` is 1."""
    voters = [v for v in verdicts if v.status == DECIDED and v.label in LABELS]
    n_voters = len(voters)
    if solo_assured and n_voters == 1 and voters[0].assured and min_backends <= 1:
        alone = voters[0]
        rationale = merge_rationales([(alone.agent, text) for text in alone.supporting_rationales()],
                                     max_path_rationale_chars, max_rationale_chars)
        return CrossAgentDecision(True, int(alone.label), [alone.agent], 1, "assured alone", rationale)
    if n_voters < min_voters:
        return CrossAgentDecision(False, None, [], n_voters, f"{n_voters} voting agents < min_voters {min_voters}")
    ranked = Counter(v.label for v in voters).most_common()
    label, top = ranked[0]
    if len(ranked) > 1 and ranked[1][1] == top:
        return CrossAgentDecision(False, None, [], n_voters, f"agents split evenly: {dict(ranked)}")
    if top < quorum * n_voters - 1e-9:
        return CrossAgentDecision(False, None, [], n_voters, f"label {label} backed by {top}/{n_voters} < quorum {quorum:.3g}")
    agreeing = [v for v in voters if v.label == label]
    backends = sorted({v.backend for v in agreeing})
    if len(backends) < min_backends:
        return CrossAgentDecision(False, None, [], n_voters, f"label {label} backed by judges of {len(backends)} "
                                  f"backend(s) ({', '.join(backends)}) < min_backends {min_backends}")
    rationale = merge_rationales(
        [(v.agent, text) for v in agreeing for text in v.supporting_rationales()],
        max_path_rationale_chars, max_rationale_chars,
    )
    reason = "unanimous" if top == n_voters else f"quorum {top}/{n_voters}"
    return CrossAgentDecision(True, int(label), [v.agent for v in agreeing], n_voters, reason, rationale)


# --- the annotator --------------------------------------------------------------------------------


def annotate(
    pairs: Sequence[PairToJudge],
    agents: Sequence[Agent],
    settings: AgreementSettings | None = None,
    cache: VoteCache | None = None,
) -> AnnotationResult:
    """Label pairs with the two-level agreement; returns the votes, agent_labels and consensus tables."""
    settings = settings or AgreementSettings()
    names = [a.name for a in agents]
    if len(set(names)) != len(names):
        raise ValueError(f"agent names must be unique: {names}")
    unique_pairs = list({p.pair_id: p for p in reversed(list(pairs))}.values())[::-1]
    # the paths the panel may be asked for; pairs settled early take theirs off as they settle
    most = len(unique_pairs) * sum(paths_of(agent, settings) for agent in agents)
    judged = {name: 0 for name in names}

    with Progress(most, "annotation", "path", settings.progress) as progress:
        def run(agent: Agent) -> dict[str, AgentVerdict]:
            return vote_within_agent(agent, unique_pairs, settings, cache, progress, judged)

        if settings.parallel_agents and len(agents) > 1:
            with ThreadPoolExecutor(max_workers=len(agents), thread_name_prefix="mra-agent") as pool:
                per_agent = list(pool.map(run, agents))
        else:
            per_agent = [run(agent) for agent in agents]

    vote_rows, label_rows, consensus_rows = [], [], []
    decisions: dict[str, CrossAgentDecision] = {}
    for pair in unique_pairs:
        base = {"pair_id": pair.pair_id, "query": pair.query, "language": pair.language, "doc_id": pair.doc_id}
        verdicts = [verdicts_by_pair[pair.pair_id] for verdicts_by_pair in per_agent]
        for agent, verdict in zip(agents, verdicts):
            config_key = agent.config_key()
            for record in verdict.paths:
                path = record.path
                vote_rows.append({
                    **base, "agent": agent.name, "path": record.path_index, "label": path.label,
                    "status": path.status, "rationale": path.rationale, "backend": agent.backend,
                    "model": agent.model, "prompt_version": agent.prompt_version, "config_key": config_key,
                    "latency_ms": float(path.latency_ms), "prompt_tokens": int(path.prompt_tokens),
                    "completion_tokens": int(path.completion_tokens), "error": path.error, "cached": record.cached,
                })
            label_rows.append({
                **base, "agent": agent.name, "label": verdict.label, "status": verdict.status,
                "paths_used": verdict.paths_used, "paths_agreeing": verdict.paths_agreeing,
                "stopped_early": verdict.stopped_early, "rationale": verdict.rationale,
            })
        decision = agree_across_agents(
            verdicts, settings.quorum, settings.min_voters, settings.max_path_rationale_chars,
            settings.max_rationale_chars, settings.min_backends, settings.solo_assured,
        )
        decisions[pair.pair_id] = decision
        if decision.accepted:
            consensus_rows.append({
                **base, "label": decision.label, "agreeing_agents": decision.agreeing_agents,
                "n_voters": decision.n_voters, "rationale": decision.rationale,
            })

    return AnnotationResult(
        votes=_frame(vote_rows, VOTE_COLUMNS, {
            "path": "int64", "label": "Int64", "latency_ms": "float64", "prompt_tokens": "int64",
            "completion_tokens": "int64", "cached": "bool",
        }),
        agent_labels=_frame(label_rows, AGENT_LABEL_COLUMNS, {
            "label": "Int64", "paths_used": "int64", "paths_agreeing": "int64", "stopped_early": "bool",
        }),
        consensus=_frame(consensus_rows, CONSENSUS_COLUMNS, {"label": "int64", "n_voters": "int64"}),
        decisions=decisions,
    )


def _frame(rows: list[dict], columns: list[str], dtypes: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    for column, dtype in dtypes.items():
        frame[column] = frame[column].astype(dtype)
    return frame

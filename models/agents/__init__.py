"""Annotator agents and the two-level agreement of the multi-agent relevance annotator (MRA).

Plain Python (no Dagster, no Spark). The heavy backends are imported lazily: importing this
package does not import torch or transformers.
"""

from .agreement import (
    AgentVerdict,
    AgreementSettings,
    AnnotationResult,
    CrossAgentDecision,
    agree_across_agents,
    annotate,
    decide_agent_label,
    majority_is_certain,
    merge_rationales,
    vote_within_agent,
)
from .base import (
    LABELS,
    STATUS_ABSTAIN,
    STATUS_FAILED,
    STATUS_OK,
    Agent,
    CallableAgent,
    PairToJudge,
    ReasoningPath,
    stable_hash,
)
from .cache import InMemoryVoteCache, SqliteVoteCache, VoteCache
from .openai_chat import OpenAIChatAgent
from .prompt import PROMPT_VERSION, build_messages, parse_judgement, sanitize_untrusted
from .embedded import DEFAULT_AGENTS, default_panel, pairs_to_judge, panel_calibration, panel_knowledge
from .knowledge import CatalogKnowledge, KnowledgeSettings
from .learned import Gate, LearnedJudge, fit_gate, fit_learned

__all__ = [
    "LABELS", "STATUS_ABSTAIN", "STATUS_FAILED", "STATUS_OK", "PROMPT_VERSION",
    "Agent", "AgentVerdict", "AgreementSettings", "AnnotationResult", "CallableAgent", "CrossAgentDecision",
    "InMemoryVoteCache", "LocalLLMAgent", "OpenAIChatAgent", "PairToJudge", "ReasoningPath",
    "SqliteVoteCache", "VoteCache",
    "agree_across_agents", "annotate", "build_messages", "decide_agent_label", "majority_is_certain",
    "merge_rationales", "parse_judgement", "sanitize_untrusted", "stable_hash", "vote_within_agent",
]
# the embedded judges (numpy, pandas, scikit-learn; torch only when the default MiniLM encoder is first used)
__all__ += [
    "CatalogKnowledge", "DEFAULT_AGENTS", "Gate", "KnowledgeSettings", "LearnedJudge", "default_panel", "fit_gate",
    "fit_learned", "pairs_to_judge", "panel_calibration", "panel_knowledge",
]


def __getattr__(name):
    # LocalLLMAgent itself imports torch only when it loads a model, but keep the module lazy too.
    if name == "LocalLLMAgent":
        from .local_llm import LocalLLMAgent

        return LocalLLMAgent
    raise AttributeError(name)

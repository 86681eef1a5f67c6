"""Embedded judges: the default annotator panel, no LLM needed, for any catalogue.

Three :class:`~models.agents.learned.LearnedJudge` s (``backend="embedded"``), each reading its own
kind of evidence so that their agreement (level 2) means something, each learnt from the seed
judgments and voting only where it was right out of fold:

- ``knowledge``: what the catalogue itself knows (models/agents/knowledge.py): its title words, the
  vocabularies of its attributes under whatever names they have, the glossary when there is one,
  and what clicks teach (new words, and which title words each query word's clicks land on). Per
  query word: does the document state it, contradict it or leave it out, and how strongly users
  searching it take this document's title words for it. It abstains on a query whose words the
  catalogue does not know, and does not call a pair irrelevant while one of its words is unknown;
- ``features``: lexical and embedding similarity of the query, read in the catalogue's words, with
  the document's title, description and attribute values;
- ``behaviour``: what users did with the pair: click-model attractiveness, clicks, dwell.

Documents are untrusted: no judge takes instructions from them. Every text a judge reads goes through
:func:`~models.agents.text.clean_document_text`, which drops the sentences
:func:`~models.agents.prompt.sanitize_untrusted` flags; the behaviour judge reads no text at all.
Nothing here knows how our simulator or any other source builds its data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .base import LABELS, PairToJudge, stable_hash
from .features import (
    BEHAVIOUR_FIELDS,
    Encoder,
    TextFeatures,
    WordAligner,
    behaviour_features,
    describe_behaviour,
    describe_knowledge,
    describe_text,
    knowledge_features,
)
from .knowledge import CatalogKnowledge, KnowledgeSettings
from .learned import LearnedJudge, fit_learned, solo_gates_where_alone
from .text import json_number, normalize_query, parse_attributes, tokenize

KNOWLEDGE_VERSION = "knowledge-v4"
FEATURES_VERSION = "features-v1"
BEHAVIOUR_VERSION = "behaviour-v2"
DEFAULT_AGENTS = ("knowledge", "features", "behaviour")
PAIR_COLUMNS = ["query", "language", "doc_id"]
# what a judge option may set, per judge (the panel file's numbers)
JUDGE_OPTIONS = {"knowledge": ("min_accuracy", "solo_accuracy", "folds"),
                 "features": ("min_accuracy", "solo_accuracy", "folds"),
                 "behaviour": ("min_accuracy", "solo_accuracy", "folds", "min_support")}
# the out-of-fold accuracy a judge's vote needs. A pair is kept only where two judges agree, so the text
# judges may vote below the accuracy asked of the kept labels. On mined pairs (benchmarks/judge_check.py
# --mined) 0.8/0.7/0.8 kept 7% of the ESCI stream's (96% right), 0.6/0.6/0.8 kept 25% there (77% right)
# and 53% of the demo stream's (91% right).
DEFAULT_MIN_ACCURACY = {"knowledge": 0.6, "features": 0.6, "behaviour": 0.8}
# the out-of-fold accuracy at which a judge's vote may stand alone (no other judge votes the pair): the accuracy
# asked of kept labels, calibrated on the seed pairs the other judges leave alone (solo_gates_where_alone). On
# mined pairs (benchmarks/judge_check.py --mined) it kept 22-29% of the ESCI stream's (79-90% right) instead of
# 8-17%, and 0-3.1% more of the demo stream's alone, whose labels stayed 90.6-94.4% right. Calibrated on every
# seed pair instead, it let 3-5% of the demo stream's pairs through alone at 62-86% right. Above 1: never.
DEFAULT_SOLO_ACCURACY = 0.9
# a judge never votes the label where the feature is above 0: the knowledge judge does not call a pair irrelevant
# while the query has a word the catalogue cannot read (seed judgments rarely show one, so its gate cannot know)
UNSURE = {"knowledge": {0: "unknown"}}

__all__ = ["DEFAULT_AGENTS", "JUDGE_OPTIONS", "default_panel", "normalize_query", "pair_id_of", "pairs_to_judge",
           "panel_calibration", "tokenize"]


def pair_id_of(query: str, language: str, doc_id: str) -> str:
    """The stable id of a (query, language, doc_id) pair (the pipeline's ``stable_hash`` of the key)."""
    return stable_hash([query, language, doc_id])


def _behaviour_facts(row: Mapping) -> dict:
    facts = {}
    for key in BEHAVIOUR_FIELDS:
        value = json_number(row.get(key))
        if value is not None:
            facts[key] = value
    return facts


def pairs_to_judge(pairs: pd.DataFrame, catalog: pd.DataFrame, behaviour: pd.DataFrame | None = None) -> list[PairToJudge]:
    """PairToJudge objects for the annotator, in the order of ``pairs``.

    ``pairs``: query, language, doc_id (+ optional pair_id, else the stable hash of the three).
    ``catalog``: doc_id, title, description, attributes (JSON). ``behaviour``: query, language,
    doc_id and any of ``BEHAVIOUR_FIELDS``; queries are matched case- and space-insensitively.
    A document missing from the catalogue gets empty texts (the judges abstain on it).
    """
    documents = {str(r["doc_id"]): r for r in catalog.drop_duplicates("doc_id").to_dict("records")}
    facts: dict[tuple[str, str, str], dict] = {}
    if behaviour is not None and len(behaviour):
        for row in behaviour.to_dict("records"):
            key = (normalize_query(row["query"]), str(row["language"]), str(row["doc_id"]))
            facts[key] = {**facts.get(key, {}), **_behaviour_facts(row)}
    out = []
    for row in pairs.to_dict("records"):
        query, language, doc_id = str(row["query"]), str(row["language"]), str(row["doc_id"])
        given_id = row.get("pair_id")
        pair_id = pair_id_of(query, language, doc_id) if pd.isna(given_id) else str(given_id)
        doc = documents.get(doc_id, {})
        out.append(PairToJudge(
            pair_id=pair_id, query=query, language=language, doc_id=doc_id, title=_text(doc.get("title")),
            description=_text(doc.get("description")), attributes=parse_attributes(doc.get("attributes")),
            knowledge=facts.get((normalize_query(query), language, doc_id), {}),
        ))
    return out


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _encoder_name(encoder: Encoder | None, encoder_name: str | None) -> str:
    if encoder_name:
        return encoder_name
    if encoder is None:
        return "all-MiniLM-L6-v2"
    name = getattr(encoder, "name", None) or getattr(encoder, "__qualname__", None)
    if not name:
        raise ValueError("give the encoder a name (encoder_name=...): it keys the vote cache")
    return str(name)


def _options(judge_options: Mapping[str, Mapping[str, float]] | None, name: str) -> dict:
    given = dict((judge_options or {}).get(name, {}))
    unknown = set(given) - set(JUDGE_OPTIONS[name])
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)} for the {name} judge; known: {list(JUDGE_OPTIONS[name])}")
    return given


def seed_pairs(seed_judgments: pd.DataFrame, catalog: pd.DataFrame) -> tuple[list[PairToJudge], np.ndarray, list[str]]:
    """The seed judgments as pairs (with their behaviour columns, when given), labels and query keys."""
    seed = seed_judgments[seed_judgments["label"].isin(LABELS)].copy()
    if "split" in seed.columns:
        seed = seed[seed["split"].fillna("seed") == "seed"]
    seed["query"] = seed["query"].map(normalize_query)
    seed = seed.drop_duplicates(PAIR_COLUMNS).reset_index(drop=True)
    columns = [c for c in BEHAVIOUR_FIELDS if c in seed.columns]
    pairs = pairs_to_judge(seed[PAIR_COLUMNS], catalog, seed[PAIR_COLUMNS + columns] if columns else None)
    return pairs, seed["label"].to_numpy(dtype=int), seed["query"].tolist()


def default_panel(catalog: pd.DataFrame, glossary: pd.DataFrame | None, seed_judgments: pd.DataFrame, *,
                  as_of=None, impressions: pd.DataFrame | None = None, encoder: Encoder | None = None,
                  encoder_name: str | None = None, agents: Sequence[str] = DEFAULT_AGENTS,
                  judge_options: Mapping[str, Mapping[str, float]] | None = None,
                  knowledge_settings: KnowledgeSettings = KnowledgeSettings(), seed: int = 0,
                  targets: Sequence[PairToJudge] | None = None) -> list[LearnedJudge]:
    """The embedded judges, learnt on the seed judgments (see the module docstring).

    ``seed_judgments``: query, language, doc_id, label (split seed), with the behaviour columns of the
    seed period (``BEHAVIOUR_FIELDS``) for the behaviour judge. ``glossary``: optional term, language,
    concept, added. ``as_of``: the newest day the panel may know (glossary entries added later are
    ignored). ``impressions``: query, language, doc_id, clicks of the days up to ``as_of`` the panel may
    know (to learn new words and click links). ``judge_options``: per judge name, numbers among ``JUDGE_OPTIONS`` (``min_accuracy``: the
    out-of-fold accuracy a vote needs, ``DEFAULT_MIN_ACCURACY``; ``solo_accuracy``: the one at which a vote may
    stand alone, ``DEFAULT_SOLO_ACCURACY``; ``folds``: fold models = reasoning paths, default 3;
    ``min_support``: examined impressions the behaviour judge needs without a click, default 0.25).
    ``targets``: the pairs the panel is about to judge (the mined pairs); each judge's gate is calibrated
    for their label mix, as it estimates it (models/agents/learned.py).
    """
    unknown = set(agents) - set(DEFAULT_AGENTS)
    if unknown:
        raise ValueError(f"unknown embedded agents {sorted(unknown)}; known: {list(DEFAULT_AGENTS)}")
    knowledge = CatalogKnowledge.from_frames(catalog, glossary, as_of, impressions, knowledge_settings)
    pairs, labels, queries = seed_pairs(seed_judgments, catalog)
    builders = {
        "knowledge": lambda o: (KNOWLEDGE_VERSION, lambda ps: knowledge_features(knowledge, ps), describe_knowledge,
                                knowledge.fingerprint()),
        "features": lambda o: (FEATURES_VERSION, TextFeatures(knowledge, WordAligner(encoder)), describe_text,
                               stable_hash([knowledge.fingerprint(), _encoder_name(encoder, encoder_name)])),
        "behaviour": lambda o: (BEHAVIOUR_VERSION,
                                lambda ps, s=float(o.get("min_support", 0.25)): behaviour_features(ps, s),
                                describe_behaviour, stable_hash({"min_support": o.get("min_support", 0.25)})),
    }
    built, fitted = {}, {}
    for name in [a for a in DEFAULT_AGENTS if a in agents]:
        options = _options(judge_options, name)
        version, featurize, describe, fingerprint = builders[name](options)
        features, usable = featurize(pairs)
        target, target_usable = featurize(targets) if targets else (None, None)
        fitted[name] = fit_learned(features, labels, queries, usable, folds=int(options.get("folds", 3)),
                                   min_accuracy=float(options.get("min_accuracy", DEFAULT_MIN_ACCURACY[name])),
                                   solo_accuracy=float(options.get("solo_accuracy", DEFAULT_SOLO_ACCURACY)),
                                   seed=seed, target=None if target is None else target[target_usable])
        built[name] = (version, featurize, describe, fingerprint, target, target_usable)
    panel = []
    for name, judge_fit in solo_gates_where_alone(fitted, labels).items():
        version, featurize, describe, fingerprint, target, target_usable = built[name]
        judge = LearnedJudge(name, version, featurize, judge_fit, fingerprint=fingerprint, describe=describe,
                             unsure=UNSURE.get(name))
        if targets:
            judge.remember(targets, target, target_usable)
        judge.knowledge = knowledge
        panel.append(judge)
    return panel


def panel_knowledge(panel: Sequence) -> CatalogKnowledge | None:
    """The catalogue knowledge the panel's judges share (what an LLM judge's prompt is given), if any."""
    return next((getattr(a, "knowledge", None) for a in panel if getattr(a, "knowledge", None) is not None), None)


def panel_calibration(agents: Sequence) -> dict:
    """Each embedded judge's gate and fit summary, and the knowledge they share, JSON, for lineage."""
    out = {a.name: a.calibration() for a in agents if isinstance(a, LearnedJudge)}
    knowledge = panel_knowledge(agents)
    if knowledge is not None:
        out["catalogue_knowledge"] = knowledge.summary()
    return out

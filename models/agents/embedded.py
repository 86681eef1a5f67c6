"""Embedded judges: the default annotator panel, no LLM needed.

Three agents with the :class:`~models.agents.base.Agent` interface (``backend="embedded"``), each
grounded in a different kind of evidence, so their agreement (level 2) means something:

- :class:`KnowledgeAgent` reads the query with the company glossary (only the entries known at
  ``as_of``: the taxonomy lags the stream) and catalogue facts (brands, sizes, complements), and
  compares the concepts it finds with the document's category and attributes. It abstains on a
  query word it cannot map (new slang, an unknown product type) and on a document that does not
  state what the query asks for.
- :class:`SemanticAgent` scores how well the document text covers the query with MiniLM word
  embeddings and maps the score to 0-3 with cut points calibrated on the seed judgments,
  abstaining where the calibration says the score is unreliable.
- :class:`BehaviourAgent` reads what users did (click-model attractiveness and its support, the
  dwell time of clicks), calibrated on the seed judgments the same way.

Each agent's reasoning paths (level 1) are different views of the evidence: the knowledge agent
reads the structured attributes, the title, or the glossary alone; the semantic agent the title,
title + description, or title + attributes; the behaviour agent uses calibrations fitted on
different resamples of the seed judgments.

Documents are untrusted: no agent takes instructions from them. The knowledge agent never reads
the judged document's description (descriptions only count towards complements, and only when
several catalogue documents name the same two product types together); the semantic agent drops
every sentence that :func:`~models.agents.prompt.sanitize_untrusted` flags before embedding the
text; the behaviour agent reads no text at all.

Plain Python, pandas, numpy; torch only through the default encoder (models/embeddings.py),
imported when it is first needed.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .base import LABELS, STATUS_ABSTAIN, STATUS_OK, PairToJudge, ReasoningPath, stable_hash
from .prompt import INSTRUCTION_REDACTED, JSON_REDACTED, sanitize_untrusted

EMBEDDED_BACKEND = "embedded"
KNOWLEDGE_VERSION = "knowledge-v1"
SEMANTIC_VERSION = "semantic-v1"
BEHAVIOUR_VERSION = "behaviour-v1"
DEFAULT_AGENTS = ("knowledge", "semantic", "behaviour")
PAIR_COLUMNS = ["query", "language", "doc_id"]
# What pairs_to_judge copies from a behaviour frame into PairToJudge.knowledge, when present.
BEHAVIOUR_FIELDS = ("attractiveness", "support", "impressions", "clicks", "ctr", "mean_position", "mean_dwell_ms")

CONCEPT_KINDS = ("category", "brand", "colour", "size", "material", "audience")
CONSTRAINT_KINDS = ("brand", "colour", "size", "material", "audience")
KNOWLEDGE_VIEWS = ("attributes", "title", "glossary")
SEMANTIC_VIEWS = ("title", "title+description", "title+attributes")
MAX_PHRASE_TOKENS = 4
MAX_TEXT_CHARS = 2000

_TOKEN = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (the simulator's and the ranker's tokenisation)."""
    return _TOKEN.findall(str(text or "").lower())


def normalize_query(query: str) -> str:
    """Case-folded, trimmed, single-spaced: the key the pipeline groups pairs by."""
    return " ".join(str(query).lower().split())


def clean_document_text(text: str | None, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Untrusted catalogue text without the sentences that try to instruct an annotator.

    A flagged sentence is dropped whole (rather than left with a redaction note) so the text an
    embedded judge scores is the same as if the injection had never been written.
    """
    kept = []
    for sentence in _SENTENCE_END.split(str(text or "")):
        clean = sanitize_untrusted(sentence, max_chars)
        if clean and INSTRUCTION_REDACTED not in clean and JSON_REDACTED not in clean:
            kept.append(clean)
    return " ".join(kept)[:max_chars]


def parse_attributes(value) -> dict:
    """The catalogue's attributes (a JSON object string or a dict) as a dict; {} when unreadable."""
    if isinstance(value, Mapping):
        return dict(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {}
    try:
        parsed = json.loads(str(value))
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def concept_value(value) -> str:
    """A concept's value as the glossary spells it: lower case, spaces as underscores."""
    return "_".join(str(value).lower().split())


def _within_one_edit(a: str, b: str) -> bool:
    """Damerau (optimal string alignment) distance <= 1: one insertion, deletion, substitution or
    swap of neighbours, the typos shoppers make."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    short, long_ = (a, b) if la < lb else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1:]


def _json_number(value):
    """A plain int or float (JSON, stable hashing); None for missing, NaN or non-numeric values."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# ==================================================================================================
# Threshold calibration (shared by the semantic and behaviour agents)
# ==================================================================================================


@dataclass(frozen=True)
class ThresholdCalibration:
    """Score -> label 0-3 by three cut points, abstaining inside the bands where it was unreliable.

    ``cuts``: a score below cuts[0] is 0, below cuts[1] is 1, below cuts[2] is 2, else 3 (equal
    cuts mean a label is never given). ``abstain_bands``: [low, high] score ranges (None = open)
    whose seed pairs the cuts labelled with an accuracy below ``min_band_accuracy``.
    ``balanced``: the cuts and bands weigh each label's pairs by 1 / its share of the seed pairs.
    ``accuracy``/``coverage``: plain accuracy on the seed pairs it was fitted on, over the pairs
    it does not abstain on; ``overall_accuracy``: over all of them. ``to_dict`` is JSON.
    """

    cuts: tuple[float, float, float]
    abstain_bands: tuple[tuple[float | None, float | None], ...] = ()
    accuracy: float = 0.0
    coverage: float = 0.0
    overall_accuracy: float = 0.0
    n: int = 0
    min_band_accuracy: float = 0.0
    balanced: bool = False

    def predict(self, score: float) -> int:
        return int(np.searchsorted(np.asarray(self.cuts, dtype=float), score, side="right"))

    def abstains(self, score: float) -> bool:
        return any((low is None or score >= low) and (high is None or score <= high)
                   for low, high in self.abstain_bands)

    def label(self, score: float | None) -> int | None:
        if score is None or not math.isfinite(score) or self.abstains(score):
            return None
        return self.predict(score)

    def to_dict(self) -> dict:
        return {"cuts": list(self.cuts), "abstain_bands": [list(b) for b in self.abstain_bands],
                "accuracy": self.accuracy, "coverage": self.coverage, "overall_accuracy": self.overall_accuracy,
                "n": self.n, "min_band_accuracy": self.min_band_accuracy, "balanced": self.balanced}

    @classmethod
    def from_dict(cls, data: Mapping) -> "ThresholdCalibration":
        return cls(tuple(float(c) for c in data["cuts"]),  # type: ignore[arg-type]
                   tuple((b[0], b[1]) for b in data.get("abstain_bands", ())),
                   float(data.get("accuracy", 0.0)), float(data.get("coverage", 0.0)),
                   float(data.get("overall_accuracy", 0.0)), int(data.get("n", 0)),
                   float(data.get("min_band_accuracy", 0.0)), bool(data.get("balanced", False)))


def _best_ordinal_cuts(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple[float, float, float]:
    """Cut points (monotone: higher score, higher label) that label the most (weighted) pairs right.

    Exact, by dynamic programming over the sorted scores: with P_k[i] the weight of label-k pairs
    among the i lowest scores, pick cut positions a <= b <= c maximising
    P_0[a] + (P_1[b] - P_1[a]) + (P_2[c] - P_2[b]) + (P_3[n] - P_3[c]). Cuts only fall between
    distinct scores, halfway.
    """
    order = np.argsort(scores, kind="stable")
    s, y, w = scores[order], labels[order], weights[order]
    n = len(s)
    prefix = np.zeros((4, n + 1))
    for k in LABELS:
        prefix[k, 1:] = np.cumsum(w * (y == k))
    allowed = np.r_[True, s[1:] > s[:-1], True]

    def running_best(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        best, arg = np.empty_like(values), np.empty(len(values), dtype=int)
        current = 0
        for i, v in enumerate(values):
            if v > values[current]:
                current = i
            best[i], arg[i] = values[current], current
        return best, arg

    best_a, arg_a = running_best(np.where(allowed, prefix[0] - prefix[1], -np.inf))
    best_b, arg_b = running_best(np.where(allowed, best_a + prefix[1] - prefix[2], -np.inf))
    c = int(np.argmax(np.where(allowed, best_b + prefix[2] - prefix[3], -np.inf)))
    b = int(arg_b[c])
    a = int(arg_a[b])

    def cut(i: int) -> float:
        if i == 0:
            return float(s[0]) - 1.0  # every score is above it
        if i == n:
            return float(s[-1]) + 1.0  # no score is above it
        return float((s[i - 1] + s[i]) / 2.0)

    return cut(a), cut(b), cut(c)


def calibrate_thresholds(scores: Sequence[float], labels: Sequence[int], *, min_band_accuracy: float = 0.6,
                         balanced: bool = True, bin_size: int | None = None) -> ThresholdCalibration:
    """Fit cut points mapping a score to 0-3 on judged pairs, and where to abstain.

    The cuts maximise accuracy (higher score = higher label). ``balanced`` weighs each label's
    pairs by 1 / its share, so the cuts follow the score distributions of the labels rather than
    how common each label was in the seed set: the pairs an iteration mines are not labelled in
    the seed's proportions (they are picked for clicks and disagreements, in a drifted stream).
    The pairs are then grouped into consecutive score bins of about ``bin_size`` (default 1/20 of
    them, at least 30; equal scores never split); a bin whose (weighted) accuracy under the cuts
    is below ``min_band_accuracy`` becomes an abstention band. The outermost bins reach to
    +-infinity.
    """
    frame = pd.DataFrame({"score": np.asarray(scores, dtype=float), "label": np.asarray(labels)}).dropna()
    frame = frame[np.isfinite(frame["score"]) & frame["label"].isin(LABELS)]
    if frame.empty:
        raise ValueError("calibrate_thresholds needs at least one judged pair with a finite score")
    s = frame["score"].to_numpy()
    y = frame["label"].to_numpy().astype(int)
    n = len(s)
    share = np.bincount(y, minlength=4) / n
    weights = 1.0 / share[y] if balanced else np.ones(n)
    cuts = _best_ordinal_cuts(s, y, weights)
    right = np.searchsorted(np.asarray(cuts), s, side="right") == y

    size = bin_size or max(30, n // 20)
    order = np.argsort(s, kind="stable")
    s_sorted, right_sorted, w_sorted = s[order], right[order], weights[order]
    bins: list[tuple[int, int]] = []  # [start, end) into the sorted arrays
    start = 0
    while start < n:
        end = min(n, start + size)
        while end < n and s_sorted[end] == s_sorted[end - 1]:
            end += 1
        if n - end < size // 2:  # no runt bin at the top: fold it into this one
            end = n
        bins.append((start, end))
        start = end

    bands: list[tuple[float | None, float | None]] = []
    for index, (lo, hi) in enumerate(bins):
        if np.average(right_sorted[lo:hi], weights=w_sorted[lo:hi]) >= min_band_accuracy:
            continue
        low = None if index == 0 else float((s_sorted[lo - 1] + s_sorted[lo]) / 2.0)
        high = None if index == len(bins) - 1 else float((s_sorted[hi - 1] + s_sorted[hi]) / 2.0)
        if bands and bands[-1][1] == low:  # neighbouring bands merge
            low = bands.pop()[0]
        bands.append((low, high))

    calibration = ThresholdCalibration(cuts, tuple(bands), n=n, min_band_accuracy=float(min_band_accuracy),
                                       balanced=balanced)
    voted = np.array([not calibration.abstains(v) for v in s])
    return replace(calibration, accuracy=round(float(right[voted].mean()) if voted.any() else 0.0, 4),
                   coverage=round(float(voted.mean()), 4), overall_accuracy=round(float(right.mean()), 4))


# ==================================================================================================
# Knowledge: the glossary, the catalogue and the concepts they name
# ==================================================================================================


@dataclass(frozen=True)
class QueryReading:
    """What the knowledge agent understood a query to ask for."""

    category: str | None
    constraints: dict[str, str]  # kind -> value (brand, colour, size, material, audience)
    unknown: tuple[str, ...] = ()  # words it could not map
    conflicts: tuple[str, ...] = ()  # kinds named twice with different values, ambiguous words
    repaired: tuple[tuple[str, str], ...] = ()  # (typo, word) repairs

    def problem(self) -> str | None:
        """Why this reading cannot be judged on; None when it can."""
        if self.unknown:
            return "unknown query terms: " + ", ".join(self.unknown)
        if self.conflicts:
            return "ambiguous query: " + ", ".join(self.conflicts)
        if self.category is None:
            return "no product type in the query"
        return None

    def describe(self) -> str:
        wanted = ", ".join(f"{k} {v}" for k, v in sorted(self.constraints.items()))
        text = f"query wants {self.category}" + (f" ({wanted})" if wanted else "")
        if self.repaired:
            text += "; read " + ", ".join(f"{a}->{b}" for a, b in self.repaired)
        return text


@dataclass(frozen=True)
class DocReading:
    """The document's category and attributes, from one source (structured attributes or title)."""

    category: str | None
    values: dict[str, str]  # kind -> value; a kind it does not state is absent
    source: str


@dataclass(frozen=True)
class KnowledgeSettings:
    fuzzy_min_length: int = 4  # shorter words are not typo-repaired ("rot" ~ "rat" is a guess)
    # an unmapped query word seen with this many product types, and alongside each of these kinds of
    # attribute, is a generic modifier ("cheap", "buy"): see KnowledgeBase._learn_modifiers
    min_modifier_categories: int = 3
    modifier_evidence_kinds: tuple[str, ...] = ("colour", "material", "audience")
    min_size_word_docs: int = 5  # titles that put a word before the size value ("size 42") to learn it
    min_complement_docs: int = 3  # catalogue texts naming two product types together to call them complements
    learn_type_names: bool = True  # learn product-type names the glossary lacks from catalogue titles
    min_type_name_docs: int = 3  # titles that must use a name (for one type only) to learn it
    # a word learnt from clicks (new slang the glossary lacks): see KnowledgeBase._learn_words_from_clicks
    min_word_clicks: int = 5  # clicks on documents of the queries that use it
    min_word_queries: int = 2  # distinct queries that use it
    min_word_click_share: float = 0.8  # share of those clicks on one product type


class KnowledgeBase:
    """The concepts the knowledge agent can name, per language.

    - glossary terms (``added <= as_of``): product types, brands, colours, materials, audiences,
      synonyms and slang;
    - catalogue facts, from the documents already on sale at ``as_of``: every brand and size value
      in the structured attributes; the names titles give a product type the glossary does not
      know yet (a launched type's titles call it "air fryer" long before the taxonomy does); the
      word titles put before a size ("size", "Größe"); which product types the catalogue names
      together ("goes well with socks", "case for smartphone") - the complements;
    - generic modifiers learnt from query texts: an unmapped word used with many product types;
    - product-type words learnt from clicks: slang never appears in the catalogue and the glossary
      learns it late or never, but shoppers who type it click documents of one product type.
    """

    ANY_LANGUAGE = "*"

    def __init__(self, glossary_terms: dict[str, dict[tuple[str, ...], frozenset[str]]],
                 catalogue_terms: dict[str, dict[tuple[str, ...], frozenset[str]]],
                 ignorable: dict[str, frozenset[str]], complements: frozenset[tuple[str, str]],
                 as_of: str | None = None, settings: KnowledgeSettings = KnowledgeSettings()):
        self.glossary_terms = glossary_terms
        self.catalogue_terms = catalogue_terms  # language (or ANY_LANGUAGE) -> phrase -> concepts
        self.ignorable = ignorable
        self.complements = complements
        self.as_of = as_of
        self.settings = settings
        self.click_terms: dict[str, dict[tuple[str, ...], frozenset[str]]] = {}  # language -> word -> type
        self.type_names: dict[str, dict[str, tuple[str, ...]]] = {}  # language -> type -> its commonest title name
        self._terms_cache: dict[tuple[str, bool], dict[tuple[str, ...], frozenset[str]]] = {}
        self._vocab_cache: dict[str, dict[int, list[str]]] = {}
        self._reading_cache: dict[tuple[str, str, bool, bool], QueryReading] = {}

    # --- building -------------------------------------------------------------------------------

    @classmethod
    def from_frames(cls, catalog: pd.DataFrame, glossary: pd.DataFrame | None, as_of=None,
                    query_texts: pd.DataFrame | None = None,
                    settings: KnowledgeSettings = KnowledgeSettings()) -> "KnowledgeBase":
        """``catalog``: doc_id, language, title, description, attributes (JSON; ``available_from``
        in it hides a product launched after ``as_of``). ``glossary``: term, language, concept,
        kind, added (ISO date); entries added after ``as_of`` are not known yet. ``query_texts``:
        query, language of logged queries (optional), to learn generic modifiers; with doc_id and
        clicks columns (logged impressions) also to learn product-type words from clicks."""
        as_of_text = None if as_of is None else str(as_of)[:10]
        glossary_terms: dict[str, dict[tuple[str, ...], set[str]]] = defaultdict(lambda: defaultdict(set))
        if glossary is not None and len(glossary):
            known = glossary
            if as_of_text is not None and "added" in glossary.columns:
                added = glossary["added"].astype(str).str[:10]
                known = glossary[(added <= as_of_text) | glossary["added"].isna()]
            for term, language, concept in known[["term", "language", "concept"]].itertuples(index=False):
                kind, _, value = str(concept).partition(":")
                phrase = tuple(tokenize(term))
                if kind in CONCEPT_KINDS and value and phrase:
                    glossary_terms[str(language)][phrase].add(f"{kind}:{concept_value(value)}")

        attributes = [parse_attributes(a) for a in catalog["attributes"]]
        live = [as_of_text is None or str(a.get("available_from") or "")[:10] <= as_of_text for a in attributes]
        catalog = catalog[live].reset_index(drop=True)
        attributes = [a for a, keep in zip(attributes, live) if keep]
        any_language: dict[tuple[str, ...], set[str]] = defaultdict(set)
        for attrs in attributes:
            for kind in ("brand", "size"):
                phrase = tuple(tokenize(attrs.get(kind) or ""))
                if phrase:
                    any_language[phrase].add(f"{kind}:{concept_value(attrs[kind])}")

        base = cls({lang: {p: frozenset(c) for p, c in terms.items()} for lang, terms in glossary_terms.items()},
                   {cls.ANY_LANGUAGE: {p: frozenset(c) for p, c in any_language.items()}},
                   {}, frozenset(), as_of_text, settings)
        size_words = base._learn_size_words(catalog, attributes)
        base.ignorable = size_words
        base._clear_caches()
        if settings.learn_type_names:
            for language, names in base._learn_type_names(catalog, attributes).items():
                base.catalogue_terms[language] = names
            base._clear_caches()
        base.complements = base._learn_complements(catalog, attributes)
        if query_texts is not None and len(query_texts):
            modifiers = base._learn_modifiers(query_texts)
            base.ignorable = {lang: size_words.get(lang, frozenset()) | modifiers.get(lang, frozenset())
                              for lang in set(size_words) | set(modifiers)}
            base._clear_caches()
            if {"doc_id", "clicks"} <= set(query_texts.columns):
                base.click_terms = base._learn_words_from_clicks(query_texts, catalog, attributes)
        base._clear_caches()
        base.type_names = base._commonest_type_names(catalog, attributes)
        return base

    def _clear_caches(self) -> None:
        self._terms_cache.clear()
        self._vocab_cache.clear()
        self._reading_cache.clear()

    def _learn_type_names(self, catalog: pd.DataFrame, attributes: list[dict]) -> dict[str, dict]:
        """Names of product types the glossary lacks, from titles of documents of that type.

        In a title that names no product type the lexicon knows, the first run of unknown words is
        a candidate name for the document's category. A name is learnt when at least
        ``min_type_name_docs`` titles use it, all for the same category.
        """
        uses: dict[tuple[str, tuple[str, ...]], Counter] = defaultdict(Counter)
        for language, title, attrs in zip(catalog["language"], catalog["title"], attributes):
            own = attrs.get("category")
            if not own:
                continue
            language = str(language)
            ignorable = self.ignorable.get(language, frozenset())
            run: list[str] = []
            names_a_type = False
            for phrase, concepts in self._segment(tokenize(clean_document_text(title)), language):
                if concepts:
                    names_a_type |= any(c.startswith("category:") for c in concepts)
                    if run:
                        break
                elif phrase[0] not in ignorable:
                    run.append(phrase[0])
            if run and not names_a_type and len(run) <= MAX_PHRASE_TOKENS:
                uses[(language, tuple(run))][concept_value(own)] += 1
        out: dict[str, dict] = defaultdict(dict)
        for (language, phrase), categories in uses.items():
            if len(categories) == 1:
                category, count = next(iter(categories.items()))
                if count >= self.settings.min_type_name_docs:
                    out[language][phrase] = frozenset({f"category:{category}"})
        return dict(out)

    def _learn_size_words(self, catalog: pd.DataFrame, attributes: list[dict]) -> dict[str, frozenset[str]]:
        counts: dict[str, Counter] = defaultdict(Counter)
        for language, title, attrs in zip(catalog["language"], catalog["title"], attributes):
            size = str(attrs.get("size") or "").lower()
            if not size:
                continue
            tokens = tokenize(clean_document_text(title))
            spots = [i for i, t in enumerate(tokens) if t == size and i > 0]
            if spots:
                counts[str(language)][tokens[spots[-1] - 1]] += 1
        out = {}
        for language, counter in counts.items():
            terms = self.terms(language)
            out[language] = frozenset(w for w, c in counter.items()
                                      if c >= self.settings.min_size_word_docs and (w,) not in terms)
        return out

    def _learn_complements(self, catalog: pd.DataFrame, attributes: list[dict]) -> frozenset[tuple[str, str]]:
        together: Counter = Counter()
        for language, title, description, attrs in zip(catalog["language"], catalog["title"],
                                                        catalog["description"], attributes):
            own = attrs.get("category")
            if not own:
                continue
            own = concept_value(own)
            text = clean_document_text(title) + " . " + clean_document_text(description)
            named = {c.split(":", 1)[1] for c in self._mentions(tokenize(text), str(language))
                     if c.startswith("category:")}
            for other in named - {own}:
                together[frozenset((own, other))] += 1
        pairs = set()
        for key, count in together.items():
            if count >= self.settings.min_complement_docs and len(key) == 2:
                a, b = sorted(key)
                pairs |= {(a, b), (b, a)}
        return frozenset(pairs)

    def _learn_words_from_clicks(self, impressions: pd.DataFrame, catalog: pd.DataFrame,
                                 attributes: list[dict]) -> dict[str, dict[tuple[str, ...], frozenset[str]]]:
        """Product-type words the lexicon lacks (new slang), from what shoppers clicked.

        In a query that names no product type and has exactly one word the lexicon cannot map, that
        word is probably the type. It is learnt as a name of type t when the queries using it drew at
        least ``min_word_clicks`` clicks from ``min_word_queries`` distinct queries, and at least
        ``min_word_click_share`` of those clicks went to documents of t. Click logs mining synonyms,
        as search teams do: the glossary lags slang by days or never learns it; clicks do not.
        """
        category_of = {(str(d), str(lang)): concept_value(a["category"])
                       for d, lang, a in zip(catalog["doc_id"], catalog["language"], attributes) if a.get("category")}
        clicked = impressions[impressions["clicks"].fillna(0) > 0]
        clicks: dict[tuple[str, str], Counter] = defaultdict(Counter)
        queries: dict[tuple[str, str], set[str]] = defaultdict(set)
        for query, language, doc_id, n in clicked[["query", "language", "doc_id", "clicks"]].itertuples(index=False):
            category = category_of.get((str(doc_id), str(language)))
            if category is None:
                continue
            reading = self.read_query(normalize_query(str(query)), str(language), repair=False)
            if reading.category is not None or reading.conflicts or len(reading.unknown) != 1:
                continue
            key = (str(language), reading.unknown[0])
            clicks[key][category] += int(n)
            queries[key].add(str(query))
        out: dict[str, dict[tuple[str, ...], frozenset[str]]] = defaultdict(dict)
        settings = self.settings
        for (language, word), counter in clicks.items():
            total = sum(counter.values())
            category, top = counter.most_common(1)[0]
            if (total >= settings.min_word_clicks and len(queries[(language, word)]) >= settings.min_word_queries
                    and top >= settings.min_word_click_share * total):
                out[language][(word,)] = frozenset({f"category:{category}"})
        return dict(out)

    def _commonest_type_names(self, catalog: pd.DataFrame, attributes: list[dict]) -> dict[str, dict[str, tuple[str, ...]]]:
        """Per language and product type, the name the type's titles use most (what a query word
        mapped to that type is rewritten to, for judges that compare words: see SemanticAgent)."""
        uses: dict[tuple[str, str], Counter] = defaultdict(Counter)
        for language, title, attrs in zip(catalog["language"], catalog["title"], attributes):
            own = attrs.get("category")
            if not own:
                continue
            own = concept_value(own)
            for phrase, concepts in self._segment(tokenize(clean_document_text(title)), str(language)):
                if concepts == {f"category:{own}"}:
                    uses[(str(language), own)][phrase] += 1
                    break
        out: dict[str, dict[str, tuple[str, ...]]] = defaultdict(dict)
        for (language, category), counter in uses.items():
            out[language][category] = counter.most_common(1)[0][0]
        return dict(out)

    def canonical_query(self, query: str, language: str) -> str:
        """The query with each phrase that names one product type (a synonym, glossary slang, a word
        learnt from clicks) replaced by the name the type's titles use most; other words unchanged."""
        names = self.type_names.get(language, {})
        words: list[str] = []
        for phrase, concepts in self._segment(tokenize(query), language):
            kind, _, value = next(iter(concepts)).partition(":") if len(concepts) == 1 else ("", "", "")
            words.extend(names.get(value, phrase) if kind == "category" else phrase)
        return " ".join(words)

    def _learn_modifiers(self, query_texts: pd.DataFrame) -> dict[str, frozenset[str]]:
        """Unmapped words that shoppers add to queries for any product type ("cheap", "buy", "new").

        A word qualifies when it came with at least ``min_modifier_categories`` product types and
        shared a query with every kind in ``modifier_evidence_kinds``: a synonym the glossary lacks
        ("navy" for blue) never shares a query with another colour, so it stays unknown and the
        agent abstains rather than dropping a requested attribute. Words are read without typo
        repair here, so a modifier is not mistaken for a typo ("murah" is not "merah").
        """
        categories: dict[tuple[str, str], set[str]] = defaultdict(set)
        kinds: dict[tuple[str, str], set[str]] = defaultdict(set)
        unique = query_texts[["query", "language"]].drop_duplicates()
        for query, language in unique.itertuples(index=False):
            reading = self.read_query(str(query), str(language), repair=False)
            if reading.category is None or reading.conflicts:
                continue
            for word in reading.unknown:
                categories[(str(language), word)].add(reading.category)
                kinds[(str(language), word)].update(reading.constraints)
        out: dict[str, set[str]] = defaultdict(set)
        required = set(self.settings.modifier_evidence_kinds)
        for (language, word), seen in categories.items():
            if len(seen) >= self.settings.min_modifier_categories and required <= kinds[(language, word)]:
                out[language].add(word)
        return {lang: frozenset(words) for lang, words in out.items()}

    # --- lookup ---------------------------------------------------------------------------------

    def terms(self, language: str, glossary_only: bool = False) -> dict[tuple[str, ...], frozenset[str]]:
        key = (language, glossary_only)
        if key not in self._terms_cache:
            sources = [self.glossary_terms.get(language, {})]
            if not glossary_only:
                sources += [self.catalogue_terms.get(self.ANY_LANGUAGE, {}), self.catalogue_terms.get(language, {}),
                            self.click_terms.get(language, {})]
            merged: dict[tuple[str, ...], set[str]] = defaultdict(set)
            for source in sources:
                for phrase, concepts in source.items():
                    merged[phrase] |= concepts
            self._terms_cache[key] = {p: frozenset(c) for p, c in merged.items()}
        return self._terms_cache[key]

    def _vocabulary(self, language: str) -> dict[int, list[str]]:
        """Words the full lexicon knows in a language, by length (typo repair candidates)."""
        if language not in self._vocab_cache:
            words = {t for phrase in self.terms(language) for t in phrase} | set(self.ignorable.get(language, ()))
            by_length: dict[int, list[str]] = defaultdict(list)
            for word in sorted(words):
                by_length[len(word)].append(word)
            self._vocab_cache[language] = by_length
        return self._vocab_cache[language]

    def _repair(self, word: str, language: str) -> str | None:
        """The one known word a typo'd word is one edit away from; None if none or several."""
        if len(word) < self.settings.fuzzy_min_length or word.isdigit():
            return None
        vocabulary = self._vocabulary(language)
        candidates = [w for length in (len(word) - 1, len(word), len(word) + 1)
                      for w in vocabulary.get(length, ()) if _within_one_edit(word, w)]
        return candidates[0] if len(candidates) == 1 else None

    def _segment(self, tokens: list[str], language: str, glossary_only: bool = False):
        """Greedy longest match: yields (phrase, concepts) with concepts empty for an unmatched word."""
        terms = self.terms(language, glossary_only)
        i = 0
        while i < len(tokens):
            for length in range(min(MAX_PHRASE_TOKENS, len(tokens) - i), 0, -1):
                phrase = tuple(tokens[i:i + length])
                if phrase in terms:
                    yield phrase, terms[phrase]
                    i += length
                    break
            else:
                yield (tokens[i],), frozenset()
                i += 1

    def _mentions(self, tokens: list[str], language: str) -> list[str]:
        return [next(iter(c)) for _, c in self._segment(tokens, language) if len(c) == 1]

    def read_query(self, query: str, language: str, glossary_only: bool = False, repair: bool = True) -> QueryReading:
        """The concepts a query names. ``glossary_only``: exact glossary terms, no catalogue facts,
        no typo repair, no learnt modifiers (the strict view)."""
        repair = repair and not glossary_only
        key = (query, language, glossary_only, repair)
        cached = self._reading_cache.get(key)
        if cached is not None:
            return cached
        tokens = tokenize(query)
        ignorable = frozenset() if glossary_only else self.ignorable.get(language, frozenset())
        known_words = {t for phrase in self.terms(language, glossary_only) for t in phrase}
        repaired: list[tuple[str, str]] = []
        if repair:
            for i, word in enumerate(tokens):
                if word not in known_words and word not in ignorable:
                    fixed = self._repair(word, language)
                    if fixed is not None:
                        repaired.append((word, fixed))
                        tokens[i] = fixed
        category: str | None = None
        constraints: dict[str, str] = {}
        unknown: list[str] = []
        conflicts: list[str] = []
        for phrase, concepts in self._segment(tokens, language, glossary_only):
            if not concepts:
                if phrase[0] not in ignorable:
                    unknown.append(phrase[0])
                continue
            if len(concepts) > 1:
                conflicts.append(f"'{' '.join(phrase)}' means {' or '.join(sorted(concepts))}")
                continue
            kind, _, value = next(iter(concepts)).partition(":")
            if kind == "category":
                if category not in (None, value):
                    conflicts.append(f"category {category} or {value}")
                category = value
            elif constraints.get(kind, value) != value:
                conflicts.append(f"{kind} {constraints[kind]} or {value}")
            else:
                constraints[kind] = value
        reading = QueryReading(category, constraints, tuple(unknown), tuple(conflicts), tuple(repaired))
        self._reading_cache[key] = reading
        return reading

    def read_title(self, title: str, language: str) -> DocReading:
        """Category and attributes as the title states them. The first product type named is the
        item ("socks for sneakers" is socks); a kind named with two values is left unknown."""
        category = None
        values: dict[str, set[str]] = defaultdict(set)
        for concept in self._mentions(tokenize(clean_document_text(title)), language):
            kind, _, value = concept.partition(":")
            if kind == "category":
                category = category or value
            else:
                values[kind].add(value)
        return DocReading(category, {k: next(iter(v)) for k, v in values.items() if len(v) == 1}, "title")

    def fingerprint(self) -> str:
        """Hash of everything the knowledge base knows: it changes when the glossary, the catalogue
        facts or the settings change."""
        return stable_hash({
            "glossary": {lang: sorted([list(p), sorted(c)] for p, c in terms.items())
                         for lang, terms in self.glossary_terms.items()},
            "catalogue": {lang: sorted([list(p), sorted(c)] for p, c in terms.items())
                          for lang, terms in self.catalogue_terms.items()},
            "clicks": {lang: sorted([list(p), sorted(c)] for p, c in terms.items())
                       for lang, terms in self.click_terms.items()},
            "ignorable": {lang: sorted(words) for lang, words in self.ignorable.items()},
            "complements": sorted(self.complements),
            "type_names": {lang: sorted([c, list(p)] for c, p in names.items()) for lang, names in self.type_names.items()},
            "settings": asdict(self.settings),
        })

    def summary(self) -> dict:
        """Counts for lineage metadata (JSON)."""
        return {"as_of": self.as_of, "glossary_terms": sum(len(t) for t in self.glossary_terms.values()),
                "catalogue_terms": sum(len(t) for t in self.catalogue_terms.values()),
                "click_terms": {lang: sorted(" ".join(p) for p in terms) for lang, terms in sorted(self.click_terms.items())},
                "ignorable_words": sum(len(w) for w in self.ignorable.values()),
                "complement_pairs": len(self.complements) // 2, "fingerprint": self.fingerprint()[:16]}


def doc_from_attributes(attributes: Mapping) -> DocReading:
    """The document's structured facts (category, brand, colour, size, material, audience)."""
    category = attributes.get("category")
    values = {kind: concept_value(attributes[kind]) for kind in CONSTRAINT_KINDS if attributes.get(kind)}
    return DocReading(concept_value(category) if category else None, values, "attributes")


def grade(query: QueryReading, doc: DocReading, complements: frozenset[tuple[str, str]]) -> tuple[int | None, str]:
    """The graded label from what the query asks for and what the document is.

    Same product type: 3 when every requested attribute and brand matches, 2 with one mismatch,
    1 with more. Another type: 1 when the two are complements (socks for sneakers), else 0.
    None (abstain) when the document does not state something the query asks for.
    """
    problem = query.problem()
    if problem:
        return None, problem
    if doc.category is None:
        return None, f"the document's {doc.source} name no product type"
    if doc.category != query.category:
        if (query.category, doc.category) in complements:
            return 1, f"{query.describe()}; doc is {doc.category} ({doc.source}), a complement -> 1"
        return 0, f"{query.describe()}; doc is {doc.category} ({doc.source}), another product type -> 0"
    missing = [kind for kind in query.constraints if kind not in doc.values]
    if missing:
        return None, f"the document's {doc.source} do not state {', '.join(sorted(missing))}"
    mismatched = sorted(f"{k} {doc.values[k]} != {v}" for k, v in query.constraints.items() if doc.values[k] != v)
    label = 3 if not mismatched else 2 if len(mismatched) == 1 else 1
    detail = "; ".join(mismatched) if mismatched else "all requested attributes match"
    return label, f"{query.describe()}; doc is {doc.category} ({doc.source}): {detail} -> {label}"


class KnowledgeAgent:
    """Judges by the concepts the query names and the document's category and attributes.

    Paths are views: 0 the structured attributes, 1 the title, 2 the glossary alone with exact
    matching (no catalogue facts, no typo repair). A view abstains when it cannot read the query
    or the document says nothing about a requested attribute. Deterministic per view.
    """

    backend = EMBEDDED_BACKEND
    prompt_version = KNOWLEDGE_VERSION

    def __init__(self, knowledge: KnowledgeBase, name: str = "knowledge", views: Sequence[str] = KNOWLEDGE_VIEWS):
        unknown = set(views) - set(KNOWLEDGE_VIEWS)
        if unknown or not views:
            raise ValueError(f"views must be some of {KNOWLEDGE_VIEWS}, got {list(views)}")
        self.name = name
        self.model = "glossary+catalogue"
        self.knowledge = knowledge
        self.views = tuple(views)
        self.max_paths = len(self.views)

    @classmethod
    def from_frames(cls, catalog: pd.DataFrame, glossary: pd.DataFrame | None, as_of=None,
                    query_texts: pd.DataFrame | None = None, settings: KnowledgeSettings = KnowledgeSettings(),
                    name: str = "knowledge") -> "KnowledgeAgent":
        return cls(KnowledgeBase.from_frames(catalog, glossary, as_of, query_texts, settings), name)

    def config_key(self) -> str:
        return stable_hash({"backend": self.backend, "model": self.model, "prompt_version": self.prompt_version,
                            "views": list(self.views), "knowledge": self.knowledge.fingerprint()})

    def judge(self, pairs: list[PairToJudge], path_index: int) -> list[ReasoningPath]:
        view = self.views[path_index % len(self.views)]
        return [self.judge_one(pair, view) for pair in pairs]

    def judge_one(self, pair: PairToJudge, view: str) -> ReasoningPath:
        query = normalize_query(pair.query)
        reading = self.knowledge.read_query(query, pair.language, glossary_only=(view == "glossary"))
        if view == "title":
            doc = self.knowledge.read_title(pair.title, pair.language)
        else:
            doc = doc_from_attributes(pair.attributes)
        label, rationale = grade(reading, doc, self.knowledge.complements)
        rationale = f"[{view}] {rationale}"
        if label is None:
            return ReasoningPath(None, rationale, STATUS_ABSTAIN)
        return ReasoningPath(label, rationale, STATUS_OK)


# ==================================================================================================
# Semantic: MiniLM word alignment
# ==================================================================================================

Encoder = Callable[[Sequence[str]], np.ndarray]


def title_idf(catalog: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Inverse document frequency of title words per language, log(1 + N / df): a brand or a
    product type names few documents and weighs more than a colour or an audience."""
    out: dict[str, dict[str, float]] = {}
    for language, titles in catalog.groupby("language")["title"]:
        frequency = Counter(word for title in titles for word in set(tokenize(clean_document_text(title))))
        n = len(titles)
        out[str(language)] = {word: round(math.log1p(n / count), 6) for word, count in frequency.items()}
    return out


@dataclass(frozen=True)
class SemanticCalibration:
    """One threshold calibration per text view (JSON via ``to_dict``)."""

    views: dict[str, ThresholdCalibration]

    def to_dict(self) -> dict:
        return {view: cal.to_dict() for view, cal in sorted(self.views.items())}

    @classmethod
    def from_dict(cls, data: Mapping) -> "SemanticCalibration":
        return cls({view: ThresholdCalibration.from_dict(cal) for view, cal in data.items()})


def fit_semantic(frame: pd.DataFrame, views: Sequence[str] = SEMANTIC_VIEWS, *,
                 min_band_accuracy: float = 0.6) -> SemanticCalibration:
    """Calibrate each view's score column (named as the view) on judged pairs (column ``label``)."""
    out = {}
    for view in views:
        usable = frame[["label", view]].dropna()
        out[view] = calibrate_thresholds(usable[view], usable["label"].astype(int), min_band_accuracy=min_band_accuracy)
    return SemanticCalibration(out)


def _encoder_name(encoder: Encoder | None) -> str:
    """A stable name for an encoder (it is part of the vote-cache key, so never a memory address)."""
    if encoder is None:
        return "all-MiniLM-L6-v2"
    if getattr(encoder, "name", None):
        return str(encoder.name)
    if getattr(encoder, "name_or_path", None):  # a SentenceEmbedder: the folder it loaded
        folder = Path(str(encoder.name_or_path))
        return f"{folder.parent.name}/{folder.name}"
    if hasattr(encoder, "__qualname__"):
        return f"{encoder.__module__}.{encoder.__qualname__}"
    raise ValueError("give the encoder a name (encoder_name=...): it keys the vote cache")


class SemanticAgent:
    """Judges by how well the document's words cover the query's words in embedding space.

    score = sum_w idf(w) * match(w) / sum_w idf(w) over the query words w, where match(w) is the
    best cosine between w and a document word v, rescaled so that cosines at or below
    ``similarity_floor`` count as no match (MiniLM gives unrelated words cosines of 0.2-0.4):
    match(w) = max(0, max_v cos(e(w), e(v)) - floor) / (1 - floor). BERTScore recall with IDF
    weights, in short. The whole-text cosine of MiniLM separates the grades of short product texts
    poorly (44% accuracy on simulated seed judgments, against 67% for this form): one mismatched
    colour or product type barely moves a sentence embedding, but it leaves a query word uncovered.

    Paths are views of the document: 0 the title, 1 title + description (injected sentences
    dropped), 2 title + structured attribute values; each view has its own calibration.
    ``encoder``: texts -> vectors (default: the packaged all-MiniLM-L6-v2, loaded on first use).
    ``knowledge``: what the agent retrieves before judging (the method's level 1): a query word the
    knowledge base maps to a product type (a synonym, slang from the glossary or learnt from clicks) is
    read as the name the type's titles use, since an embedding cannot know this week's slang.
    """

    backend = EMBEDDED_BACKEND
    prompt_version = SEMANTIC_VERSION

    def __init__(self, encoder: Encoder | None = None, *, encoder_name: str | None = None,
                 calibration: SemanticCalibration | None = None, idf: dict[str, dict[str, float]] | None = None,
                 name: str = "semantic", views: Sequence[str] = SEMANTIC_VIEWS, similarity_floor: float = 0.5,
                 knowledge: KnowledgeBase | None = None):
        if not 0.0 <= similarity_floor < 1.0:
            raise ValueError("similarity_floor must be in [0, 1)")
        unknown = set(views) - set(SEMANTIC_VIEWS)
        if unknown or not views:
            raise ValueError(f"views must be some of {SEMANTIC_VIEWS}, got {list(views)}")
        self.name = name
        self.model = encoder_name or _encoder_name(encoder)
        self.views = tuple(views)
        self.max_paths = len(self.views)
        self.calibration = calibration
        self.similarity_floor = float(similarity_floor)
        self.idf = idf or {}
        self.knowledge = knowledge
        self._encoder = encoder
        self._vectors: dict[str, np.ndarray] = {}
        self._idf_key = stable_hash(self.idf)

    def with_calibration(self, calibration: SemanticCalibration) -> "SemanticAgent":
        """The same agent (and encoder, and its cached vectors) with another calibration."""
        other = SemanticAgent(self._encoder, encoder_name=self.model, calibration=calibration, idf=self.idf,
                              name=self.name, views=self.views, similarity_floor=self.similarity_floor,
                              knowledge=self.knowledge)
        other._vectors = self._vectors
        return other

    def config_key(self) -> str:
        return stable_hash({"backend": self.backend, "model": self.model, "prompt_version": self.prompt_version,
                            "views": list(self.views), "idf": self._idf_key, "similarity_floor": self.similarity_floor,
                            "knowledge": self.knowledge.fingerprint() if self.knowledge else None,
                            "calibration": self.calibration.to_dict() if self.calibration else None})

    # --- scores ---------------------------------------------------------------------------------

    def _encode_missing(self, words: Iterable[str]) -> None:
        missing = sorted({w for w in words if w not in self._vectors})
        if not missing:
            return
        if self._encoder is None:
            from models.embeddings import SentenceEmbedder  # torch only when the default encoder is needed

            self._encoder = SentenceEmbedder()
        vectors = np.asarray(self._encoder(missing), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
        self._vectors.update(zip(missing, vectors))

    def read_query(self, pair: PairToJudge) -> str:
        query = normalize_query(pair.query)
        return self.knowledge.canonical_query(query, pair.language) if self.knowledge else query

    @staticmethod
    def view_text(pair: PairToJudge, view: str) -> str:
        title = clean_document_text(pair.title)
        if view == "title":
            return title
        if view == "title+description":
            return f"{title} . {clean_document_text(pair.description)}"
        values = [str(pair.attributes.get(k, "")).replace("_", " ") for k in ("category", *CONSTRAINT_KINDS)]
        return f"{title} . {clean_document_text(' '.join(v for v in values if v))}"

    def scores(self, pairs: Sequence[PairToJudge], view: str) -> np.ndarray:
        """The alignment score of each pair for a view; NaN when the query or the text has no words."""
        queries = [tokenize(self.read_query(p)) for p in pairs]
        documents = [tokenize(self.view_text(p, view)) for p in pairs]
        self._encode_missing(w for words in (*queries, *documents) for w in words)
        out = np.full(len(pairs), np.nan)
        for i, (pair, q_words, d_words) in enumerate(zip(pairs, queries, documents)):
            if not q_words or not d_words:
                continue
            similarity = np.stack([self._vectors[w] for w in q_words]) @ np.stack([self._vectors[w] for w in d_words]).T
            idf = self.idf.get(pair.language, {})
            # a word no title uses (a filler, a typo, slang) cannot tell documents apart: it weighs
            # as little as the commonest title word
            unseen = min(idf.values(), default=1.0)
            weights = np.array([idf.get(w, unseen) for w in q_words])
            match = np.clip((similarity.max(axis=1) - self.similarity_floor) / (1.0 - self.similarity_floor), 0.0, 1.0)
            out[i] = float((match * weights).sum() / weights.sum())
        return out

    def score_frame(self, pairs: Sequence[PairToJudge]) -> pd.DataFrame:
        """pair_id and one score column per view (what ``fit_semantic`` calibrates)."""
        return pd.DataFrame({"pair_id": [p.pair_id for p in pairs],
                             **{view: self.scores(pairs, view) for view in self.views}})

    def calibrate(self, pairs: Sequence[PairToJudge], labels: Sequence[int], *,
                  min_band_accuracy: float = 0.6) -> "SemanticAgent":
        """This agent calibrated on judged pairs (the seed judgments)."""
        frame = self.score_frame(pairs).assign(label=np.asarray(labels, dtype=int))
        return self.with_calibration(fit_semantic(frame, self.views, min_band_accuracy=min_band_accuracy))

    # --- judging --------------------------------------------------------------------------------

    def judge(self, pairs: list[PairToJudge], path_index: int) -> list[ReasoningPath]:
        if self.calibration is None:
            raise ValueError("the semantic agent is not calibrated: use calibrate() or default_panel()")
        view = self.views[path_index % len(self.views)]
        calibration = self.calibration.views[view]
        out = []
        for score in self.scores(pairs, view):
            if not math.isfinite(score):
                out.append(ReasoningPath(None, f"[{view}] no words to compare", STATUS_ABSTAIN))
                continue
            label = calibration.label(score)
            if label is None:
                out.append(ReasoningPath(None, f"[{view}] word alignment {score:.3f} falls where the seed "
                                               "calibration is unreliable", STATUS_ABSTAIN))
            else:
                out.append(ReasoningPath(label, f"[{view}] the document covers the query words at {score:.3f} "
                                                f"(cuts {', '.join(f'{c:.3f}' for c in calibration.cuts)}) -> {label}",
                                         STATUS_OK))
        return out


# ==================================================================================================
# Behaviour: click model and dwell time
# ==================================================================================================


@dataclass(frozen=True)
class BehaviourCalibration:
    """Cut points for the two behavioural signals, one variant per reasoning path.

    ``dwell[i]``: on log(mean dwell ms) of clicked pairs; ``attractiveness[i]``: on the PBM
    attractiveness of pairs with ``support >= min_support``. Variant 0 is fitted on every seed pair,
    the others on bootstrap resamples: near a cut they disagree, and the level-1 vote sees the
    calibration's own uncertainty. None: too few seed pairs had that signal.
    """

    min_support: float
    min_clicks: int
    dwell: tuple[ThresholdCalibration | None, ...]
    attractiveness: tuple[ThresholdCalibration | None, ...]

    def to_dict(self) -> dict:
        return {"min_support": self.min_support, "min_clicks": self.min_clicks,
                "dwell": [c.to_dict() if c else None for c in self.dwell],
                "attractiveness": [c.to_dict() if c else None for c in self.attractiveness]}

    @classmethod
    def from_dict(cls, data: Mapping) -> "BehaviourCalibration":
        def calibrations(items):
            return tuple(ThresholdCalibration.from_dict(c) if c else None for c in items)

        return cls(float(data["min_support"]), int(data["min_clicks"]), calibrations(data["dwell"]),
                   calibrations(data["attractiveness"]))


def _dwell_evidence(row: Mapping, min_clicks: int) -> float | None:
    """log(mean dwell ms) when the pair was clicked often enough, else None."""
    dwell = _json_number(row.get("mean_dwell_ms"))
    clicks = _json_number(row.get("clicks"))
    if dwell is None or dwell <= 0 or (clicks is not None and clicks < min_clicks):
        return None
    return math.log(dwell)


def _attractiveness_evidence(row: Mapping, min_support: float) -> float | None:
    attractiveness = _json_number(row.get("attractiveness"))
    support = _json_number(row.get("support"))
    if attractiveness is None or support is None or support < min_support:
        return None
    return attractiveness


def fit_behaviour(frame: pd.DataFrame, *, min_support: float = 1.0, min_clicks: int = 1, variants: int = 3,
                  min_pairs: int = 30, min_band_accuracy: float = 0.7, seed: int = 0) -> BehaviourCalibration:
    """Calibrate the behaviour agent on judged pairs with behaviour features.

    ``frame``: label and any of attractiveness, support, clicks, mean_dwell_ms (the seed judgments
    merged with the seed period's click model and impressions).
    """
    if variants < 1:
        raise ValueError("variants must be >= 1")
    records = frame.to_dict("records")
    labels = frame["label"].to_numpy()
    dwell = np.array([_dwell_evidence(r, min_clicks) for r in records], dtype=float)
    attractiveness = np.array([_attractiveness_evidence(r, min_support) for r in records], dtype=float)
    rng = np.random.default_rng(seed)

    def fit(scores: np.ndarray) -> tuple[ThresholdCalibration | None, ...]:
        usable = np.flatnonzero(np.isfinite(scores) & pd.Series(labels).isin(LABELS).to_numpy())
        if len(usable) < min_pairs:
            return (None,) * variants
        out = []
        for variant in range(variants):
            rows = usable if variant == 0 else rng.choice(usable, size=len(usable), replace=True)
            out.append(calibrate_thresholds(scores[rows], labels[rows].astype(int), min_band_accuracy=min_band_accuracy))
        return tuple(out)

    return BehaviourCalibration(float(min_support), int(min_clicks), fit(dwell), fit(attractiveness))


class BehaviourAgent:
    """Judges by what users did with the pair (``PairToJudge.knowledge``).

    A clicked pair (``clicks >= min_clicks`` with a ``mean_dwell_ms``) is judged by its dwell time:
    a click proves the result was examined, and how long the user stayed says how good it was. An
    unclicked pair is judged by its click-model attractiveness only when ``support`` (examined
    impressions) reaches ``min_support``; otherwise, or when the fields are missing, it abstains.
    """

    backend = EMBEDDED_BACKEND
    prompt_version = BEHAVIOUR_VERSION

    def __init__(self, calibration: BehaviourCalibration, name: str = "behaviour"):
        self.name = name
        self.model = "pbm+dwell"
        self.calibration = calibration
        self.max_paths = max(len(calibration.dwell), len(calibration.attractiveness), 1)

    def config_key(self) -> str:
        return stable_hash({"backend": self.backend, "model": self.model, "prompt_version": self.prompt_version,
                            "calibration": self.calibration.to_dict()})

    def judge(self, pairs: list[PairToJudge], path_index: int) -> list[ReasoningPath]:
        return [self.judge_one(pair, path_index) for pair in pairs]

    def judge_one(self, pair: PairToJudge, path_index: int) -> ReasoningPath:
        cal = self.calibration
        facts = pair.knowledge or {}
        dwell = _dwell_evidence(facts, cal.min_clicks)
        if dwell is not None and cal.dwell and cal.dwell[path_index % len(cal.dwell)] is not None:
            calibration, score = cal.dwell[path_index % len(cal.dwell)], dwell
            evidence = f"mean dwell {math.exp(dwell) / 1000:.1f} s over {facts.get('clicks', '?')} click(s)"
        else:
            attractiveness = _attractiveness_evidence(facts, cal.min_support)
            variant = cal.attractiveness[path_index % len(cal.attractiveness)] if cal.attractiveness else None
            if attractiveness is None or variant is None:
                support = _json_number(facts.get("support"))
                why = "no behaviour data" if support is None else f"support {support:.2f} < {cal.min_support:g} and no click"
                return ReasoningPath(None, f"[variant {path_index}] {why}", STATUS_ABSTAIN)
            calibration, score = variant, attractiveness
            evidence = f"click-model attractiveness {attractiveness:.3f} (support {facts.get('support'):.1f})"
        label = calibration.label(score)
        if label is None:
            return ReasoningPath(None, f"[variant {path_index}] {evidence}: ambiguous on the seed calibration",
                                 STATUS_ABSTAIN)
        return ReasoningPath(label, f"[variant {path_index}] {evidence} -> {label}", STATUS_OK)


# ==================================================================================================
# Pairs and the default panel
# ==================================================================================================


def pair_id_of(query: str, language: str, doc_id: str) -> str:
    """The stable id of a (query, language, doc_id) pair (the pipeline's ``stable_hash`` of the key)."""
    return stable_hash([query, language, doc_id])


def _behaviour_facts(row: Mapping) -> dict:
    facts = {}
    for key in BEHAVIOUR_FIELDS:
        value = _json_number(row.get(key))
        if value is not None:
            facts[key] = value
    return facts


def pairs_to_judge(pairs: pd.DataFrame, catalog: pd.DataFrame, behaviour: pd.DataFrame | None = None) -> list[PairToJudge]:
    """PairToJudge objects for the annotator, in the order of ``pairs``.

    ``pairs``: query, language, doc_id (+ optional pair_id, else the stable hash of the three).
    ``catalog``: doc_id, title, description, attributes (JSON). ``behaviour``: query, language,
    doc_id and any of ``BEHAVIOUR_FIELDS``; queries are matched case- and space-insensitively.
    A document missing from the catalogue gets empty texts (the agents abstain on it).
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
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def default_panel(catalog: pd.DataFrame, glossary: pd.DataFrame | None, seed_judgments: pd.DataFrame,
                  behaviour_for_seed: pd.DataFrame | None = None, *, as_of=None, encoder: Encoder | None = None,
                  encoder_name: str | None = None, agents: Sequence[str] = DEFAULT_AGENTS,
                  min_behaviour_support: float = 1.0, query_texts: pd.DataFrame | None = None,
                  knowledge_settings: KnowledgeSettings = KnowledgeSettings(),
                  semantic_min_band_accuracy: float = 0.5, behaviour_min_band_accuracy: float = 0.8) -> list:
    """The embedded judges, built from the catalogue and glossary and calibrated on the seed judgments.

    ``semantic_min_band_accuracy``: the semantic agent abstains in score bands where its seed accuracy is
    lower. 0.5, not stricter: under unanimity it is mostly the second voter beside the knowledge agent,
    whose disagreement discards a pair anyway; at 0.6 it abstained on half of the mined pairs of the
    simulated stream and acceptance fell to 34% with no gain in accuracy (100% either way).
    ``behaviour_min_band_accuracy``: 0.8, stricter, because behaviour is weakest on the pairs the miner
    picks (57% right there at 0.7, each wrong vote discarding a pair): on the demo stream's first mined
    iteration acceptance rose from 36% to 41% at 100% consensus accuracy.

    ``seed_judgments``: query, language, doc_id, label (split seed), optionally already merged with
    behaviour columns; ``behaviour_for_seed``: those columns for the seed pairs (the seed period's
    click model and impressions) when they come separately. ``as_of``: the newest day the panel may
    know (the window end): glossary entries added later are ignored. ``query_texts``: logged
    queries (query, language) to learn generic modifiers from (the seed queries are always used); with
    doc_id and clicks (the window's impressions) the knowledge base also learns product-type words from
    clicks. The knowledge and semantic agents share one knowledge base.
    ``agents``: which of knowledge, semantic, behaviour to build, in that order of the result.
    """
    unknown = set(agents) - set(DEFAULT_AGENTS)
    if unknown:
        raise ValueError(f"unknown embedded agents {sorted(unknown)}; known: {list(DEFAULT_AGENTS)}")
    seed = seed_judgments[seed_judgments["label"].isin(LABELS)].copy()
    if "split" in seed.columns:
        seed = seed[seed["split"].fillna("seed") == "seed"]
    seed["query"] = seed["query"].map(normalize_query)
    if behaviour_for_seed is not None and len(behaviour_for_seed):
        extra = behaviour_for_seed.assign(query=behaviour_for_seed["query"].map(normalize_query))
        columns = [c for c in BEHAVIOUR_FIELDS if c in extra.columns]
        seed = seed.drop(columns=[c for c in columns if c in seed.columns]).merge(
            extra[PAIR_COLUMNS + columns].drop_duplicates(PAIR_COLUMNS), on=PAIR_COLUMNS, how="left")

    panel = []
    texts = seed[["query", "language"]]
    if query_texts is not None and len(query_texts):
        texts = pd.concat([texts, query_texts.assign(query=query_texts["query"].map(normalize_query))],
                          ignore_index=True)
    knowledge = KnowledgeBase.from_frames(catalog, glossary, as_of, texts, knowledge_settings) \
        if {"knowledge", "semantic"} & set(agents) else None
    if "knowledge" in agents:
        panel.append(KnowledgeAgent(knowledge))
    if "semantic" in agents:
        judged = pairs_to_judge(seed[PAIR_COLUMNS], catalog)
        agent = SemanticAgent(encoder, encoder_name=encoder_name, idf=title_idf(catalog), knowledge=knowledge)
        panel.append(agent.calibrate(judged, seed["label"].to_numpy(), min_band_accuracy=semantic_min_band_accuracy))
    if "behaviour" in agents:
        panel.append(BehaviourAgent(fit_behaviour(seed, min_support=min_behaviour_support,
                                                  min_band_accuracy=behaviour_min_band_accuracy)))
    return panel


def panel_calibration(agents: Sequence) -> dict:
    """Each embedded agent's calibration or knowledge summary, JSON, for lineage metadata."""
    out = {}
    for agent in agents:
        if isinstance(agent, KnowledgeAgent):
            out[agent.name] = agent.knowledge.summary()
        elif isinstance(agent, SemanticAgent) and agent.calibration is not None:
            out[agent.name] = {"encoder": agent.model, **agent.calibration.to_dict()}
        elif isinstance(agent, BehaviourAgent):
            out[agent.name] = agent.calibration.to_dict()
    return out

"""The evidence each learned judge reads, as feature rows: catalogue knowledge, words, behaviour.

Three kinds, kept apart so the judges' errors are as independent as the evidence allows:

- :func:`knowledge_features`: how the catalogue reads each query word and whether the document states
  it, contradicts it (another value of the same attribute) or leaves it out (``CatalogKnowledge.explain``);
- :class:`TextFeatures`: lexical overlap (exact, typo-tolerant, IDF-weighted, BM25, character
  trigrams) of the query, read in the catalogue's words, with the title, description and attribute
  values, and embedding similarity (MiniLM word alignment and sentence cosine);
- :func:`behaviour_features`: what users did: click-model attractiveness and its support, clicks,
  CTR, mean position and dwell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .base import PairToJudge
from .knowledge import CatalogKnowledge
from .text import attribute_text, clean_document_text, json_number, tokenize, within_one_edit

Encoder = Callable[[Sequence[str]], np.ndarray]
BEHAVIOUR_FIELDS = ("attractiveness", "support", "impressions", "clicks", "ctr", "mean_position", "mean_dwell_ms")
FOUND = ("title", "attributes", "description", "contradicted", "missing")


def _idf(knowledge: CatalogKnowledge, language: str, word: str) -> float:
    n = knowledge.n_docs.get(language, 0)
    return math.log1p(n / (1 + knowledge.title_df.get(language, {}).get(word, 0)))


def knowledge_features(knowledge: CatalogKnowledge, pairs: Sequence[PairToJudge]) -> tuple[pd.DataFrame, np.ndarray]:
    """Per attribute key of the catalogue (under its own name), whether the query names a value of it that the
    document has (1), contradicts (-1) or does not state (0.5; not named: 0); and counts of query items by
    where the document states them; and the click links of the query's words to the document's title words
    (``CatalogKnowledge.link``: mean, weakest, share of words with enough clicks to say; and over each word's
    ``strongest_link``, ``link_ratio``: mean and weakest). Unusable where the catalogue knows none of the query's
    words."""
    rows, usable = [], []
    for pair in pairs:
        evidence = knowledge.explain(pair)
        row = {"items": len(evidence), "unknown": sum(e.kind == "unknown" for e in evidence),
               "read_as": sum(bool(e.read_as) for e in evidence)}
        states: dict[str, float] = {}
        for e in evidence:
            given = dict(e.key_states)
            for key in e.keys:
                state = {"matched": 1.0, "contradicted": -1.0}.get(given.get(key, ""), 0.5)
                states[key] = min(states.get(key, state), state)
        for i, key in enumerate(knowledge.keys):
            row[f"key{i}"] = states.get(key, 0.0)
        for found in FOUND:
            row[f"items_{found}"] = sum(e.found == found for e in evidence)
        known = [e for e in evidence if e.kind != "unknown"]
        weights = [_idf(knowledge, pair.language, e.word.split()[-1]) for e in known]
        missed = [w for e, w in zip(known, weights) if e.found in ("missing", "description", "contradicted")]
        row["missed_idf_share"] = sum(missed) / sum(weights) if weights else np.nan
        title = set(tokenize(clean_document_text(pair.title)))
        words = [w for e in evidence for w in e.word.split()]
        row["query_words_in_title"] = np.mean([w in title for w in words]) if evidence else np.nan
        links = np.array([knowledge.link(w, title, pair.language) for w in words], dtype=float)
        known_links = links[~np.isnan(links)]
        row["link_mean"] = known_links.mean() if len(known_links) else np.nan
        row["link_min"] = known_links.min() if len(known_links) else np.nan
        row["link_known"] = len(known_links) / len(links) if len(links) else np.nan
        ratios = links / np.array([knowledge.strongest_link(w, pair.language) for w in words], dtype=float)
        ratios = ratios[~np.isnan(ratios)]
        row["link_ratio_mean"] = ratios.mean() if len(ratios) else np.nan
        row["link_ratio_min"] = ratios.min() if len(ratios) else np.nan
        rows.append(row)
        usable.append(row["items"] > row["unknown"])
    columns = ["items", "unknown", "read_as", *[f"key{i}" for i in range(len(knowledge.keys))],
               *[f"items_{f}" for f in FOUND], "missed_idf_share", "query_words_in_title",
               "link_mean", "link_min", "link_known", "link_ratio_mean", "link_ratio_min"]
    return pd.DataFrame(rows, columns=columns), np.array(usable, dtype=bool)


def describe_knowledge(row: pd.Series) -> str:
    return (f"query items {int(row['items'])}: stated in title/attributes "
            f"{int(row['items_title'] + row['items_attributes'])}, contradicted {int(row['items_contradicted'])}, "
            f"missing {int(row['items_missing'])}, unknown {int(row['unknown'])}"
            + ("" if math.isnan(row["link_mean"]) else f"; clicks link its words to the title {row['link_mean']:.2f}"))


class WordAligner:
    """BERTScore-style recall: how well the document's words cover the query's words in embedding space,
    weighted by IDF; plus the sentence cosine of query and title. Word vectors are cached."""

    # vectors of the default encoder, shared by every aligner of the process (an arm's iterations judge the
    # same seed texts again): a text's vector never changes
    _default_vectors: dict[str, np.ndarray] = {}

    def __init__(self, encoder: Encoder | None = None, similarity_floor: float = 0.5):
        self._encoder = encoder
        self.similarity_floor = similarity_floor
        self._vectors: dict[str, np.ndarray] = WordAligner._default_vectors if encoder is None else {}

    def encode(self, texts: Iterable[str]) -> None:
        missing = sorted({t for t in texts if t not in self._vectors})
        if not missing:
            return
        if self._encoder is None:
            from models.embeddings import SentenceEmbedder  # torch only when the default encoder is needed

            self._encoder = SentenceEmbedder(max_length=32)
        vectors = np.asarray(self._encoder(missing), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self._vectors.update(zip(missing, vectors / np.where(norms > 0, norms, 1.0)))

    def recall(self, query_words: list[str], doc_words: list[str], weights: np.ndarray) -> float:
        if not query_words or not doc_words:
            return np.nan
        similarity = np.stack([self._vectors[w] for w in query_words]) @ np.stack([self._vectors[w] for w in doc_words]).T
        floor = self.similarity_floor
        match = np.clip((similarity.max(axis=1) - floor) / (1.0 - floor), 0.0, 1.0)
        return float((match * weights).sum() / weights.sum())

    def cosine(self, a: str, b: str) -> float:
        return float(self._vectors[a] @ self._vectors[b]) if a and b else np.nan


def _trigrams(text: str) -> set[str]:
    padded = f"  {text} "
    return {padded[i:i + 3] for i in range(len(padded) - 2)}


def _bm25(query: list[str], doc: list[str], idf: Callable[[str], float], avg_len: float, k1: float = 1.2,
          b: float = 0.75) -> float:
    counts = {w: doc.count(w) for w in set(query)}
    norm = k1 * (1 - b + b * len(doc) / max(avg_len, 1.0))
    return sum(idf(w) * c * (k1 + 1) / (c + norm) for w, c in counts.items() if c)


class TextFeatures:
    """Word and embedding evidence of the query (read in the catalogue's words) against the document."""

    def __init__(self, knowledge: CatalogKnowledge, aligner: WordAligner):
        self.knowledge = knowledge
        self.aligner = aligner
        self.avg_title = {lang: 8.0 for lang in knowledge.n_docs}

    def __call__(self, pairs: Sequence[PairToJudge]) -> tuple[pd.DataFrame, np.ndarray]:
        texts = [self._texts(p) for p in pairs]
        self.aligner.encode(w for t in texts for part in t[:4] for w in part)
        self.aligner.encode(s for t in texts for s in (t[4], t[5]) if s)
        rows = [self._row(p, *t) for p, t in zip(pairs, texts)]
        frame = pd.DataFrame(rows)
        return frame, np.array([len(t[0]) > 0 and len(t[1]) > 0 for t in texts], dtype=bool)

    def _texts(self, pair: PairToJudge):
        query = tokenize(self.knowledge.expand_query(pair.query, pair.language))
        title = tokenize(clean_document_text(pair.title))
        description = tokenize(clean_document_text(pair.description))
        attributes = tokenize(attribute_text(pair.attributes))
        return query, title, description, attributes, " ".join(query), " ".join(title)

    def _row(self, pair, query, title, description, attributes, query_text, title_text) -> dict:
        language = pair.language
        idf = lambda w: _idf(self.knowledge, language, w)  # noqa: E731
        weights = np.array([idf(w) for w in query]) if query else np.zeros(0)
        everything = set(title) | set(description) | set(attributes)

        def share(found: Callable[[str], bool], weighted: bool = False) -> float:
            if not query:
                return np.nan
            hits = np.array([found(w) for w in query], dtype=float)
            return float((hits * weights).sum() / weights.sum()) if weighted and weights.sum() > 0 else float(hits.mean())

        fuzzy = lambda w: w in title or (len(w) >= 5 and any(within_one_edit(w, t) for t in title))  # noqa: E731
        title_set, description_set, attribute_set = set(title), set(description), set(attributes)
        return {
            "query_words": len(query), "title_words": len(title), "has_description": float(bool(description)),
            "in_title": share(lambda w: w in title_set), "in_title_fuzzy": share(fuzzy),
            "in_title_idf": share(lambda w: w in title_set, weighted=True),
            "in_description": share(lambda w: w in description_set), "in_attributes": share(lambda w: w in attribute_set),
            "anywhere_idf": share(lambda w: w in everything, weighted=True),
            "first_in_title": float(bool(query) and query[0] in title_set),
            "last_in_title": float(bool(query) and query[-1] in title_set),
            "bm25_title": _bm25(query, title, idf, self.avg_title.get(language, 8.0)),
            "trigram_jaccard": _jaccard(_trigrams(query_text), _trigrams(title_text)),
            "align_title": self.aligner.recall(query, title, weights) if len(weights) else np.nan,
            "align_all": self.aligner.recall(query, title + description[:60] + attributes[:30], weights)
            if len(weights) else np.nan,
            "cosine_title": self.aligner.cosine(query_text, title_text),
        }


def describe_text(row: pd.Series) -> str:
    return (f"query words in title {row['in_title']:.2f} (idf-weighted {row['in_title_idf']:.2f}), anywhere "
            f"{row['anywhere_idf']:.2f}; word alignment {row['align_title']:.2f}, cosine {row['cosine_title']:.2f}")


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else np.nan


def behaviour_features(pairs: Sequence[PairToJudge], min_support: float = 1.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Behaviour facts of each pair (``PairToJudge.knowledge``); unusable with no click and too little
    examined support for the click model to say anything."""
    rows, usable = [], []
    for pair in pairs:
        facts = pair.knowledge or {}
        row = {key: json_number(facts.get(key)) for key in BEHAVIOUR_FIELDS}
        row = {k: (np.nan if v is None else float(v)) for k, v in row.items()}
        dwell = row.pop("mean_dwell_ms")
        row["log_dwell"] = math.log(dwell) if dwell and dwell > 0 else np.nan
        rows.append(row)
        clicked = not math.isnan(row["clicks"]) and row["clicks"] > 0
        supported = not math.isnan(row["support"]) and row["support"] >= min_support
        usable.append(clicked or supported)
    return pd.DataFrame(rows, columns=[*BEHAVIOUR_FIELDS[:-1], "log_dwell"]), np.array(usable, dtype=bool)


def describe_behaviour(row: pd.Series) -> str:
    parts = []
    if not math.isnan(row["attractiveness"]):
        parts.append(f"click-model attractiveness {row['attractiveness']:.2f} (support {row['support']:.1f})")
    if not math.isnan(row["clicks"]):
        parts.append(f"{int(row['clicks'])} click(s)")
    if not math.isnan(row["log_dwell"]):
        parts.append(f"mean dwell {math.exp(row['log_dwell']) / 1000:.1f} s")
    return ", ".join(parts) or "no behaviour"

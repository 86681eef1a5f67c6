"""What the catalogue itself knows: its words, its attribute vocabularies, and what clicks teach.

:class:`CatalogKnowledge` is learnt from any catalogue in the input contract, with no assumption on
how it names its fields:

- **title vocabulary** per language: which words titles use and how many documents use each (a word
  most titles share, like a product type, weighs less than a brand or a model name);
- **attribute vocabularies**: for every attribute key, whatever it is called, the values documents
  give it. A key whose values are nearly all distinct (an id, a price, free text) is no vocabulary
  and is ignored. A query word that is a value of key k names something a document either has
  (same value), contradicts (another value of k) or does not state;
- **glossary** (optional, ``term, language, concept[, added]``): a term is read as the words of its
  concept, whatever format the concept is written in; entries added after ``as_of`` are unknown yet;
- **words learnt from clicks**: a query word no title, value or glossary entry knows (new slang) is
  read as the title word its click links (below) favour most (:meth:`CatalogKnowledge._readings`);
- **click links** of every query word: how much more of its queries' clicks than of all clicks land on
  documents whose title uses each title word (a click translation table: "pesi" -> "manubri"),
  which tells a product type's other names and its neighbours where no glossary or category does.
  A query word a title does not use is read as a title word it links to strongly and most specifically
  (:meth:`CatalogKnowledge.linked_reading`): "airfryer" is in a title saying "fritözü".

It answers two questions: how each query word relates to a document (:meth:`explain`, the evidence of
the knowledge judge and of the LLM judges' prompts) and how a query reads in the catalogue's own
words (:meth:`expand_query`, the retrieval step before the text judge compares words).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import pandas as pd

from .base import PairToJudge, stable_hash
from .text import clean_document_text, normalize_query, parse_attributes, tokenize, value_parts, within_one_edit

MAX_PHRASE_TOKENS = 4
MAX_KEYS = 12  # the attribute keys whose match or contradiction the knowledge judge weighs one by one


@dataclass(frozen=True)
class KnowledgeSettings:
    max_value_share: float = 0.5  # a key with more distinct values than this share of its documents is no vocabulary
    max_value_tokens: int = MAX_PHRASE_TOKENS  # longer values are free text, not vocabulary
    fuzzy_min_length: int = 5  # shorter words are not typo-repaired
    min_alignment_docs: int = 3  # a title word is read as an attribute value when this many titles use it ...
    min_alignment_share: float = 0.9  # ... and this share of them have that value
    max_value_prior: float = 0.5  # ... a value this common says nothing (most documents have it)
    min_link_clicks: int = 5  # a query word's click links: clicks of the queries that use it
    min_link_excess: float = 0.05  # ... the least excess of a title word's share of them over its share of all clicks
    min_reading_link: float = 0.3  # a query word may be read as a title word it links to this strongly ...
    min_reading_ratio: float = 0.9  # ... with a lift at least this share of the best such word's


@dataclass(frozen=True)
class WordEvidence:
    """How one query word (or phrase) relates to one document."""

    word: str
    kind: str  # "value" (an attribute value somewhere), "word" (a title word somewhere), "unknown"
    found: str  # "title", "attributes", "description", "contradicted", "missing"
    keys: tuple[str, ...] = ()  # for a value: the attribute keys it is a value of
    doc_values: tuple[str, ...] = ()  # for a contradicted value: what the document says instead
    read_as: str = ""  # a glossary or click-learnt reading, or a typo repair
    key_states: tuple[tuple[str, str], ...] = ()  # per attribute key it names: "matched" or "contradicted"


class CatalogKnowledge:
    """See the module docstring. Build with :meth:`from_frames`."""

    def __init__(self, settings: KnowledgeSettings = KnowledgeSettings()):
        self.settings = settings
        self.title_df: dict[str, Counter] = defaultdict(Counter)  # language -> word -> documents
        self.n_docs: Counter = Counter()  # language -> documents
        self.values: dict[str, Counter] = defaultdict(Counter)  # key -> value phrase -> documents
        self.value_keys: dict[tuple[str, ...], frozenset[str]] = {}  # value phrase -> its keys
        self.keys: list[str] = []  # the vocabulary keys, most documents first
        self.readings: dict[str, dict[tuple[str, ...], tuple[str, ...]]] = defaultdict(dict)  # glossary
        self.aligned: dict[str, dict[str, frozenset[tuple[str, tuple[str, ...]]]]] = defaultdict(dict)
        self.click_words: dict[str, dict[str, str]] = defaultdict(dict)  # language -> word -> what it reads as
        self.links: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)  # language -> query word -> title word -> excess
        self.click_share: dict[str, dict[str, float]] = defaultdict(dict)  # language -> linked title word -> share of all clicks
        self._known: dict[str, set[str]] = {}

    # --- building -------------------------------------------------------------------------------

    @classmethod
    def from_frames(cls, catalog: pd.DataFrame, glossary: pd.DataFrame | None = None, as_of=None,
                    impressions: pd.DataFrame | None = None,
                    settings: KnowledgeSettings = KnowledgeSettings()) -> "CatalogKnowledge":
        """``catalog``: doc_id, language, title, attributes (JSON). ``glossary``: term, language, concept,
        optional ``added`` (ISO date). ``impressions``: query, language, doc_id, clicks (the days the judge
        may know), to learn new words and click links."""
        knowledge = cls(settings)
        attributes = [parse_attributes(a) for a in catalog["attributes"]] if "attributes" in catalog else \
            [{}] * len(catalog)
        for language, title in zip(catalog["language"].astype(str), catalog["title"]):
            knowledge.n_docs[language] += 1
            knowledge.title_df[language].update(set(tokenize(clean_document_text(title))))
        knowledge._learn_values(attributes)
        knowledge._learn_alignment(catalog, attributes)
        if glossary is not None and len(glossary):
            knowledge._learn_glossary(glossary, as_of)
        if impressions is not None and len(impressions):
            knowledge._learn_links(impressions, catalog)
        return knowledge

    def _learn_values(self, attributes: list[dict]) -> None:
        docs_with: Counter = Counter()
        for attrs in attributes:
            for key, value in attrs.items():
                phrases = {tuple(tokenize(part)) for part in value_parts(value)}
                phrases = {p for p in phrases if 0 < len(p) <= self.settings.max_value_tokens}
                if phrases:
                    docs_with[key] += 1
                    self.values[key].update(phrases)
        for key in list(self.values):
            if len(self.values[key]) > self.settings.max_value_share * docs_with[key]:
                del self.values[key]  # an id, a price, free text: not a vocabulary
        self.keys = sorted(self.values, key=lambda k: (-docs_with[k], k))[:MAX_KEYS]
        keys: dict[tuple[str, ...], set[str]] = defaultdict(set)
        for key, counter in self.values.items():
            for phrase in counter:
                keys[phrase].add(key)
        self.value_keys = {phrase: frozenset(k) for phrase, k in keys.items()}

    def _doc_values(self, attrs: Mapping) -> dict[str, set[tuple[str, ...]]]:
        """A document's values of the vocabulary keys, as token phrases."""
        out: dict[str, set[tuple[str, ...]]] = defaultdict(set)
        for key, value in attrs.items():
            if key in self.values:
                out[key] |= {tuple(tokenize(part)) for part in value_parts(value)} - {()}
        return out

    def _learn_alignment(self, catalog: pd.DataFrame, attributes: list[dict]) -> None:
        """Title words that name an attribute value: in another language ("rot" for red), or a value that
        is written differently in titles. A word is read as value v of key k when at least
        ``min_alignment_docs`` titles use it and ``min_alignment_share`` of them have v, a value that is
        not itself on most documents."""
        s = self.settings
        per_language: dict[str, Counter] = defaultdict(Counter)
        together: dict[str, Counter] = defaultdict(Counter)
        value_docs: Counter = Counter()
        for language, title, attrs in zip(catalog["language"].astype(str), catalog["title"], attributes):
            values = {(k, v) for k, vs in self._doc_values(attrs).items() for v in vs}
            value_docs.update(values)
            for word in set(tokenize(clean_document_text(title))):
                per_language[language][word] += 1
                together[language].update((word, kv) for kv in values)
        total = len(catalog)
        for language, pairs in together.items():
            found: dict[str, set] = defaultdict(set)
            for (word, kv), count in pairs.items():
                uses = per_language[language][word]
                if (uses >= s.min_alignment_docs and count >= s.min_alignment_share * uses
                        and value_docs[kv] <= s.max_value_prior * total):
                    found[word].add(kv)
            self.aligned[language] = {w: frozenset(kvs) for w, kvs in found.items()}

    def values_of(self, words: tuple[str, ...], language: str) -> frozenset[tuple[str, tuple[str, ...]]]:
        """The (key, value) pairs a phrase names: an attribute value itself, or a title word aligned to one."""
        direct = {(k, words) for k in self.value_keys.get(words, ())}
        if len(words) == 1:
            direct |= self.aligned.get(language, {}).get(words[0], frozenset())
        return frozenset(direct)

    def _learn_glossary(self, glossary: pd.DataFrame, as_of) -> None:
        known = glossary
        if as_of is not None and "added" in glossary.columns:
            added = glossary["added"].astype(str).str[:10]
            known = glossary[(added <= str(as_of)[:10]) | glossary["added"].isna()]
        for term, language, concept in known[["term", "language", "concept"]].itertuples(index=False):
            phrase, words = tuple(tokenize(term)), tuple(tokenize(concept))
            if phrase and words and len(phrase) <= MAX_PHRASE_TOKENS:
                self.readings[str(language)][phrase] = words

    def _learn_links(self, impressions: pd.DataFrame, catalog: pd.DataFrame) -> None:
        """Per query word, how much more of its queries' clicks than of all clicks land on documents whose title
        uses each title word: what users searching the word take for it (a click translation table). A title
        word most documents use (a colour, "size") gets no more of one word's clicks than of anyone's."""
        s = self.settings
        clicked = impressions[impressions["clicks"].fillna(0) > 0]
        clicked = pd.DataFrame({"query_word": [sorted(set(tokenize(q))) for q in clicked["query"]],
                                "language": clicked["language"].astype(str).to_numpy(),
                                "doc_id": clicked["doc_id"].astype(str).to_numpy(),
                                "clicks": clicked["clicks"].astype(float).to_numpy()})
        pair = ["language", "doc_id"]
        documents = catalog.assign(doc_id=catalog["doc_id"].astype(str), language=catalog["language"].astype(str))
        documents = documents.merge(clicked[pair].drop_duplicates(), on=pair)  # only the clicked ones
        titles = pd.DataFrame({"language": documents["language"].to_numpy(), "doc_id": documents["doc_id"].to_numpy(),
                               "title_word": [sorted(set(tokenize(clean_document_text(t)))) for t in documents["title"]]}
                              ).explode("title_word").dropna(subset=["title_word"])
        # per query word and document first (queries share words), the words with too few clicks left out
        words = clicked.explode("query_word").dropna(subset=["query_word"]) \
            .groupby(["language", "query_word", "doc_id"], as_index=False)["clicks"].sum()
        totals = words.groupby(["language", "query_word"])["clicks"].sum()
        totals = totals[totals >= s.min_link_clicks]
        words = words.merge(totals.rename("total").reset_index(), on=["language", "query_word"])
        on_docs = clicked.groupby(pair, as_index=False)["clicks"].sum().merge(titles, on=pair)
        base = on_docs.groupby(["language", "title_word"])["clicks"].sum() \
            / clicked.groupby("language")["clicks"].sum().reindex(on_docs["language"].unique())
        shares = words.merge(titles, on=pair).groupby(["language", "query_word", "title_word"])[["clicks", "total"]] \
            .agg({"clicks": "sum", "total": "first"})
        shares = shares["clicks"] / shares["total"]
        excess = (shares - base.reindex(shares.index.droplevel("query_word")).to_numpy()).dropna()
        kept = excess[excess >= s.min_link_excess]
        for (language, word, title_word), lift in kept.items():
            self.links[language].setdefault(word, {})[title_word] = round(float(lift), 4)
        for (language, title_word), share in base.reindex(kept.index.droplevel("query_word").unique()).items():
            self.click_share[language][title_word] = round(float(share), 4)
        for (language, word) in totals.index:
            self.links[language].setdefault(word, {})
        for language, linked in self.links.items():  # words no title, value or glossary uses (new slang)
            for word in linked:
                if not self.knows(word, language) and (reading := self.linked_reading(word, None, language)):
                    self.click_words[language][word] = reading

    def link(self, word: str, title_words: set[str], language: str) -> float:
        """How much more of the word's clicks than of all clicks went to documents using one of ``title_words``
        (the most of them; nan: the word has too few clicks to say)."""
        links = self.links.get(language, {}).get(word)
        if links is None:
            return float("nan")
        return max((links.get(t, 0.0) for t in title_words), default=0.0)

    def strongest_link(self, word: str, language: str) -> float:
        """The word's largest link to any title word (nan: too few clicks to say, or no title word stands out)."""
        links = self.links.get(language, {}).get(word)
        return max(links.values()) if links else float("nan")

    def _readings(self, word: str, language: str) -> dict[str, tuple[float, float]]:
        """The title words the word's clicks say it may stand for, as (lift, link), lift = share of its clicks /
        share of all clicks: of those it links to at least ``min_reading_link``, the ones with a lift at least
        ``min_reading_ratio`` of the best one's. A word every title of a kind uses ("size") links as strongly as
        the kind's name, with far less lift; of equal lifts, the larger link covers more of the word's clicks."""
        s = self.settings
        base = self.click_share.get(language, {})
        lift = {t: ((v + base[t]) / base[t], v) for t, v in self.links.get(language, {}).get(word, {}).items()
                if v >= s.min_reading_link and base.get(t)}
        best = max((v[0] for v in lift.values()), default=0.0)
        return {t: v for t, v in lift.items() if v[0] >= s.min_reading_ratio * best}

    def linked_reading(self, word: str, title_words: set[str] | None, language: str) -> str | None:
        """The title word of ``title_words`` (None: of any title) the word's clicks say it stands for
        (:meth:`_readings`; None: none)."""
        readings = self._readings(word, language)
        found = list(readings) if title_words is None else [t for t in title_words if t in readings]
        return max(found, key=lambda t: (*readings[t], t)) if found else None

    # --- reading --------------------------------------------------------------------------------

    def knows(self, word: str, language: str) -> bool:
        """Whether any title, attribute value or glossary term of the language uses the word."""
        if language not in self._known:
            known = set(self.title_df.get(language, {}))
            known |= {w for phrase in self.value_keys for w in phrase}
            known |= {w for phrase in self.readings.get(language, {}) for w in phrase}
            self._known[language] = known
        return word in self._known[language]

    def _repair(self, word: str, language: str) -> str | None:
        """The one known title word a typo'd word is one edit away from; None if none or several."""
        if len(word) < self.settings.fuzzy_min_length or word.isdigit():
            return None
        candidates = [w for w in self.title_df.get(language, {}) if abs(len(w) - len(word)) <= 1
                      and within_one_edit(word, w)]
        return candidates[0] if len(candidates) == 1 else None

    def _glossary_reading(self, concept: tuple[str, ...], language: str) -> tuple[str, ...]:
        """The catalogue words a glossary concept contains (its longest known phrase), whatever format the
        concept is written in; the concept's own words when the catalogue knows none of them."""
        for length in range(min(MAX_PHRASE_TOKENS, len(concept)), 0, -1):
            for i in range(len(concept) - length + 1):
                phrase = concept[i:i + length]
                if self.values_of(phrase, language) or (length == 1 and self.title_df[language].get(phrase[0])):
                    return phrase
        return concept

    def read(self, query: str, language: str) -> list[tuple[tuple[str, ...], str, tuple[str, ...]]]:
        """The query as (phrase, kind, read_as) items, longest match first: glossary terms, attribute values,
        title words, click-learnt and typo-repaired words, unknown words. ``read_as``: the catalogue words
        the item stands for (the phrase itself unless a glossary, click or typo reading replaced it)."""
        tokens = tokenize(query)
        glossary = self.readings.get(language, {})
        out, i = [], 0
        while i < len(tokens):
            for length in range(min(MAX_PHRASE_TOKENS, len(tokens) - i), 0, -1):
                phrase = tuple(tokens[i:i + length])
                if phrase in glossary:
                    out.append((phrase, "glossary", self._glossary_reading(glossary[phrase], language)))
                    break
                if phrase in self.value_keys:
                    out.append((phrase, "value", phrase))
                    break
            else:
                word = tokens[i]
                if self.title_df.get(language, {}).get(word):
                    out.append(((word,), "word", (word,)))
                elif word in self.click_words.get(language, {}):
                    out.append(((word,), "clicks", (self.click_words[language][word],)))
                elif (fixed := self._repair(word, language)) is not None:
                    out.append(((word,), "typo", (fixed,)))
                else:
                    out.append(((word,), "unknown", (word,)))
                length = 1
            i += length
        return out

    def expand_query(self, query: str, language: str) -> str:
        """The query in the catalogue's words: glossary terms, click-learnt words and typos read as the
        words they stand for; everything else as typed."""
        return " ".join(" ".join(read_as) for _, _, read_as in self.read(normalize_query(query), language))

    def explain(self, pair: PairToJudge) -> list[WordEvidence]:
        """How each query item relates to the pair's document: per attribute key the item names, whether the
        document has that value or another one; else whether its text uses the words, or, for a word, the title
        word its clicks link it to (:meth:`linked_reading`)."""
        title = set(tokenize(clean_document_text(pair.title)))
        description = set(tokenize(clean_document_text(pair.description)))
        doc_values = self._doc_values(pair.attributes)
        attribute_words = {w for phrases in doc_values.values() for p in phrases for w in p}
        out = []
        for phrase, kind, words in self.read(normalize_query(pair.query), pair.language):
            named: dict[str, set[tuple[str, ...]]] = defaultdict(set)
            for key, value in (self.values_of(words, pair.language) if kind != "unknown" else ()):
                named[key].add(value)
            states = tuple(sorted((key, "matched" if values & doc_values[key] else "contradicted")
                                  for key, values in named.items() if doc_values.get(key)))
            if any(state == "matched" for _, state in states):
                found = "attributes"
            elif all(w in title for w in words):
                found = "title"
            elif states:
                found = "contradicted"
            elif all(w in attribute_words for w in words):
                found = "attributes"
            elif all(w in description for w in words):
                found = "description"
            elif len(phrase) == 1 and (linked := self.linked_reading(phrase[0], title, pair.language)):
                found, kind, words = "title", "links", (linked,)
            else:
                found = "missing"
            contradicting = tuple(sorted(" ".join(v) for key, state in states if state == "contradicted"
                                         for v in doc_values[key]))
            evidence_kind = "unknown" if kind == "unknown" else ("value" if named else "word")
            read_as = " ".join(words) if words != phrase else ""
            out.append(WordEvidence(" ".join(phrase), evidence_kind, found, tuple(sorted(named)), contradicting[:5],
                                    read_as, states))
        return out

    def facts(self, pair: PairToJudge, max_items: int = 12) -> dict:
        """What an LLM judge is told before it judges (the method's retrieval step), as short plain facts:
        how the catalogue reads each query word and whether this document states it."""
        items = []
        for e in self.explain(pair)[:max_items]:
            fact = {"query_word": e.word, "known_as": e.kind, "in_document": e.found}
            if e.keys:
                fact["attribute"] = ", ".join(e.keys[:3])
            if e.doc_values:
                fact["document_says"] = ", ".join(e.doc_values[:3])
            if e.read_as:
                fact["read_as"] = e.read_as
            items.append(fact)
        return {"catalogue_reading": items}

    # --- lineage --------------------------------------------------------------------------------

    def fingerprint(self) -> str:
        return stable_hash({"titles": {lang: sorted(c.items()) for lang, c in self.title_df.items()},
                            "values": {k: sorted(" ".join(p) for p in c) for k, c in self.values.items()},
                            "readings": {lang: sorted([" ".join(p), " ".join(w)] for p, w in r.items())
                                         for lang, r in self.readings.items()},
                            "clicks": {lang: sorted(w.items()) for lang, w in self.click_words.items()},
                            "aligned": {lang: sorted([w, sorted([k, " ".join(v)] for k, v in kvs)] for w, kvs in a.items())
                                        for lang, a in self.aligned.items()},
                            "links": {lang: sorted([w, sorted(t.items())] for w, t in links.items())
                                      for lang, links in self.links.items()},
                            "click_share": {lang: sorted(shares.items()) for lang, shares in self.click_share.items()},
                            "settings": asdict(self.settings)})

    def summary(self) -> dict:
        return {"languages": dict(self.n_docs), "vocabulary_keys": {k: len(c) for k, c in sorted(self.values.items())},
                "glossary_terms": sum(len(r) for r in self.readings.values()),
                "aligned_title_words": {lang: len(a) for lang, a in self.aligned.items()},
                "click_words": {lang: dict(sorted(w.items())[:20]) for lang, w in self.click_words.items()},
                "linked_query_words": {lang: len(links) for lang, links in self.links.items()}}

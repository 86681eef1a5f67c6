"""Text helpers every embedded judge shares: tokens, query keys, untrusted document text, attributes.

Nothing here knows how a particular catalogue names its fields: attributes are whatever JSON object
the user's catalogue carries, values are read as text, and a value that is a list or a path
(``"Shoes > Sneakers"``, ``["Shoes", "Sneakers"]``) is read as its parts.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

import numpy as np

from .prompt import INSTRUCTION_REDACTED, JSON_REDACTED, sanitize_untrusted

MAX_TEXT_CHARS = 2000
MAX_VALUE_CHARS = 200

_TOKEN = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_PATH_SEPARATOR = re.compile(r"\s*(?:>|/|\||›|»|;)\s*")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens."""
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


def value_parts(value) -> list[str]:
    """An attribute value as the texts it names: a list's items, a path's steps, else the value itself.
    Numbers and booleans are text too; nested objects and empty values name nothing."""
    if value is None or isinstance(value, (dict, bool)) or (isinstance(value, float) and not math.isfinite(value)):
        return []
    if isinstance(value, (list, tuple)):
        return [part for item in value for part in value_parts(item)]
    text = clean_document_text(str(value), MAX_VALUE_CHARS)
    return [part for part in _PATH_SEPARATOR.split(text) if part.strip()]


def attribute_text(attributes: Mapping) -> str:
    """Every attribute value of a document as one text (the judges read values, never key names)."""
    return " . ".join(part for value in attributes.values() for part in value_parts(value))


def within_one_edit(a: str, b: str) -> bool:
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


def json_number(value):
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

"""Reader of the Amazon ESCI judged set as the OpenSearch projects ship it (``/work/shared/data/esci/``).

A folder holding both files is an ESCI folder:

- ``esci_us_judgments.json``: ``{"judgmentRatings": [{"query": ..., "ratings": [{"docId": ASIN,
  "rating": "100.000"}, ...]}, ...]}``; ratings 100 / 10 / 1 / 0 (Exact, Substitute, Complement,
  Irrelevant) become the labels 3 / 2 / 1 / 0;
- ``ubi_ecommerce_products.json.gz`` (or ``.json``): one product a line (``asin, title, description,
  bullet_points, brand, color, category, price, rating, rating_count, ...``).

``read_esci(folder)`` returns the input contract's catalogue (doc_id = ASIN, language ``en``, title,
description = the description, or the bullet points where it is empty, attributes JSON with the
product's own ``brand``, ``color``, ``category`` (the category path joined with " > "), ``price``,
``rating``, ``rating_count``, ``is_book`` where present) and judgments (query, doc_id, language
``en``, label). Bad input raises ``EsciError`` naming the file, the line or query, and the field.
"""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

import pandas as pd

JUDGMENTS_FILE = "esci_us_judgments.json"
PRODUCT_FILES = ("ubi_ecommerce_products.json.gz", "ubi_ecommerce_products.json")
LANGUAGE = "en"
RATING_LABELS = {100.0: 3, 10.0: 2, 1.0: 1, 0.0: 0}
CATEGORY_SEPARATOR = " > "
ATTRIBUTE_FIELDS = ("brand", "color", "price", "rating", "rating_count", "is_book")  # besides category


class EsciError(ValueError):
    """An ESCI file that does not hold what the reader expects; the message names file, place and field."""


def products_file(folder: Path) -> Path | None:
    return next((folder / name for name in PRODUCT_FILES if (folder / name).is_file()), None)


def is_esci_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding the ESCI judgments and products files."""
    folder = Path(path)
    return folder.is_dir() and (folder / JUDGMENTS_FILE).is_file() and products_file(folder) is not None


def category_path(value, where: str) -> str | None:
    """The category path as "A > B > C": from a list, or a Python-style list string ("['A', 'B']")."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("["):
            return text or None
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError) as exc:
            raise EsciError(f"{where}: field 'category' {text[:60]!r} is not a list ({exc})") from exc
    if not isinstance(value, list) or not all(isinstance(part, str) for part in value):
        raise EsciError(f"{where}: field 'category' must be a list of strings, got {value!r:.60}")
    parts = [part.strip() for part in value if part.strip()]
    return CATEGORY_SEPARATOR.join(parts) or None


def _text(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def read_products(path: Path) -> pd.DataFrame:
    """The catalogue of the contract from the products file (one JSON object a line)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    rows, seen = [], set()
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                product = json.loads(line)
            except ValueError as exc:
                raise EsciError(f"{where}: not a JSON object ({exc})") from exc
            if not isinstance(product, dict):
                raise EsciError(f"{where}: a JSON {type(product).__name__}, not an object")
            asin, title = _text(product.get("asin")), _text(product.get("title"))
            if not asin:
                raise EsciError(f"{where}: field 'asin' is missing or blank")
            if not title:
                raise EsciError(f"{where}: field 'title' of {asin} is missing or blank")
            if asin in seen:
                raise EsciError(f"{where}: asin {asin} appears twice")
            seen.add(asin)
            attributes = {name: product[name] for name in ATTRIBUTE_FIELDS
                          if product.get(name) is not None and product.get(name) != ""}
            category = category_path(product.get("category"), where)
            if category:
                attributes["category"] = category
            rows.append({"doc_id": asin, "language": LANGUAGE, "title": title,
                         "description": _text(product.get("description")) or _text(product.get("bullet_points")),
                         "attributes": json.dumps(attributes, sort_keys=True, ensure_ascii=False)})
    return pd.DataFrame(rows, columns=["doc_id", "language", "title", "description", "attributes"])


def _label(rating, where: str) -> int:
    try:
        value = float(rating)
    except (TypeError, ValueError):
        value = None
    if value not in RATING_LABELS:
        raise EsciError(f"{where}: field 'rating' {rating!r} is not one of 100, 10, 1, 0")
    return RATING_LABELS[value]


def read_judgments(path: Path) -> pd.DataFrame:
    """query, doc_id, language, label from the judgments file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise EsciError(f"{path}: not JSON ({exc})") from exc
    entries = data.get("judgmentRatings") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise EsciError(f"{path}: no 'judgmentRatings' list")
    rows, seen = [], set()
    for number, entry in enumerate(entries, start=1):
        query = _text(entry.get("query")) if isinstance(entry, dict) else ""
        where = f"{path}, judgmentRatings[{number - 1}]"
        if not query:
            raise EsciError(f"{where}: field 'query' is missing or blank")
        ratings = entry.get("ratings")
        if not isinstance(ratings, list):
            raise EsciError(f"{where} (query {query!r}): field 'ratings' is not a list")
        for k, rating in enumerate(ratings):
            place = f"{where}.ratings[{k}] (query {query!r})"
            doc_id = _text(rating.get("docId")) if isinstance(rating, dict) else ""
            if not doc_id:
                raise EsciError(f"{place}: field 'docId' is missing or blank")
            if (query, doc_id) in seen:
                raise EsciError(f"{place}: docId {doc_id} is judged twice for this query")
            seen.add((query, doc_id))
            rows.append({"query": query, "doc_id": doc_id, "language": LANGUAGE,
                         "label": _label(rating.get("rating"), place)})
    return pd.DataFrame(rows, columns=["query", "doc_id", "language", "label"])


def read_esci(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(catalogue, judgments) of an ESCI folder, in the input contract's columns."""
    folder = Path(folder)
    if not is_esci_folder(folder):
        raise EsciError(f"{folder}: not an ESCI folder (needs {JUDGMENTS_FILE} and one of {', '.join(PRODUCT_FILES)})")
    return read_products(products_file(folder)), read_judgments(folder / JUDGMENTS_FILE)

"""A judged set to replay: a catalogue and graded judgments, read from the input contract's files or
from an ESCI folder (``esci.py``), checked so that bad input fails with its file, row and column.

- catalogue: ``doc_id, language, title, description, attributes`` (the contract's catalogue);
- judgments: ``query, doc_id, language, label`` (0-3); ``split`` and ``ts``, when present, are
  ignored: the replay decides which pairs are seed or test and when they are seen.

Either may be one file (Parquet, JSON Lines, CSV, optionally gzipped) or a folder of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from spark_jobs.landing import SOURCE_FILE, SOURCE_ROW, landing_files, read_records
from spark_jobs.schemas import CATALOG, JUDGMENT_FIELDS, Contract, validate_records

from .esci import is_esci_folder, read_esci

PAIR_KEY = ["query", "language", "doc_id"]
JUDGED = Contract(
    "judged_pairs",
    {"query": "str", "doc_id": "str", "language": "str", "label": "int"},
    schema=pa.DataFrameSchema({c: JUDGMENT_FIELDS.columns[c] for c in ("query", "doc_id", "language", "label")},
                              name="judged_pairs"),
)
SHOWN_PROBLEMS = 5  # rejected rows named in an error message


class JudgedSetError(ValueError):
    """A judged set that cannot be replayed; the message names the file, row and column."""


@dataclass
class JudgedSet:
    catalog: pd.DataFrame     # doc_id, language, title, description, attributes (JSON text)
    judgments: pd.DataFrame   # query, doc_id, language, label (int), source (file, row) for messages
    source: dict              # where it was read from (for the manifest)


def _files(path: Path, what: str) -> list[Path]:
    if path.is_file():
        return [path]
    files = landing_files(path) if path.is_dir() else []
    if not files:
        raise JudgedSetError(f"{path}: no {what} file (Parquet, JSON Lines or CSV) found there")
    return files


def _read(path: Path, contract: Contract, what: str) -> pd.DataFrame:
    frames = []
    for file in _files(path, what):
        raw = read_records(file, contract.required, contract.optional)
        kept, rejected = validate_records(raw, contract)
        if len(rejected):
            problems = "; ".join(f"{r.source_file} row {r.source_row}: {r.reason}"
                                 for r in rejected.head(SHOWN_PROBLEMS).itertuples())
            more = f" (and {len(rejected) - SHOWN_PROBLEMS} more rows)" if len(rejected) > SHOWN_PROBLEMS else ""
            raise JudgedSetError(f"{len(rejected)} {what} row(s) break the input contract: {problems}{more}")
        frames.append(kept)
    frame = pd.concat(frames, ignore_index=True)
    return frame.rename(columns={SOURCE_FILE: "source_file", SOURCE_ROW: "source_row"})


def _where(row) -> str:
    return f"{row.source_file} row {row.source_row}" if "source_file" in row._fields else "ESCI judgments"


def check(catalog: pd.DataFrame, judgments: pd.DataFrame) -> None:
    """Every judged document is in the catalogue; no document or pair appears twice."""
    doubled = catalog[catalog["doc_id"].duplicated()]
    if len(doubled):
        raise JudgedSetError(f"catalogue: doc_id {doubled['doc_id'].iat[0]!r} appears more than once")
    twice = judgments[judgments.duplicated(PAIR_KEY)]
    if len(twice):
        row = next(twice.itertuples())
        raise JudgedSetError(f"{_where(row)}: the pair (query {row.query!r}, language {row.language!r}, doc_id "
                             f"{row.doc_id!r}) is judged more than once (column doc_id)")
    unknown = judgments[~judgments["doc_id"].isin(set(catalog["doc_id"]))]
    if len(unknown):
        row = next(unknown.itertuples())
        raise JudgedSetError(f"{_where(row)}: doc_id {row.doc_id!r} (query {row.query!r}) is not in the catalogue "
                             f"({len(unknown)} judged pairs name unknown documents)")
    if judgments.empty:
        raise JudgedSetError("the judged set holds no judgments")


def load_judged_set(judgments: str | Path, catalog: str | Path | None = None) -> JudgedSet:
    """Read a judged set: ``judgments`` an ESCI folder (its catalogue comes with it), or contract files with
    ``catalog`` the catalogue's file or folder."""
    judgments = Path(judgments)
    for path in (judgments, catalog):
        if path is not None and not Path(path).exists():
            raise JudgedSetError(f"{path}: no such file or folder")
    if is_esci_folder(judgments):
        cat, judged = read_esci(judgments)
        source = {"format": "esci", "judgments": str(judgments), "catalog": str(catalog or judgments)}
        if catalog is not None:
            cat = _read(Path(catalog), CATALOG, "catalogue")
    else:
        if catalog is None:
            raise JudgedSetError(f"{judgments}: not an ESCI folder, so the catalogue must be given (--catalog)")
        cat = _read(Path(catalog), CATALOG, "catalogue")
        judged = _read(judgments, JUDGED, "judgments")
        source = {"format": "contract", "judgments": str(judgments), "catalog": str(catalog)}
    judged["label"] = judged["label"].astype(int)
    cat = cat[["doc_id", "language", "title", "description", "attributes"]].reset_index(drop=True)
    check(cat, judged)
    return JudgedSet(cat, judged.reset_index(drop=True), source)

"""Reading landing files into raw records, keeping each record's file and record number.

Landing files are read in Python, one file at a time, because the quarantine must name the file
and record of every rejected row; everything downstream of validation is Spark.
Every value is read as text (or None) and typed later by ``schemas.coerce``, so one set of rules
applies whatever the format.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Iterable

import pandas as pd
import pyarrow.parquet as pq

SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"  # 1-based record number within the file (JSONL: line; CSV: line - 1)
PARSE_ERROR = "_parse_error"  # a record that could not be parsed at all (bad JSON line, wrong field count)

SUPPORTED = (".parquet", ".jsonl", ".ndjson", ".json", ".csv")


class LandingFileError(ValueError):
    """A landing file that cannot be read at all: the run fails and no table changes."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def landing_files(folder: Path) -> list[Path]:
    """Data files in a landing folder (recursively), in a stable order; hidden files are skipped."""
    if not folder.exists():
        return []
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts)
    )


def file_fingerprints(folders) -> dict[str, str]:
    """``{path: "size:mtime_ns"}`` for the data files of ``folders``: what tells a changed file from a seen one."""
    return {str(p): f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for folder in folders for p in landing_files(folder)}


def file_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for ext in SUPPORTED:
        if name.endswith(ext):
            return {".ndjson": "jsonl", ".json": "jsonl"}.get(ext, ext[1:])
    raise LandingFileError(path, f"unsupported file type; expected one of {', '.join(SUPPORTED)} (optionally .gz)")


def _text(value) -> str | None:
    """Every raw value as text; containers as compact JSON so nothing is lost."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _open_text(path: Path):
    raw = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")


def _frame(records: list[dict], columns: Iterable[str], path: Path) -> pd.DataFrame:
    columns = list(columns)
    frame = pd.DataFrame.from_records(records, columns=columns + [SOURCE_ROW, PARSE_ERROR]) if records else \
        pd.DataFrame({c: pd.Series(dtype=object) for c in columns + [SOURCE_ROW, PARSE_ERROR]})
    frame[SOURCE_FILE] = str(path)
    frame[SOURCE_ROW] = frame[SOURCE_ROW].astype("int64")
    return frame


def read_records(path: Path, required: Iterable[str], optional: Iterable[str] = ()) -> pd.DataFrame:
    """Read one landing file as text columns ``required + optional`` plus source columns.

    Raises ``LandingFileError`` when the file cannot be read or lacks a required column.
    Records that cannot be parsed individually are kept with ``_parse_error`` set.
    """
    required, optional = list(required), list(optional)
    columns = required + optional
    fmt = file_format(path)
    try:
        if fmt == "parquet":
            records, present = _read_parquet(path, columns)
        elif fmt == "jsonl":
            records, present = _read_jsonl(path, columns)
        else:
            records, present = _read_csv(path, columns)
    except LandingFileError:
        raise
    except UnicodeDecodeError as exc:
        raise LandingFileError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except Exception as exc:  # a corrupt or mislabelled file
        raise LandingFileError(path, f"cannot be read as {fmt}: {exc}") from exc
    missing = [c for c in required if c not in present]
    if missing and (present or records):
        raise LandingFileError(path, f"missing required column(s) {', '.join(missing)}; found {', '.join(sorted(present)) or 'none'}")
    return _frame(records, columns, path)


def _read_parquet(path: Path, columns: list[str]):
    table = pq.read_table(path)
    present = set(table.column_names)
    data = {c: table.column(c).to_pylist() for c in columns if c in present}
    records = [
        {**{c: _text(data[c][i]) for c in data}, SOURCE_ROW: i + 1, PARSE_ERROR: None}
        for i in range(table.num_rows)
    ]
    return records, present


def _read_jsonl(path: Path, columns: list[str]):
    records, present = [], set()
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"a JSON {type(obj).__name__}, not an object")
            except ValueError as exc:
                records.append({SOURCE_ROW: number, PARSE_ERROR: f"line {number} is not a JSON object: {exc}"})
                continue
            present.update(obj)
            records.append({**{c: _text(obj.get(c)) for c in columns}, SOURCE_ROW: number, PARSE_ERROR: None})
    if records and not present:
        raise LandingFileError(path, "no line is a JSON object; is this really JSON Lines?")
    return records, present


def _read_csv(path: Path, columns: list[str]):
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return [], set()
        header = [h.strip().lstrip("\ufeff") for h in header]
        index = {name: i for i, name in enumerate(header)}
        records = []
        for number, row in enumerate(reader, start=1):
            if not row:
                continue
            if len(row) != len(header):
                records.append({SOURCE_ROW: number, PARSE_ERROR: f"line {number + 1} has {len(row)} fields, the header has {len(header)}"})
                continue
            records.append({**{c: (row[index[c]] if c in index and row[index[c]] != "" else None) for c in columns},
                            SOURCE_ROW: number, PARSE_ERROR: None})
    return records, set(header)

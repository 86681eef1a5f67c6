"""Reading landing files into raw records, keeping each record's file and record number.

Landing files are read in Python, one file at a time, because the quarantine must name the file
and record of every rejected row; everything downstream of validation is Spark.
Every value is read as text (or None) and typed later by ``schemas.coerce``, so one set of rules
applies whatever the format.

Landing files are untrusted: a symbolic link out of the landing folder is refused, and no line of a
CSV or JSON Lines file is held longer than ``LandingLimits.hard_max_chars`` (a longer one is skipped
to its end and its record quarantined). The per-column limits are applied by ``schemas.validate_records``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"  # 1-based record number within the file (JSONL: line; CSV: line - 1)
PARSE_ERROR = "_parse_error"  # a record that could not be parsed at all (bad JSON line, wrong field count)

SUPPORTED = (".parquet", ".jsonl", ".ndjson", ".json", ".csv")

# C0 and C1 control characters (ESC, NUL, U+0085 ...), DEL and unpaired surrogates (JSON's "\ud800")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class LandingLimits:
    """What one landing record may hold; a value over its limit quarantines its row (never rewritten).

    ``hard_max_chars`` bounds reading: no line of a CSV or JSON Lines file, and no CSV field, is held
    longer (``csv.field_size_limit`` is raised to it while a file is read). The others are the
    longest value of a column, by kind: ids (and numbers, booleans, timestamps), queries (``query``,
    ``term``), titles, and free text (``description``, ``attributes``). A quarantined record stores
    each value cut to ``max_quarantine_value_chars``. ``batch_rows`` records of a file are read, validated and
    turned into Arrow at a time: the driver holds one batch of Python values, however large the file.
    """

    hard_max_chars: int = 1_000_000
    max_id_chars: int = 512
    max_query_chars: int = 1_000
    max_title_chars: int = 2_000
    max_text_chars: int = 100_000
    max_quarantine_value_chars: int = 1_000
    batch_rows: int = 200_000

    def __post_init__(self):
        bad = [name for name, value in vars(self).items() if not isinstance(value, int) or value < 1]
        if bad:
            raise ValueError(f"LandingLimits: {', '.join(bad)} must be positive integers")

    def max_chars(self, kind: str) -> int:
        """The limit of a column kind: 'id', 'query', 'title' or 'text'."""
        return getattr(self, f"max_{kind}_chars")


def escaped(text: str, width: int | None = None) -> str:
    """``text`` safe to print: control characters as escapes, cut to ``width`` characters (then '...')."""
    cut = text if width is None or len(text) <= width else text[:width] + "..."
    return CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", cut)


class LandingFileError(ValueError):
    """A landing file that cannot be read at all: the run fails and no table changes."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{escaped(str(path))}: {problem}")


def landing_files(folder: Path) -> list[Path]:
    """Data files in a landing folder (recursively), in a stable order; hidden files are skipped.

    A symbolic link (file or folder) that points outside ``folder`` raises ``LandingFileError``, as does
    a name with a control character. A file link inside is read where it is; a folder link inside is
    not followed (its files are read at their own place).
    """
    if not folder.exists():
        return []
    root, files = folder.resolve(), []
    for parent, folders, names in os.walk(folder):
        here = Path(parent)
        folders[:] = sorted(d for d in folders if not _hidden(d) and not _checked(here / d, root).is_symlink())
        files += [here / n for n in names if not _hidden(n) and _checked(here / n, root).is_file()]
    return sorted(files)


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _checked(path: Path, root: Path) -> Path:
    """``path``, unless it is a link out of ``root`` or its name has a control character."""
    if CONTROL.search(path.name):
        raise LandingFileError(path, "its name has a control character; rename it")
    if not path.is_symlink():
        return path
    try:
        inside = path.resolve(strict=False).is_relative_to(root)
    except (OSError, RuntimeError):  # a link loop
        inside = False
    if not inside:
        raise LandingFileError(path, "is a symbolic link that points outside the landing folder; it is not read "
                                     "(copy the file into the folder instead)")
    return path


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


class LineTooLong(ValueError):
    """A line over the hard limit: skipped to its end, never held whole."""


class BoundedLines:
    """The lines of a text handle, none held longer than ``limit`` characters (without its line end).

    A longer line is read on to its end in pieces, then ``LineTooLong`` is raised; iteration goes on
    at the next line. ``number`` is the number of the line read last.
    """

    def __init__(self, handle, limit: int):
        self.handle, self.limit, self.number = handle, limit, 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.handle.readline(self.limit + 1)
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) > self.limit and not line.endswith(("\n", "\r")):
            while (rest := self.handle.readline(self.limit + 1)) and not rest.endswith(("\n", "\r")):
                pass
            raise LineTooLong(f"line {self.number} is longer than the hard limit of {self.limit} characters; "
                              "it was not read")
        return line

    def numbered(self):
        """(line number, line) pairs; the line is a ``LineTooLong`` where it was over the limit."""
        while True:
            try:
                line = next(self)
            except StopIteration:
                return
            except LineTooLong as exc:
                line = exc
            yield self.number, line


@contextmanager
def _csv_field_limit(limit: int):
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def shown_names(names: Iterable[str], most: int = 10, width: int = 40) -> str:
    """Column names for a message: sorted, at most ``most`` of them, each cut and escaped."""
    names = sorted(names)
    shown = ", ".join(escaped(n, width) for n in names[:most]) or "none"
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _frame(records: list[dict] | pd.DataFrame, columns: Iterable[str], path: Path) -> pd.DataFrame:
    columns = list(columns) + [SOURCE_ROW, PARSE_ERROR]
    if isinstance(records, pd.DataFrame):
        frame = records.assign(**{c: None for c in columns if c not in records})[columns]
    elif records:
        frame = pd.DataFrame.from_records(records, columns=columns)
    else:
        frame = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    frame[SOURCE_FILE] = str(path)
    frame[SOURCE_ROW] = frame[SOURCE_ROW].astype("int64")
    return frame


def iter_records(path: Path, required: Iterable[str], optional: Iterable[str] = (),
                 limits: LandingLimits = LandingLimits()) -> Iterator[pd.DataFrame]:
    """Read one landing file as text columns ``required + optional`` plus source columns, in frames of at most
    ``limits.batch_rows`` records.

    Raises ``LandingFileError`` when the file cannot be read or lacks a required column (a CSV or Parquet file
    before its first frame; JSON Lines, whose columns are known only at the end, after its last).
    Records that cannot be parsed individually (or have a line over ``limits.hard_max_chars``) are
    kept with ``_parse_error`` set.
    """
    required, optional = list(required), list(optional)
    columns, fmt, present, rows = required + optional, file_format(path), set(), 0
    if fmt == "parquet":
        batches = _parquet_batches(path, columns, limits, present)
    else:
        reader = _jsonl_records if fmt == "jsonl" else _csv_records
        batches = _batched(reader(path, columns, limits, present), limits.batch_rows)
    try:
        for records in batches:
            if fmt != "jsonl":
                _check_columns(path, required, present, True)
            rows += len(records)
            yield _frame(records, columns, path)
    except LandingFileError:
        raise
    except UnicodeDecodeError as exc:
        raise LandingFileError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except Exception as exc:  # a corrupt or mislabelled file
        raise LandingFileError(path, f"cannot be read as {fmt}: {exc}") from exc
    _check_columns(path, required, present, rows > 0)


def _check_columns(path: Path, required: list[str], present: set[str], has_rows: bool) -> None:
    missing = [c for c in required if c not in present]
    if missing and (present or has_rows):
        raise LandingFileError(path, f"missing required column(s) {', '.join(missing)}; found {shown_names(present)}")


def read_records(path: Path, required: Iterable[str], optional: Iterable[str] = (),
                 limits: LandingLimits = LandingLimits()) -> pd.DataFrame:
    """The whole of one landing file as ``iter_records`` reads it, in one frame."""
    required, optional = list(required), list(optional)
    frames = list(iter_records(path, required, optional, limits))
    return pd.concat(frames, ignore_index=True) if frames else _frame([], required + optional, path)


def _batched(records: Iterator[dict], size: int) -> Iterator[list[dict]]:
    """Lists of at most ``size`` records."""
    while batch := list(islice(records, size)):
        yield batch


def parquet_batches(path: Path, required: Iterable[str], optional: Iterable[str] = (),
                    limits: LandingLimits = LandingLimits(), present: set[str] | None = None
                    ) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """A Parquet landing file as Arrow batches of at most ``limits.batch_rows`` rows of the columns
    ``required + optional`` it has (no other column is loaded), each with its rows' record numbers (1-based).

    Raises ``LandingFileError`` as ``iter_records`` does: a file that cannot be read, or lacks a required column
    (before its first batch). ``present``, where given, gets the file's column names."""
    required, optional, present = list(required), list(optional), set() if present is None else present
    try:
        parquet = pq.ParquetFile(path)
        present.update(parquet.schema_arrow.names)
        _check_columns(path, required, present, False)
        wanted, first = [c for c in required + optional if c in present], 1
        for batch in parquet.iter_batches(batch_size=limits.batch_rows, columns=wanted):
            yield batch, np.arange(first, first + batch.num_rows, dtype=np.int64)
            first += batch.num_rows
    except LandingFileError:
        raise
    except Exception as exc:  # a corrupt or mislabelled file
        raise LandingFileError(path, f"cannot be read as parquet: {exc}") from exc


def _parquet_texts(batch: pa.RecordBatch, numbers: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({c: _texts(batch.column(c)) for c in batch.schema.names}, index=pd.RangeIndex(len(numbers)))
    frame[SOURCE_ROW] = numbers
    frame[PARSE_ERROR] = None
    return frame


def parquet_records(batch: pa.RecordBatch, numbers: np.ndarray, columns: Iterable[str], path: Path) -> pd.DataFrame:
    """Rows of a Parquet batch of ``path`` (record numbers ``numbers``) as ``iter_records`` gives them: each value
    as text (see ``_texts``), the ``columns`` it lacks as None."""
    return _frame(_parquet_texts(batch, numbers), columns, path)


def _parquet_batches(path: Path, columns: list[str], limits: LandingLimits, present: set[str]):
    for batch, numbers in parquet_batches(path, [], columns, limits, present):
        yield _parquet_texts(batch, numbers)


def _texts(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A Parquet column as ``_text`` gives each value, column at a time where Arrow's text is Python's: strings
    as they are, integers and booleans cast by Arrow; other types (floats: Arrow writes 2.0 as '2') value by value."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _texts(column.cast(kind.value_type))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column.to_numpy(zero_copy_only=False)
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return column.cast(pa.string()).to_numpy(zero_copy_only=False)
    values = np.empty(len(column), dtype=object)
    values[:] = [_text(v) for v in column.to_pylist()]
    return values


def _jsonl_records(path: Path, columns: list[str], limits: LandingLimits, present: set[str]):
    count = 0
    with _open_text(path) as handle:
        for number, line in BoundedLines(handle, limits.hard_max_chars).numbered():
            count += 1
            if isinstance(line, LineTooLong):
                yield {SOURCE_ROW: number, PARSE_ERROR: str(line)}
                continue
            if not line.strip():
                count -= 1
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"a JSON {type(obj).__name__}, not an object")
            except RecursionError:
                yield {SOURCE_ROW: number, PARSE_ERROR: f"line {number} is JSON nested too deeply"}
                continue
            except ValueError as exc:
                yield {SOURCE_ROW: number, PARSE_ERROR: f"line {number} is not a JSON object: {exc}"}
                continue
            present.update(obj)
            yield {**{c: _text(obj.get(c)) for c in columns}, SOURCE_ROW: number, PARSE_ERROR: None}
    if count and not present:
        raise LandingFileError(path, "no line is a JSON object; is this really JSON Lines?")


def _csv_rows(reader, lines: BoundedLines):
    """Each CSV record after the header: its fields, or (text) why it could not be read; reading goes
    on at the next line."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except LineTooLong as exc:
            yield str(exc)
        except csv.Error as exc:  # e.g. a field over the hard limit, across lines
            yield f"line {lines.number} cannot be read as CSV: {exc}"


def _csv_records(path: Path, columns: list[str], limits: LandingLimits, present: set[str]):
    with _open_text(path) as handle, _csv_field_limit(limits.hard_max_chars):
        lines = BoundedLines(handle, limits.hard_max_chars)
        reader = csv.reader(lines)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip().lstrip("\ufeff") for h in header]
        present.update(header)
        index = {name: i for i, name in enumerate(header)}
        for number, row in enumerate(_csv_rows(reader, lines), start=1):
            if isinstance(row, str):
                yield {SOURCE_ROW: number, PARSE_ERROR: row}
            elif row and len(row) != len(header):
                yield {SOURCE_ROW: number, PARSE_ERROR: f"line {number + 1} has {len(row)} fields, the header has {len(header)}"}
            elif row:
                yield {**{c: (row[index[c]] if c in index and row[index[c]] != "" else None) for c in columns},
                       SOURCE_ROW: number, PARSE_ERROR: None}

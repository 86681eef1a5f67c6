"""Ingestion: landing files -> validated bronze rows (+ quarantine), per day.

``collect_*`` read landing files (Parquet a column at a time with Arrow, CSV and JSON Lines record by record) and
validate them (pandas, column-wise; in Parquet query logs, the rows that plainly keep the contract are found and
typed with Arrow compute first, see ``schemas.plain_query_logs``); ``bronze_tables`` drops duplicate keys and gives the Arrow tables bronze and
quarantine store. This stage runs on the driver, not in Spark: it is the one place that must name each rejected
record's file and record number. Rows in = rows kept + rows quarantined, for every batch. ``limits`` (a
``LandingLimits``) bound what one landing record may hold; the defaults are the dataclass's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import pandera.pandas as pandera
import pyarrow as pa
import pyarrow.compute as pc

from spark_jobs.landing import (SOURCE_FILE, SOURCE_ROW, LandingFileError, LandingLimits, file_format, iter_records,
                                landing_files, parquet_batches, parquet_records)
from spark_jobs.schemas import (CATALOG, GLOSSARY, JUDGMENTS, QUERY_LOGS, TS_CHECK, Contract, parse_timestamps,
                                plain_query_logs, plain_timestamps, stored_record, ts_in_range, validate_records)
from spark_jobs.ubi import UNKNOWN_LANGUAGE, read_ubi_file, ubi_log_records

@dataclass
class Batch:
    """The outcome of validating a set of landing records: the kept rows typed as bronze stores them (Arrow:
    compact, where a million rows of Python strings took gigabytes), the rejected ones with file, row and reason."""

    kept: pa.Table
    quarantined: pd.DataFrame
    rows_in: int
    files: list[str] = field(default_factory=list)

    @property
    def conserved(self) -> bool:
        return self.rows_in == len(self.kept) + len(self.quarantined)


# ---------------------------------------------------------------------------------------------
# The landing index: which days each landing file holds (cached by path, size and mtime).


INDEX_FORMAT = 2  # bump when the way days are read changes, so cached entries are re-read


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{INDEX_FORMAT}:{stat.st_size}:{stat.st_mtime_ns}"


def _datable(timestamps: pd.Series) -> pd.Series:
    """Timestamps that can place a row in a day: readable and within the contract's range."""
    typed, _ = parse_timestamps(timestamps)
    return typed.where(ts_in_range(typed) & typed.notna())


def _days_of(timestamps: pd.Series) -> list[str]:
    return sorted({d.isoformat() for d in _datable(timestamps).dropna().dt.date.unique()})


def scan_file_days(path: Path, source: str, limits: LandingLimits = LandingLimits()) -> list[str]:
    """The days (ISO dates) a landing file has rows for; ``source`` is 'logs' or 'ubi'."""
    if source == "ubi":
        return _days_of(read_ubi_file(path, limits)["timestamp"])
    if file_format(path) != "parquet":
        return sorted({day for frame in iter_records(path, ["ts"], limits=limits) for day in _days_of(frame["ts"])})
    days = set()
    for batch, numbers in parquet_batches(path, ["ts"], limits=limits):
        plain, typed = plain_timestamps(batch.column("ts"))  # typed timestamps in range at once, the rest as text
        days.update(d.isoformat() for d in pc.unique(typed.filter(plain).cast(pa.date32())).to_pylist())
        rest = ~plain.to_numpy(zero_copy_only=False)
        days.update(_days_of(parquet_records(batch.filter(pa.array(rest)), numbers[rest], ["ts"], path)["ts"]))
    return sorted(days)


def landing_index(landing: Path, index_file: Path, limits: LandingLimits = LandingLimits()) -> dict[str, dict]:
    """``{path: {"source", "fingerprint", "days"}}`` for every log and UBI file in ``landing``.

    Raises ``LandingFileError`` (before anything is written) for a symbolic link out of a landing folder.
    """
    cached = json.loads(index_file.read_text()) if index_file.exists() else {}
    index = {}
    for source, folder in (("logs", landing / "logs"), ("ubi", landing / "ubi")):
        for path in landing_files(folder):
            key, fingerprint = str(path), _fingerprint(path)
            entry = cached.get(key)
            if not entry or entry.get("fingerprint") != fingerprint:
                entry = {"source": source, "fingerprint": fingerprint, "days": scan_file_days(path, source, limits)}
            index[key] = entry
    index_file.parent.mkdir(parents=True, exist_ok=True)
    index_file.write_text(json.dumps(index, indent=1, sort_keys=True))
    return index


def home_day(path: str, entry: dict) -> str:
    """The day that owns a file's rows whose timestamp cannot be read: its first day."""
    if not entry["days"]:
        raise LandingFileError(path, "no row has a readable, plausible timestamp; cannot tell which day it belongs to")
    return entry["days"][0]


# ---------------------------------------------------------------------------------------------
# Collecting and validating landing records.


def _assign_days(raw: pd.DataFrame, ts_column: str, home: str) -> pd.Series:
    """Each row's day (ISO date), or ``home`` where its timestamp cannot place it; each distinct day is
    formatted once (``strftime`` row by row cost more than reading the file)."""
    typed = _datable(raw[ts_column]) if len(raw) else pd.Series(dtype="datetime64[ns, UTC]")
    codes, days = pd.factorize(typed.dt.floor("D"))
    names = np.append(days.strftime("%Y-%m-%d").to_numpy(dtype=object), home)
    return pd.Series(names[codes], index=raw.index, dtype=object)  # code -1 (no day): the last name, home


def collect_query_logs(index: dict[str, dict], days: Iterable[str], ubi_language: str = UNKNOWN_LANGUAGE,
                       limits: LandingLimits = LandingLimits()) -> tuple[Batch, Batch]:
    """Validate all log and UBI rows of ``days``, ``limits.batch_rows`` at a time. Returns (query-log batch,
    UBI-event batch)."""
    days = set(days)
    logs, events, log_files = [], [], []
    for path, entry in sorted(index.items()):
        home = home_day(path, entry)
        if not (days & set(entry["days"]) or home in days):
            continue
        log_files.append(path)
        if entry["source"] == "ubi":
            raw_events = read_ubi_file(Path(path), limits)
            raw_events["_day"] = _assign_days(raw_events, "timestamp", home)
            raw_events = raw_events[raw_events["_day"].isin(days)]
            records, maps_to = ubi_log_records(raw_events, ubi_language)
            raw_events["maps_to"] = maps_to
            events.append(_validate(raw_events, UBI_CONTRACT, UBI_EVENT_TYPES, "timestamp", limits))
            frames = [records]
        elif file_format(Path(path)) == "parquet":
            logs += _parquet_logs(Path(path), home, days, limits)
            continue
        else:
            frames = iter_records(Path(path), QUERY_LOGS.required, QUERY_LOGS.optional, limits)
        logs += [_validated_logs(raw, home, days, limits) for raw in frames]
    return _merged(logs, QUERY_LOG_TYPES, log_files), _merged(events, UBI_EVENT_TYPES, [])


def _validated_logs(raw: pd.DataFrame, home: str, days: set[str], limits: LandingLimits) -> Batch:
    """Raw log records of ``days`` validated (``validate_records``); rows that no timestamp dates are ``home``'s."""
    raw["_day"] = _assign_days(raw, "ts", home)
    return _validate(raw[raw["_day"].isin(days)], QUERY_LOGS, QUERY_LOG_TYPES, "ts", limits)


def _parquet_logs(path: Path, home: str, days: set[str], limits: LandingLimits) -> list[Batch]:
    """A Parquet log file's rows of ``days``, a batch at a time: the rows that plainly keep the contract typed at
    once with Arrow compute (``plain_query_logs``), the others through ``validate_records``; in file order."""
    batches, types = [], arrow_schema({c: QUERY_LOG_TYPES[c] for c in QUERY_LOGS.kinds})
    for batch, numbers in parquet_batches(path, QUERY_LOGS.required, QUERY_LOGS.optional, limits):
        plain, typed = plain_query_logs(batch, types, limits)
        kept = _in_days(typed.append_column("source_file", pa.repeat(pa.scalar(str(path)), len(typed)))
                        .append_column("source_row", pa.array(numbers[plain])), days)
        checked = _validated_logs(parquet_records(batch.filter(pa.array(~plain)), numbers[~plain],
                                                  QUERY_LOGS.kinds, path), home, days, limits)
        both = pa.concat_tables([kept, checked.kept])
        if checked.kept.num_rows and kept.num_rows:
            both = both.take(pc.sort_indices(both["source_row"]))
        batches.append(Batch(both, checked.quarantined, kept.num_rows + checked.rows_in))
    return batches


def _in_days(typed: pa.Table, days: set[str]) -> pa.Table:
    """Typed log rows of ``days``, with their ``date``, in ``QUERY_LOG_TYPES``' columns."""
    day = typed["ts"].cast(pa.date32())
    dated = typed.append_column("date", day).filter(pc.is_in(day, pa.array(sorted(map(date.fromisoformat, days)),
                                                                          pa.date32())))
    return dated.select(list(QUERY_LOG_TYPES))


def _validate(raw: pd.DataFrame, contract: Contract, types: dict[str, str], ts_column: str = "ts",
              limits: LandingLimits = LandingLimits()) -> Batch:
    """One frame of raw records validated: kept rows as an Arrow table of ``types`` (a ``date`` column from
    ``ts_column`` where the frame has days), rejected rows (with their day) for the quarantine."""
    kept, rejected = validate_records(raw, contract, limits)
    if "_day" in raw:
        kept["date"] = kept[ts_column].dt.date if len(kept) else pd.Series(dtype=object)
        rejected["date"] = _day_of_rejected(raw, rejected)
    return Batch(arrow_table(kept.rename(columns={ts_column: "ts"}) if "ts" in types else kept, types), rejected,
                 len(raw))


def _merged(parts: list[Batch], types: dict[str, str], files: list[str]) -> Batch:
    """The batches of a source's frames as one."""
    columns = quarantine_types("date" in types)
    kept = pa.concat_tables([part.kept for part in parts]) if parts else arrow_schema(types).empty_table()
    quarantined = pd.concat([part.quarantined[list(columns)] for part in parts], ignore_index=True) if parts \
        else pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return Batch(kept, quarantined, sum(part.rows_in for part in parts), files)


def _day_of_rejected(raw: pd.DataFrame, rejected: pd.DataFrame) -> pd.Series:
    lookup = raw.set_index([SOURCE_FILE, SOURCE_ROW])["_day"]
    lookup = lookup[~lookup.index.duplicated()]
    keys = list(zip(rejected["source_file"], rejected["source_row"]))
    return pd.Series([date.fromisoformat(lookup.loc[k]) for k in keys], index=rejected.index, dtype=object)


UBI_EVENTS = Contract(
    "ubi_events",
    {"kind": "str", "index": "str", "action_name": "str", "query_id": "str", "client_id": "str",
     "session_id": "str", "user_query": "str", "object_id": "str", "object_id_field": "str",
     "ordinal": "str", "timestamp": "ts", "dwell_time": "float", "document": "str", "maps_to": "str"},
    optional=(),
)
# UBI documents keep every field; an unreadable line or timestamp, or a value breaking its text rule (control
# characters, length), is quarantined.
UBI_CONTRACT = Contract(UBI_EVENTS.name, UBI_EVENTS.kinds, (), pandera.DataFrameSchema(
    {"kind": pandera.Column(str, pandera.Check.isin(["query", "event"])),
     "timestamp": pandera.Column("datetime64[ns, UTC]", TS_CHECK, nullable=False),
     "document": pandera.Column(str)},
    name="ubi_events",
))


def collect_reference(folder: Path, contract: Contract, types: dict[str, str],
                      limits: LandingLimits = LandingLimits()) -> Batch:
    """Validate every file of an unpartitioned source (catalogue, judgments, glossary), a batch at a time."""
    files = landing_files(folder)
    parts = [_validate(raw, contract, types, limits=limits)
             for path in files for raw in iter_records(path, contract.required, contract.optional, limits)]
    return _merged(parts, types, [str(p) for p in files])


def collect_catalog(folder: Path, limits: LandingLimits = LandingLimits()) -> Batch:
    return collect_reference(folder, CATALOG, CATALOG_TYPES, limits)


def collect_judgments(folder: Path, limits: LandingLimits = LandingLimits()) -> Batch:
    return collect_reference(folder, JUDGMENTS, JUDGMENT_TYPES, limits)


def collect_glossary(folder: Path, limits: LandingLimits = LandingLimits()) -> Batch:
    return collect_reference(folder, GLOSSARY, GLOSSARY_TYPES, limits)


# ---------------------------------------------------------------------------------------------
# The bronze shape: duplicates and Arrow tables. A batch is validated on the driver, so it is written from
# there (delta-rs, Arrow): handing it to Spark only to write it back cost more than reading the files.


def split_duplicates(table: pa.Table, keys: list[str], what: str, limits: LandingLimits = LandingLimits()
                     ) -> tuple[pa.Table, pd.DataFrame]:
    """Keep the first row of each key (by source file and row); the rest become quarantine rows."""
    if table.group_by(keys).aggregate([]).num_rows == table.num_rows:  # the usual case, found by Arrow: none
        return table, pd.DataFrame(columns=list(quarantine_types("date" in table.column_names)))
    index = table.select([*keys, "source_file", "source_row"]).to_pandas()
    ordered = index.sort_values(["source_file", "source_row"], kind="stable")
    repeated = np.zeros(len(index), dtype=bool)
    repeated[ordered.index.to_numpy()] = ordered.duplicated(keys, keep="first").to_numpy()
    firsts = ordered[~repeated[ordered.index.to_numpy()]].rename(
        columns={"source_file": "_first_file", "source_row": "_first_row"})
    later = table.filter(pa.array(repeated)).to_pandas().merge(firsts, on=keys, how="left")
    record_columns = [c for c in table.column_names if c not in ("source_file", "source_row", "date")]
    duplicates = pd.DataFrame({
        **({"date": later["date"]} if "date" in table.column_names else {}),
        "source_file": later["source_file"],
        "source_row": later["source_row"],
        "columns": ", ".join(keys),
        "reason": [f"duplicate {what} ({', '.join(map(str, key))}) first seen in {file} row {row}"
                   for key, file, row in zip(later[keys].itertuples(index=False), later["_first_file"],
                                             later["_first_row"])],
        "record": [stored_record(record, limits.max_quarantine_value_chars)
                   for record in later[record_columns].to_dict("records")],
    }, columns=list(quarantine_types("date" in table.column_names)))
    return table.filter(pa.array(~repeated)), duplicates


ARROW_TYPES = {"date": pa.date32(), "string": pa.string(), "timestamp": pa.timestamp("us", tz="UTC"),
               "int": pa.int32(), "long": pa.int64(), "boolean": pa.bool_(), "double": pa.float64()}
QUERY_LOG_TYPES = {
    "date": "date", "request_id": "string", "ts": "timestamp", "session_id": "string", "query": "string",
    "language": "string", "doc_id": "string", "position": "int", "clicked": "boolean", "dwell_ms": "double",
    "source_file": "string", "source_row": "long",
}
QUARANTINE_TYPES = {"date": "date", "source_file": "string", "source_row": "long", "columns": "string",
                    "reason": "string", "record": "string"}
CATALOG_TYPES = {"doc_id": "string", "language": "string", "title": "string", "description": "string",
                 "attributes": "string", "source_file": "string", "source_row": "long"}
JUDGMENT_TYPES = {"query": "string", "doc_id": "string", "language": "string", "label": "int", "split": "string",
                  "ts": "timestamp", "source_file": "string", "source_row": "long"}
GLOSSARY_TYPES = {"term": "string", "language": "string", "concept": "string", "kind": "string", "added": "timestamp",
                  "source_file": "string", "source_row": "long"}
UBI_EVENT_TYPES = {"date": "date", "kind": "string", "index": "string", "action_name": "string",
                   "query_id": "string", "client_id": "string", "session_id": "string", "user_query": "string",
                   "object_id": "string", "object_id_field": "string", "ordinal": "string", "ts": "timestamp",
                   "dwell_time": "double", "maps_to": "string", "document": "string", "source_file": "string",
                   "source_row": "long"}




def arrow_schema(types: dict[str, str]) -> pa.Schema:
    return pa.schema([(column, ARROW_TYPES[kind]) for column, kind in types.items()])


def quarantine_types(dated: bool) -> dict[str, str]:
    """The quarantine's columns: with the day where the source is partitioned by day."""
    return QUARANTINE_TYPES if dated else {k: v for k, v in QUARANTINE_TYPES.items() if k != "date"}


def arrow_table(frame: pd.DataFrame, types: dict[str, str]) -> pa.Table:
    """A validated pandas frame as an Arrow table of ``types`` (bronze's column order and types)."""
    columns = {}
    for column, kind in types.items():
        values = frame[column]
        if kind == "timestamp" and len(values):
            values = values.dt.floor("us")  # what Spark kept: microseconds
        columns[column] = pa.array(values, type=ARROW_TYPES[kind], from_pandas=True)
    return pa.table(columns, schema=arrow_schema(types))


def bronze_tables(batch: Batch, keys: list[str], what: str, limits: LandingLimits = LandingLimits()
                  ) -> tuple[pa.Table, pa.Table]:
    """(bronze rows, quarantine rows) as Arrow tables: validated rows minus duplicates of ``keys``."""
    columns = quarantine_types("date" in batch.kept.column_names)
    kept, rejected = batch.kept, batch.quarantined
    if keys and kept.num_rows:
        kept, duplicates = split_duplicates(kept, keys, what, limits)
        rejected = pd.concat([rejected[list(columns)], duplicates[list(columns)]], ignore_index=True)
    return kept, arrow_table(rejected, columns)

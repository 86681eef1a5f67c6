"""Ingestion: landing files -> validated bronze rows (+ quarantine), per day.

``collect_*`` read landing files (Python, row by row) and validate them (pandas, column-wise); ``split_duplicates`` and
``to_bronze`` are Spark. Rows in = rows kept + rows quarantined, for every batch. ``limits`` (a
``LandingLimits``) bound what one landing record may hold; the defaults are the dataclass's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Iterable

import pandas as pd
import pandera.pandas as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from spark_jobs.landing import (PARSE_ERROR, SOURCE_FILE, SOURCE_ROW, LandingFileError, LandingLimits, landing_files,
                                read_records)
from spark_jobs.schemas import (CATALOG, GLOSSARY, JUDGMENTS, QUERY_LOGS, TS_CHECK, Contract, parse_timestamps,
                                ts_in_range, validate_records)
from spark_jobs.ubi import UNKNOWN_LANGUAGE, read_ubi_file, ubi_log_records

QUARANTINE_COLUMNS = ["source_file", "source_row", "columns", "reason", "record"]


@dataclass
class Batch:
    """The outcome of validating a set of landing records."""

    kept: pd.DataFrame
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
    return _days_of(read_records(path, ["ts"], limits=limits)["ts"])


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
    typed = _datable(raw[ts_column]) if len(raw) else pd.Series(dtype="datetime64[ns, UTC]")
    days = typed.dt.strftime("%Y-%m-%d")
    return days.where(typed.notna(), home)


def collect_query_logs(index: dict[str, dict], days: Iterable[str], ubi_language: str = UNKNOWN_LANGUAGE,
                       limits: LandingLimits = LandingLimits()) -> tuple[Batch, Batch]:
    """Validate all log and UBI rows of ``days``. Returns (query-log batch, UBI-event batch)."""
    days = set(days)
    raw_logs, raw_events, log_files = [], [], []
    for path, entry in sorted(index.items()):
        home = home_day(path, entry)
        if not (days & set(entry["days"]) or home in days):
            continue
        log_files.append(path)
        if entry["source"] == "ubi":
            events = read_ubi_file(Path(path), limits)
            events["_day"] = _assign_days(events, "timestamp", home)
            events = events[events["_day"].isin(days)]
            records, maps_to = ubi_log_records(events, ubi_language)
            events["maps_to"] = maps_to
            raw_events.append(events)
            raw = records
        else:
            raw = read_records(Path(path), QUERY_LOGS.required, QUERY_LOGS.optional, limits)
        raw["_day"] = _assign_days(raw, "ts", home)
        raw_logs.append(raw[raw["_day"].isin(days)])
    logs = _validate(raw_logs, QUERY_LOGS, log_files, limits=limits)
    events = _validate_ubi(raw_events, limits)
    return logs, events


def _validate(raws: list[pd.DataFrame], contract: Contract, files: list[str], ts_column: str = "ts",
              limits: LandingLimits = LandingLimits()) -> Batch:
    raw = pd.concat(raws, ignore_index=True) if raws else pd.DataFrame(
        {c: pd.Series(dtype=object) for c in [*contract.kinds, SOURCE_FILE, SOURCE_ROW, PARSE_ERROR, "_day"]})
    kept, rejected = validate_records(raw, contract, limits)
    day = raw["_day"] if "_day" in raw else None
    if day is not None:
        kept["date"] = kept[ts_column].dt.date if len(kept) else pd.Series(dtype=object)
        rejected["date"] = _day_of_rejected(raw, rejected)
    return Batch(kept, rejected, len(raw), files)


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


def _validate_ubi(raws: list[pd.DataFrame], limits: LandingLimits = LandingLimits()) -> Batch:
    """UBI documents keep every field; an unreadable line or timestamp, or a value breaking its text
    rule (control characters, length), is quarantined."""
    schema = pa.DataFrameSchema(
        {"kind": pa.Column(str, pa.Check.isin(["query", "event"])),
         "timestamp": pa.Column("datetime64[ns, UTC]", TS_CHECK, nullable=False),
         "document": pa.Column(str)},
        name="ubi_events",
    )
    contract = Contract(UBI_EVENTS.name, UBI_EVENTS.kinds, (), schema)
    batch = _validate(raws, contract, [], ts_column="timestamp", limits=limits)
    batch.kept = batch.kept.rename(columns={"timestamp": "ts"})
    return batch


def collect_reference(folder: Path, contract: Contract, limits: LandingLimits = LandingLimits()) -> Batch:
    """Validate every file of an unpartitioned source (catalogue, judgments)."""
    files = landing_files(folder)
    raws = [read_records(path, contract.required, contract.optional, limits) for path in files]
    return _validate(raws, contract, [str(p) for p in files], limits=limits)


def collect_catalog(folder: Path, limits: LandingLimits = LandingLimits()) -> Batch:
    return collect_reference(folder, CATALOG, limits)


def collect_judgments(folder: Path, limits: LandingLimits = LandingLimits()) -> Batch:
    return collect_reference(folder, JUDGMENTS, limits)


def collect_glossary(folder: Path, limits: LandingLimits = LandingLimits()) -> Batch:
    return collect_reference(folder, GLOSSARY, limits)


# ---------------------------------------------------------------------------------------------
# Spark: duplicates and the bronze shape.


def split_duplicates(df: DataFrame, keys: list[str], what: str) -> tuple[DataFrame, DataFrame]:
    """Keep the first row of each key (by source file and row); the rest become quarantine rows."""
    order = Window.partitionBy(*keys).orderBy("source_file", "source_row")
    ranked = df.withColumn("_rank", F.row_number().over(order)).withColumn(
        "_first_file", F.first("source_file").over(order)).withColumn("_first_row", F.first("source_row").over(order))
    kept = ranked.where("_rank = 1").drop("_rank", "_first_file", "_first_row")
    record_columns = [c for c in df.columns if c not in ("source_file", "source_row", "date")]
    duplicates = ranked.where("_rank > 1").select(
        *([F.col("date")] if "date" in df.columns else []),
        "source_file",
        "source_row",
        F.lit(", ".join(keys)).alias("columns"),
        F.concat(F.lit(f"duplicate {what} ("), F.concat_ws(", ", *[F.col(k).cast("string") for k in keys]),
                 F.lit(") first seen in "), F.col("_first_file"), F.lit(" row "), F.col("_first_row").cast("string"))
        .alias("reason"),
        F.to_json(F.struct(*record_columns)).alias("record"),
    )
    return kept, duplicates


def to_spark(spark: SparkSession, frame: pd.DataFrame, columns: list[str], types: dict[str, str]) -> DataFrame:
    """A pandas batch as a Spark DataFrame with an explicit schema (so empty batches work too)."""
    from pyspark.sql.types import _parse_datatype_string

    schema = _parse_datatype_string(", ".join(f"`{c}` {types[c]}" for c in columns))
    frame = frame[columns]
    if not len(frame):
        return spark.createDataFrame([], schema)
    return spark.createDataFrame(frame, schema=schema)


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


def bronze_frames(spark: SparkSession, batch: Batch, types: dict[str, str], keys: list[str], what: str
                  ) -> tuple[DataFrame, DataFrame]:
    """(bronze rows, quarantine rows) as Spark DataFrames: validated rows minus duplicates of ``keys``."""
    kept = to_spark(spark, batch.kept, list(types), types)
    quarantine_types = QUARANTINE_TYPES if "date" in types else {k: v for k, v in QUARANTINE_TYPES.items() if k != "date"}
    rejected = to_spark(spark, batch.quarantined, list(quarantine_types), quarantine_types)
    if not keys:
        return kept, rejected
    kept, duplicates = split_duplicates(kept, keys, what)
    return kept, rejected.unionByName(duplicates)

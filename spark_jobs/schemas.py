"""The input contract and the lakehouse tables' schemas (pandera), and validation of landing records.

``validate_records`` types the raw text records of a landing file and checks them against the
contract; it returns the rows kept and the rows rejected, each rejected row with its reason.
Rows in = rows kept + rows rejected, always. Before typing, every raw value is held to its column's
text rule (``TEXT_KINDS``, limits from ``LandingLimits``): no control characters (free text may hold
tab and line breaks), and no more characters than the column kind's limit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc
from pandera.pandas import Check, Column, DataFrameSchema

from models.metrics import TEST, VALIDATION
from spark_jobs.landing import CONTROL, PARSE_ERROR, SOURCE_FILE, SOURCE_ROW, LandingLimits, escaped

# The text rule of a column, by name: 'query' and 'title' allow no control character, 'text' (free
# text) allows tab, line feed and carriage return; every other column (ids, numbers, timestamps) is
# an 'id'. Each kind's longest value is a LandingLimits field (max_<kind>_chars).
TEXT_KINDS = {"query": "query", "term": "query", "user_query": "query", "title": "title",
              "description": "text", "attributes": "text", "document": "text"}
CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")

EARLIEST_TS = pd.Timestamp("2000-01-01", tz="UTC")
LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"  # BCP 47 style: en, pt-BR, und
LABELS = (0, 1, 2, 3)
SPLITS = ("seed", "test")

TRUE_WORDS = {"true", "t", "1", "yes", "y"}
FALSE_WORDS = {"false", "f", "0", "no", "n"}


@dataclass(frozen=True)
class Contract:
    """One landing source: its columns and their kinds (str, int, bool, float, ts, json)."""

    name: str
    kinds: dict[str, str]
    optional: tuple[str, ...] = ()
    schema: DataFrameSchema | None = None

    @property
    def required(self) -> list[str]:
        return [c for c in self.kinds if c not in self.optional]


def _not_blank(column: str, nullable: bool = False) -> Column:
    return Column(str, Check.str_length(min_value=1), nullable=nullable, coerce=False, title=column)


def ts_in_range(series: pd.Series) -> pd.Series:
    latest = pd.Timestamp(datetime.now(timezone.utc)) + pd.Timedelta(days=1)
    return series.isna() | ((series >= EARLIEST_TS) & (series <= latest))


TS_CHECK = Check(ts_in_range, name="ts_between_2000_and_tomorrow",
                 error="timestamp must lie between 2000-01-01 and tomorrow (epoch seconds given as milliseconds?)")
LANGUAGE = Column(str, Check.str_matches(LANGUAGE_PATTERN), nullable=False)

QUERY_LOG_FIELDS = DataFrameSchema(
    {
        "request_id": _not_blank("request_id"),
        "ts": Column("datetime64[ns, UTC]", TS_CHECK, nullable=False),
        "session_id": _not_blank("session_id"),
        "query": Column(str, Check(lambda s: s.str.strip().str.len() > 0, name="not_blank"), nullable=False),
        "language": LANGUAGE,
        "doc_id": _not_blank("doc_id"),
        "position": Column("Int64", Check.in_range(1, 2**31 - 1), nullable=False),  # bronze stores a 32-bit int
        "clicked": Column("boolean", nullable=False),
        "dwell_ms": Column("float64", Check.ge(0), nullable=True),
    },
    name="query_logs",
)

CATALOG_FIELDS = DataFrameSchema(
    {
        "doc_id": _not_blank("doc_id"),
        "language": LANGUAGE,
        "title": Column(str, Check(lambda s: s.str.strip().str.len() > 0, name="not_blank"), nullable=False),
        "description": Column(str, nullable=True),
        "attributes": Column(str, nullable=False),
    },
    name="catalog",
)

JUDGMENT_FIELDS = DataFrameSchema(
    {
        "query": Column(str, Check(lambda s: s.str.strip().str.len() > 0, name="not_blank"), nullable=False),
        "doc_id": _not_blank("doc_id"),
        "language": LANGUAGE,
        "label": Column("Int64", Check.isin(LABELS), nullable=False),
        "split": Column(str, Check.isin(SPLITS), nullable=False),
        "ts": Column("datetime64[ns, UTC]", TS_CHECK, nullable=True),
    },
    name="judgments",
)

QUERY_LOGS = Contract(
    "query_logs",
    {"request_id": "str", "ts": "ts", "session_id": "str", "query": "str", "language": "str",
     "doc_id": "str", "position": "int", "clicked": "bool", "dwell_ms": "float"},
    optional=("dwell_ms",),
    schema=QUERY_LOG_FIELDS,
)
CATALOG = Contract(
    "catalog",
    {"doc_id": "str", "language": "str", "title": "str", "description": "str", "attributes": "json"},
    optional=("description", "attributes"),
    schema=CATALOG_FIELDS,
)
GLOSSARY_FIELDS = DataFrameSchema(
    {
        "term": Column(str, Check(lambda s: s.str.strip().str.len() > 0, name="not_blank"), nullable=False),
        "language": LANGUAGE,
        "concept": _not_blank("concept"),
        "kind": Column(str, nullable=True),
        "added": Column("datetime64[ns, UTC]", TS_CHECK, nullable=True),
    },
    name="glossary",
)
# The company's taxonomy or synonym table (landing/knowledge/): which concept a term names, since when.
GLOSSARY = Contract(
    "glossary",
    {"term": "str", "language": "str", "concept": "str", "kind": "str", "added": "ts"},
    optional=("kind", "added"),
    schema=GLOSSARY_FIELDS,
)
JUDGMENTS = Contract(
    "judgments",
    {"query": "str", "doc_id": "str", "language": "str", "label": "int", "split": "str", "ts": "ts"},
    optional=("ts",),
    schema=JUDGMENT_FIELDS,
)

# Source and bookkeeping columns every bronze table carries, and the quarantine tables' shape.
SOURCE_COLUMNS = {"source_file": Column(str), "source_row": Column("int64", Check.ge(1))}
QUARANTINE = DataFrameSchema(
    {
        "source_file": Column(str),
        "source_row": Column("int64", Check.ge(1)),
        "columns": Column(str, nullable=True),
        "reason": Column(str, Check.str_length(min_value=1)),
        "record": Column(str),
    },
    name="quarantine",
)


def _is_text(values: pd.Series) -> np.ndarray:
    """Which values are Python strings (raw text); None, NaN and any other type are not."""
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        return values.notna().to_numpy(dtype=bool)
    return np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))


BOOL_WORDS = dict.fromkeys(TRUE_WORDS, True) | dict.fromkeys(FALSE_WORDS, False)


def _lengths(text: pd.Series) -> np.ndarray:
    return np.fromiter(map(len, text), dtype=np.int64, count=len(text))


def _holding(text: pd.Series, pattern: re.Pattern) -> np.ndarray:
    """Which values of ``text`` (all str) hold a character ``pattern`` (a character class) matches:
    one regex scan of all values joined, each match placed in its value by its position."""
    flagged = np.zeros(len(text), dtype=bool)
    joined = "".join(text)
    if pattern.search(joined) is None:
        return flagged
    ends = np.cumsum(_lengths(text))
    found = [m.start() for m in pattern.finditer(joined)]
    flagged[np.searchsorted(ends, found, side="right")] = True
    return flagged


def _nones(index: pd.Index) -> pd.Series:
    return pd.Series(np.full(len(index), None, dtype=object), index=index)


def _value_errors(bad: pd.Series, shown: pd.Series, problem: str) -> pd.Series:
    """``value '<shown, cut to 60>' <problem>`` where ``bad``, else None; built for the bad rows only."""
    errors = _nones(bad.index)
    if bad.any():
        errors[bad] = [f"value {str(v)[:60]!r} {problem}" for v in shown[bad]]
    return errors


def _parse_json(value: str | None) -> tuple[str | None, str | None]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return "{}", None
    try:
        obj = json.loads(value)
    except ValueError as exc:
        return None, f"value {value[:60]!r} is not JSON ({exc.msg})"
    if not isinstance(obj, dict):
        return None, f"value {value[:60]!r} is a JSON {type(obj).__name__}, not an object"
    return json.dumps(obj, sort_keys=True, ensure_ascii=False), None


def _coerce_column(values: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    """Type one text column; returns (typed values, error text or None per row)."""
    present = values.notna()
    text = values.where(present, None)
    if kind == "str":
        typed = text.astype(object)
        strings = typed[_is_text(typed)]
        typed[strings.index] = _stripped(strings)
        typed = typed.infer_objects().astype(object)  # values that are all numbers (no text) read as floats
        return typed.where(typed != "", None), pd.Series(None, index=values.index, dtype=object)
    if kind in ("int", "float"):
        numbers = pd.to_numeric(text, errors="coerce")
        bad = present & ~np.isfinite(numbers.astype("float64"))  # unreadable, or "inf" / "1e400": no count or duration
        if kind == "int":
            bad |= present & numbers.notna() & (numbers != np.floor(numbers.fillna(0)))
        errors = _value_errors(bad, text, "is not an integer" if kind == "int" else "is not a number")
        typed = numbers.where(~bad)
        return (typed.astype("Int64") if kind == "int" else typed.astype("float64")), errors
    if kind == "bool":
        typed = text.map(BOOL_WORDS).astype(object)
        other = text[present & typed.isna()]  # not a word as it stands: stripped and lowered, then looked up
        typed[other.index] = [BOOL_WORDS.get(v.strip().lower()) if isinstance(v, str) else None for v in other]
        bad = present & typed.isna()
        errors = _value_errors(bad, text, "is not a boolean (true/false/1/0/yes/no)")
        return typed.astype("boolean"), errors
    if kind == "ts":
        return parse_timestamps(text)
    if kind == "json":  # free-form JSON objects (catalogue attributes): parsed one by one
        parsed = [_parse_json(v) for v in text]
        return (pd.Series([p[0] for p in parsed], index=values.index, dtype=object),
                pd.Series([p[1] for p in parsed], index=values.index, dtype=object))
    raise ValueError(f"unknown column kind {kind!r}")


# ISO timestamps of these two shapes are read by pandas in one pass per shape (apart: mixed, pandas
# gives a naive value the offset of an aware one before it), and kept where their UTC instant lies in
# _FAST_ISO_BOUNDS; any other value (another shape, unreadable, or within a day or two of the years
# 1678-2261 that ``_parse_iso`` checks in local time) goes through ``_parse_iso``, one at a time.
ISO_NAIVE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?)?"
ISO_AWARE = ISO_NAIVE + r"(?:Z|[+-][0-9]{2}:?[0-9]{2})"
_FAST_ISO_BOUNDS = (pd.Timestamp("1678-01-03", tz="UTC"), pd.Timestamp("2261-12-29", tz="UTC"))


def _arrow_text(text: pd.Series) -> pyarrow.Array | None:
    """``text`` (str or None) as an Arrow string array for RE2, Arrow's regex engine (C++, a column at a time);
    None where a value is no str or cannot be UTF-8 (an unpaired surrogate): the caller then uses Python's."""
    try:
        return pyarrow.array(text.to_numpy(dtype=object), type=pyarrow.string(), from_pandas=True)
    except (pyarrow.ArrowException, UnicodeEncodeError):
        return None


def _fullmatch(text: pd.Series, pattern: str) -> pd.Series:
    """Which values of ``text`` (str or None) ``pattern`` matches whole; the pattern must mean the same to
    Python's ``re`` and to RE2 (ASCII classes such as [0-9], no look-around)."""
    arrow = _arrow_text(text)
    if arrow is None:
        return text.str.fullmatch(pattern).fillna(False).astype(bool)
    found = pc.fill_null(pc.match_substring_regex(arrow, f"^(?:{pattern})$"), False)
    return pd.Series(found.to_numpy(zero_copy_only=False), index=text.index, dtype=bool)


PLAIN_ENDS = "[A-Za-z0-9](?s:.*[A-Za-z0-9])?"  # begins and ends with an ASCII letter or digit: nothing to strip


def _stripped(text: pd.Series) -> pd.Series:
    """Python's ``str.strip`` of each str value of ``text`` (None stays None), called only for values that do
    not begin and end with an ASCII letter or digit: 8 million calls cost more than reading a million rows."""
    out = text.astype(object)
    maybe = text.notna().to_numpy() & ~_fullmatch(text, PLAIN_ENDS).to_numpy()
    out[maybe] = [v.strip() for v in text[maybe]]
    return out


def parse_timestamps(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """ISO-8601 (naive means UTC) or epoch milliseconds, to UTC timestamps; errors per row."""
    present = text.notna()
    strings = text if pd.api.types.infer_dtype(text, skipna=True) in ("string", "empty") else text.astype("string")
    as_str = _stripped(strings.astype(object).where(present, None))
    numeric = _fullmatch(as_str, r"-?[0-9]+(\.[0-9]+)?")
    typed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    out_of_range = np.zeros(len(text), dtype=bool)
    if numeric.any():
        millis = pd.to_numeric(as_str[numeric], errors="coerce").astype("float64")  # NaN: digits pandas cannot read
        too_far = millis.abs() >= 9.2e15  # beyond what nanosecond timestamps can hold (years 1677-2262)
        typed[numeric] = pd.to_datetime(millis.where(~too_far), unit="ms", utc=True, errors="coerce")
        out_of_range[numeric.to_numpy()] = too_far.to_numpy()
    iso = present & ~numeric
    if iso.any():
        for shape in (ISO_NAIVE, ISO_AWARE):
            group = iso & _fullmatch(as_str, shape)
            if group.any():
                fast = pd.to_datetime(as_str[group].astype(object), utc=True, errors="coerce", format="ISO8601")
                typed[group] = fast.where(fast.between(*_FAST_ISO_BOUNDS))
        slow = iso & typed.isna()
        if slow.any():
            parsed = [_parse_iso(v) for v in as_str[slow]]
            typed[slow] = pd.Series([p if p is not OUT_OF_RANGE else pd.NaT for p in parsed],
                                    index=as_str[slow].index, dtype="datetime64[ns, UTC]")
            out_of_range[slow.to_numpy()] = [p is OUT_OF_RANGE for p in parsed]
    bad = present & typed.isna()
    far = bad & out_of_range
    errors = _value_errors(bad & ~far, as_str, "is not an ISO-8601 timestamp or epoch milliseconds")
    return typed, errors.mask(far, _value_errors(far, as_str, "is outside the years 1677-2262"))


OUT_OF_RANGE = object()


def _parse_iso(value: str):
    if not value[:1].isdigit():  # pandas also reads "now", "today" and "Jan 5 2024": not ISO-8601, and "now" moves
        return pd.NaT
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        # an ISO date pandas cannot hold in nanoseconds (year 2999, say) is a range problem, not a format one
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
            return OUT_OF_RANGE
        except ValueError:
            return pd.NaT
    if ts is pd.NaT:
        return pd.NaT
    if not 1678 <= ts.year <= 2261:
        return OUT_OF_RANGE
    try:
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    except (ValueError, OverflowError):
        return OUT_OF_RANGE


def _text_error(value: str, limit: int, pattern: re.Pattern) -> str | None:
    if len(value) > limit:
        return f"{len(value)} characters, more than the limit {limit}"
    found = pattern.search(value)
    if found is None:
        return None
    code = ord(found.group())
    what = "unpaired surrogate" if 0xD800 <= code <= 0xDFFF else "control character"
    return f"{what} U+{code:04X} at character {found.start() + 1}"


def text_errors(values: pd.Series, column: str, limits: LandingLimits) -> pd.Series:
    """Per raw value: why it breaks its column's text rule (``TEXT_KINDS``), or None."""
    kind = TEXT_KINDS.get(column, "id")
    limit, pattern = limits.max_chars(kind), CONTROL_IN_TEXT if kind == "text" else CONTROL
    errors = _nones(values.index)
    text = values[_is_text(values)]
    suspect = (_lengths(text) > limit) | _holding(text, pattern)
    errors[text.index[suspect]] = [_text_error(v, limit, pattern) for v in text[suspect]]
    return errors


def stored_record(values: dict, limit: int) -> str:
    """A raw record as JSON for the quarantine: each value cut to ``limit`` characters (the cut ones
    and their full lengths under ``_truncated``), control characters escaped."""
    cut = {c: len(v) for c, v in values.items() if isinstance(v, str) and len(v) > limit}
    shown = {c: v[:limit] if c in cut else v for c, v in values.items()}
    return escaped(json.dumps({**shown, "_truncated": cut} if cut else shown, ensure_ascii=False, default=str))


def validate_records(raw: pd.DataFrame, contract: Contract, limits: LandingLimits = LandingLimits()
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw records into (kept, rejected).

    kept: the contract's columns, typed, plus ``source_file``/``source_row``.
    rejected: ``source_file, source_row, columns, reason, record`` (the raw record as JSON, each value
    cut to ``limits.max_quarantine_value_chars``).
    """
    raw = raw.reset_index(drop=True)
    reasons: dict[int, list[str]] = {}  # by row position, only for rows with a problem
    failed_columns: dict[int, set[str]] = {}

    def fail(i: int, column: str, reason: str) -> None:
        reasons.setdefault(i, []).append(f"column '{column}': {reason}")
        failed_columns.setdefault(i, set()).add(column)

    columns = {}  # one DataFrame built at the end: inserting column by column copies the blocks each time
    for column, kind in contract.kinds.items():
        values = raw[column] if column in raw else pd.Series(None, index=raw.index, dtype=object)
        bad_text = text_errors(values, column, limits)
        columns[column], errors = _coerce_column(values.where(bad_text.isna(), None), kind)
        problems = bad_text.where(bad_text.notna(), errors)
        for i in np.flatnonzero(problems.notna().to_numpy()):
            fail(int(i), column, problems.iat[i])
    typed = pd.DataFrame(columns, index=raw.index)

    try:
        contract.schema.validate(typed, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        row_cases = cases[cases["index"].notna()]
        table_cases = cases[cases["index"].isna()]
        if len(table_cases):  # coercion above fixes every dtype, so this is a bug, not bad data
            raise RuntimeError(f"{contract.name}: schema-level failures after coercion:\n{table_cases}")
        order = {column: i for i, column in enumerate(contract.kinds)}  # a row's reasons in column order, however
        row_cases = row_cases.sort_values("column", key=lambda c: c.map(order), kind="stable")  # pandera lists them
        for _, case in row_cases.iterrows():
            i, column, check = int(case["index"]), str(case["column"]), str(case["check"])
            if column in failed_columns.get(i, ()):
                continue  # already reported as unparseable
            fail(i, column, "value is missing" if check == "not_nullable"
                 else f"value {str(case['failure_case'])[:60]!r} fails {check}")

    if PARSE_ERROR in raw:  # an unparseable record has no columns to complain about
        unparsed = _is_text(raw[PARSE_ERROR])
        for i, message in zip(np.flatnonzero(unparsed), raw[PARSE_ERROR][unparsed]):
            reasons[int(i)], failed_columns[int(i)] = [message], set()
    rejected_at = np.array(sorted(reasons), dtype=np.int64)
    rejected_mask = np.zeros(len(raw), dtype=bool)
    rejected_mask[rejected_at] = True
    kept = typed[~rejected_mask].copy()
    for column, kind in contract.kinds.items():
        if kind == "int":
            kept[column] = kept[column].astype("int64")
        elif kind == "bool":
            kept[column] = kept[column].astype(bool)
    kept["source_file"] = raw.loc[~rejected_mask, SOURCE_FILE].astype(str)
    kept["source_row"] = raw.loc[~rejected_mask, SOURCE_ROW].astype("int64")

    raw_columns = [c for c in contract.kinds if c in raw]
    rejected_rows = raw[rejected_mask]
    rejected = pd.DataFrame(
        {
            "source_file": rejected_rows[SOURCE_FILE].astype(str),
            "source_row": rejected_rows[SOURCE_ROW].astype("int64"),
            "columns": [", ".join(sorted(failed_columns[i])) or None for i in rejected_at],
            "reason": ["; ".join(reasons[i]) for i in rejected_at],
            "record": [stored_record({c: rejected_rows.at[i, c] for c in raw_columns}, limits.max_quarantine_value_chars)
                       for i in rejected_rows.index],
        }
    )
    return kept.reset_index(drop=True), rejected.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Lakehouse tables: what a written table must look like (asset checks validate these).


def _table(name: str, *parts: DataFrameSchema | dict[str, Column]) -> DataFrameSchema:
    columns: dict[str, Column] = {}
    for part in parts:
        columns.update(part.columns if isinstance(part, DataFrameSchema) else part)
    return DataFrameSchema(columns, name=name, coerce=True, strict=True)


DATE = {"date": Column("datetime64[ns]", nullable=False)}
TABLE_SCHEMAS: dict[str, DataFrameSchema] = {
    "bronze/query_logs": _table("bronze/query_logs", DATE, QUERY_LOG_FIELDS, SOURCE_COLUMNS),
    "quarantine/query_logs": _table("quarantine/query_logs", DATE, QUARANTINE),
    "bronze/ubi_events": _table("bronze/ubi_events", DATE, {
        "kind": Column(str, Check.isin(["query", "event"])),
        **{c: Column(str, nullable=True) for c in ("index", "action_name", "query_id", "client_id", "session_id",
                                                  "user_query", "object_id", "object_id_field", "ordinal", "maps_to")},
        "ts": Column("datetime64[ns, UTC]", TS_CHECK),
        "dwell_time": Column("float64", nullable=True),
        "document": Column(str),
    }, SOURCE_COLUMNS),
    "quarantine/ubi_events": _table("quarantine/ubi_events", DATE, QUARANTINE),
    "bronze/catalog": _table("bronze/catalog", CATALOG_FIELDS, SOURCE_COLUMNS),
    "quarantine/catalog": _table("quarantine/catalog", QUARANTINE),
    "bronze/judgments": _table("bronze/judgments", JUDGMENT_FIELDS, SOURCE_COLUMNS),
    "bronze/glossary": _table("bronze/glossary", GLOSSARY_FIELDS, SOURCE_COLUMNS),
    "quarantine/glossary": _table("quarantine/glossary", QUARANTINE),
    "quarantine/judgments": _table("quarantine/judgments", QUARANTINE),
    "silver/impressions": _table("silver/impressions", DATE, {
        "query": Column(str, Check.str_length(min_value=1)),
        "language": LANGUAGE,
        "doc_id": Column(str),
        "impressions": Column("int64", Check.ge(1)),
        "clicks": Column("int64", Check.ge(0)),
        "ctr": Column("float64", Check.in_range(0, 1)),
        "mean_position": Column("float64", Check.ge(1)),
        "mean_dwell_ms": Column("float64", Check.ge(0), nullable=True),
    }),
}


ARROW_TEXT = pd.StringDtype("pyarrow")
ARROW_STRINGS = {pyarrow.string(): ARROW_TEXT, pyarrow.large_string(): ARROW_TEXT, pyarrow.string_view(): ARROW_TEXT}


def check_table(name: str, data: pyarrow.Table | pd.DataFrame) -> pd.DataFrame:
    """Failure cases of a lakehouse table (Arrow, or pandas) against its schema (empty when it conforms).

    Text columns are checked as Arrow-backed pandas strings, so every check runs column at a time in Arrow
    compute: pandera tests a Python ``str`` column value by value, 6 s of a million-row bronze check."""
    table = data if isinstance(data, pyarrow.Table) else pyarrow.Table.from_pandas(data, preserve_index=False)
    frame = table.to_pandas(types_mapper=ARROW_STRINGS.get, date_as_object=False)
    try:
        _arrow_text_schema(name).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return exc.failure_cases
    return pd.DataFrame(columns=["schema_context", "column", "check", "failure_case", "index"])


@cache
def _arrow_text_schema(name: str) -> DataFrameSchema:
    """``TABLE_SCHEMAS[name]`` with each ``str`` column typed as Arrow-backed strings."""
    schema = TABLE_SCHEMAS[name]
    text = {column: {"dtype": ARROW_TEXT} for column, spec in schema.columns.items() if str(spec.dtype) == "str"}
    return schema.update_columns(text) if text else schema


TABLE_SCHEMAS.update({
    "gold/training_sets": _table("gold/training_sets", {
        "training_set": Column(str), "query": Column(str, Check.str_length(min_value=1)), "language": LANGUAGE,
        "doc_id": Column(str), "doc_text": Column(str), "label": Column("int32", Check.isin(LABELS)),
        "source": Column(str, Check.isin(["seed", "iteration"])), "iteration": Column("int32", Check.ge(0)),
        "weight": Column("float64", Check.ge(0)),
    }),
    "gold/evaluations": _table("gold/evaluations", {
        "model_version": Column(str), "aliases": Column(str), "test_set": Column(str, Check.isin(["static", "evolving"])),
        "part": Column(str, Check.isin([VALIDATION, TEST])),
        "slice_type": Column(str, Check.isin(["overall", "family", "language", "query"])), "slice": Column(str),
        "metric": Column(str, Check.isin(["ndcg@1", "ndcg@4", "accuracy"])),
        "value": Column("float64", Check.in_range(0, 100), nullable=True),
        "n_queries": Column("int64", Check.ge(0)), "n_pairs": Column("int64", Check.ge(0)),
        "dagster_run_id": Column(str), "judgments_version": Column("int64", nullable=True),
        "test_pairs_digest": Column(str), "as_of": Column("datetime64[ns]", nullable=True),
        "evaluated_at": Column("datetime64[ns, UTC]"),
    }),
    "gold/test_scores": _table("gold/test_scores", {
        "model_version": Column(str), "query": Column(str, Check.str_length(min_value=1)), "language": LANGUAGE,
        "doc_id": Column(str), "doc_digest": Column(str, Check.str_length(min_value=1)),
        **{f"p{label}": Column("float64", Check.in_range(0, 1)) for label in LABELS},
        "scored_at": Column("datetime64[ns, UTC]"),
    }),
    "gold/promotions": _table("gold/promotions", {
        "decided_at": Column("datetime64[ns, UTC]"), "dagster_run_id": Column(str),
        "previous_champion": Column(str, nullable=True), "champion": Column(str), "promoted": Column(bool),
        "challenger": Column(str, nullable=True), "reason": Column(str),
        **{c: Column("float64", nullable=True) for c in ("challenger_evolving_ndcg1", "champion_evolving_ndcg1",
                                                         "challenger_static_ndcg1", "champion_static_ndcg1")},
        "static_margin": Column("float64"),
    }),
})

TABLE_SCHEMAS.update({
    "gold/drift_reports": _table("gold/drift_reports", {
        **{c: Column("datetime64[ns]") for c in ("window_start", "window_end", "reference_start", "reference_end")},
        "signal": Column(str), "statistic": Column(str), "value": Column("float64", nullable=True),
        "threshold": Column("float64", nullable=True), "drifted": Column(bool), "detail": Column(str),
        "overall_drifted": Column(bool), "reason": Column(str),
    }),
    "gold/mined_samples": DataFrameSchema({
        "iteration": Column("int32", Check.ge(1)), "window_start": Column("datetime64[ns]"),
        "window_end": Column("datetime64[ns]"), "model_version": Column(str),
        "query": Column(str, Check.str_length(min_value=1)), "language": LANGUAGE, "doc_id": Column(str),
        "n_agents": Column("int32", Check.ge(1)), "reasons": Column(str, Check.str_length(min_value=1)),
        "priority": Column("float64"), "selection_rank": Column("int32", Check.ge(1)),
        **{f"{a}_score": Column("float64", nullable=True) for a in
           ("user_feedback", "click_model", "disagreement", "uncertainty")},
    }, name="gold/mined_samples", coerce=True, strict=False),  # plus each agent's flag and reason, and agents[]
})

_ANNOTATED_PAIR = {
    "iteration": Column("int64", Check.ge(1)), "pair_id": Column(str, Check.str_length(min_value=1)),
    "query": Column(str, Check.str_length(min_value=1)), "language": LANGUAGE, "language_family": Column(str),
    "doc_id": Column(str),
}
TABLE_SCHEMAS.update({
    "gold/agent_votes": DataFrameSchema({
        **_ANNOTATED_PAIR, "agent": Column(str), "path": Column("int64", Check.ge(0)),
        "label": Column("Int64", Check.isin(LABELS), nullable=True),
        "status": Column(str, Check.isin(["ok", "abstain", "failed"])), "rationale": Column(str, nullable=True),
        "backend": Column(str), "model": Column(str), "latency_ms": Column("float64", Check.ge(0)),
        "prompt_tokens": Column("int64", Check.ge(0)), "completion_tokens": Column("int64", Check.ge(0)),
    }, name="gold/agent_votes", coerce=True, strict=False),
    "gold/agent_labels": DataFrameSchema({
        **_ANNOTATED_PAIR, "agent": Column(str), "label": Column("Int64", Check.isin(LABELS), nullable=True),
        "status": Column(str, Check.isin(["decided", "abstained", "failed"])),
        "paths_used": Column("int64", Check.ge(0)),
    }, name="gold/agent_labels", coerce=True, strict=False),
    "gold/consensus_labels": DataFrameSchema({
        **_ANNOTATED_PAIR, "label": Column("int64", Check.isin(LABELS)), "n_voters": Column("int64", Check.ge(1)),
        "rationale": Column(str, nullable=True),
    }, name="gold/consensus_labels", coerce=True, strict=False),
})

TABLE_SCHEMAS["gold/iterations"] = DataFrameSchema({
    "iteration": Column("int64", Check.ge(1)), "strategy": Column(str), "window_start": Column("datetime64[ns]"),
    "window_end": Column("datetime64[ns]"), "drifted": Column(bool, nullable=True),
    "mined": Column("int64", Check.ge(0)), "accepted": Column("int64", Check.ge(0)),
    "acceptance_rate": Column("float64", Check.in_range(0, 1)), "model_before": Column(str),
    "model_after": Column(str), "promoted": Column(bool),
    **{f"{s}_{m}": Column("float64", Check.in_range(0, 100), nullable=True)
       for s in ("evolving", "static") for m in ("ndcg1", "ndcg4", "accuracy")},
    "stage_seconds": Column(str),
}, name="gold/iterations", coerce=True, strict=False)

TABLE_SCHEMAS["gold/evolution_report"] = DataFrameSchema({
    "seed": Column("int64"), "arm": Column(str, Check.isin(["seed", "self-training", "serm"])),
    "iteration": Column("int64", Check.ge(0)), "model_version": Column(str),
    "test_set": Column(str, Check.isin(["static", "evolving"])), "part": Column(str, Check.isin([TEST])),
    "slice_type": Column(str), "slice": Column(str),
    "metric": Column(str, Check.isin(["ndcg@1", "ndcg@4", "accuracy"])),
    "value": Column("float64", Check.in_range(0, 100), nullable=True), "test_pairs_digest": Column(str),
}, name="gold/evolution_report", coerce=True, strict=False)


# ---------------------------------------------------------------------------------------------
# Query-log rows that plainly keep the contract, found column at a time with Arrow compute.
#
# A Parquet batch of query logs is mostly rows that break no rule, in typed columns. Those rows are kept as they
# are, typed as bronze stores them; every other row goes through ``validate_records``, the one place that says
# why a row is rejected. The test is conservative: each rule below is one of ``QUERY_LOG_FIELDS``' or the text
# rules, narrowed (a value with something to strip, an integer dwell time or a NaN is left to
# ``validate_records``), so a row it passes is one ``validate_records`` keeps with the same values
# (tests/test_landing_validation.py compares the two).

PLAIN_CONTROL = "[\\x00-\\x1f\\x7f-\\x9f]"  # CONTROL within valid UTF-8: Arrow strings hold no surrogates
# begins and ends with a letter or digit of any script (RE2 classes; no such character is whitespace to Python's
# ``strip``): nothing to strip, not blank
PLAIN_TEXT_ENDS = "[\\p{L}\\p{N}](?s:.*[\\p{L}\\p{N}])?"


def _nowhere(n: int) -> pyarrow.Array:
    return pyarrow.array(np.zeros(n, dtype=bool))


def _plain_text(column: pyarrow.Array, limit: int, pattern: str = PLAIN_TEXT_ENDS) -> pyarrow.Array:
    """Strings that match ``pattern`` whole (so: nothing to strip, not blank), within ``limit`` characters and
    free of control characters."""
    if pyarrow.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if not (pyarrow.types.is_string(column.type) or pyarrow.types.is_large_string(column.type)):
        return _nowhere(len(column))
    ok = pc.and_(pc.match_substring_regex(column, f"^(?:{pattern})$"),
                 pc.less_equal(pc.utf8_length(column), limit))
    return pc.fill_null(pc.and_not(ok, pc.match_substring_regex(column, PLAIN_CONTROL)), False)


NANOS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def plain_timestamps(column: pyarrow.Array) -> tuple[pyarrow.Array, pyarrow.Array]:
    """(which values are plain, the values as UTC timestamps in microseconds): epoch milliseconds as integers,
    or Arrow timestamps (naive ones are UTC), between 2000-01-01 and tomorrow."""
    if pyarrow.types.is_integer(column.type):
        unit, values = "ms", column.cast(pyarrow.int64(), safe=False)  # a wrapped uint64 falls out of range
    elif pyarrow.types.is_timestamp(column.type):
        unit = column.type.unit  # the stored values are UTC, whatever zone the type names
        values = column.cast(pyarrow.timestamp(unit)).cast(pyarrow.int64())
    else:
        return _nowhere(len(column)), pyarrow.nulls(len(column), pyarrow.timestamp("us", tz="UTC"))
    per = NANOS_PER_UNIT[unit]
    latest = (pd.Timestamp(datetime.now(timezone.utc)) + pd.Timedelta(days=1)).value // per
    ok = pc.fill_null(pc.and_(pc.greater_equal(values, -(-EARLIEST_TS.value // per)), pc.less_equal(values, latest)), False)
    kept = pc.if_else(ok, values, 0)  # in range: no overflow below
    micros = pc.divide(kept, 1_000) if unit == "ns" else pc.multiply(kept, per // 1_000)  # ns: positive, floored
    return ok, micros.cast(pyarrow.timestamp("us", tz="UTC"))


def _plain_integers(column: pyarrow.Array, low: int, high: int) -> pyarrow.Array:
    if not pyarrow.types.is_integer(column.type):
        return _nowhere(len(column))
    return pc.fill_null(pc.and_(pc.greater_equal(column, low), pc.less_equal(column, high)), False)


LOG_TEXT_COLUMNS = ("request_id", "session_id", "query", "language", "doc_id")


def plain_query_logs(batch: pyarrow.RecordBatch, types: pyarrow.Schema, limits: LandingLimits = LandingLimits()
                     ) -> tuple[np.ndarray, pyarrow.Table]:
    """(which rows of a query-log batch plainly keep the contract, those rows as a table of ``types``: the
    contract's columns typed as bronze stores them)."""
    n = batch.num_rows
    nowhere = _nowhere(n)

    def column(name: str) -> pyarrow.Array:
        return batch.column(name) if name in batch.schema.names else pyarrow.nulls(n)

    checks = [_plain_text(column(c), limits.max_chars(TEXT_KINDS.get(c, "id")),
                          LANGUAGE_PATTERN[1:-1] if c == "language" else PLAIN_TEXT_ENDS) for c in LOG_TEXT_COLUMNS]
    plain_ts, ts = plain_timestamps(column("ts"))
    clicked, dwell = column("clicked"), column("dwell_ms")
    checks += [plain_ts, _plain_integers(column("position"), 1, 2**31 - 1),
               pc.is_valid(clicked) if pyarrow.types.is_boolean(clicked.type) else nowhere]
    if pyarrow.types.is_floating(dwell.type) or pyarrow.types.is_null(dwell.type):
        checks.append(pc.fill_null(pc.and_(pc.is_finite(dwell.cast(pyarrow.float64())),
                                           pc.greater_equal(dwell.cast(pyarrow.float64()), 0.0)), True))  # null: kept
    else:
        checks.append(nowhere)
    mask = np.logical_and.reduce([check.to_numpy(zero_copy_only=False) for check in checks])
    if not mask.any():  # (a column of another type may not even cast)
        return mask, types.empty_table()
    keep = pyarrow.array(mask)
    values = {c: ts if c == "ts" else column(c) for c in types.names}
    return mask, pyarrow.table([values[c].filter(keep).cast(types.field(c).type) for c in types.names], schema=types)

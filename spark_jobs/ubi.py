"""OpenSearch User Behavior Insights (UBI) exports as a query-log source.

A UBI export holds ``ubi_queries`` and ``ubi_events`` documents, in OpenSearch bulk format (an
``{"index": ...}`` line before each document) or as plain NDJSON. Impressions and clicks map to
query-log rows (one per query id and object id); every document, mapped or not, is kept in
``bronze/ubi_events`` so that nothing is lost and the other actions stay countable.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from spark_jobs.landing import (
    PARSE_ERROR, SOURCE_FILE, SOURCE_ROW, BoundedLines, LandingFileError, LandingLimits, LineTooLong, _open_text, _text,
)

IMPRESSION_ACTIONS = frozenset({"impression"})
CLICK_ACTIONS = frozenset({"click", "item_click", "product_click"})
UNKNOWN_LANGUAGE = "und"  # BCP 47 'undetermined': UBI records carry no language

EVENT_COLUMNS = ["kind", "index", "action_name", "query_id", "client_id", "session_id", "user_query",
                 "object_id", "object_id_field", "ordinal", "timestamp", "dwell_time", "document"]


def _get(obj, *path):
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _event_row(doc: dict, index: str | None) -> dict:
    attributes = doc.get("event_attributes") if isinstance(doc.get("event_attributes"), dict) else {}
    is_event = "action_name" in doc or index == "ubi_events"
    user_query = doc.get("user_query")
    if user_query is None and doc.get("message_type") == "QUERY":
        user_query = doc.get("message")
    return {
        "kind": "event" if is_event else "query",
        "index": index,
        "action_name": _text(doc.get("action_name")),
        "query_id": _text(doc.get("query_id")),
        "client_id": _text(doc.get("client_id")),
        "session_id": _text(doc.get("session_id") or attributes.get("session_id")),
        "user_query": _text(user_query),
        "object_id": _text(_get(attributes, "object", "object_id")),
        "object_id_field": _text(_get(attributes, "object", "object_id_field")),
        "ordinal": _text(_get(attributes, "position", "ordinal")),
        "timestamp": _text(doc.get("timestamp")),
        "dwell_time": _text(attributes.get("dwell_time")),
        "document": json.dumps(doc, sort_keys=True, ensure_ascii=False),
    }


def read_ubi_file(path: Path, limits: LandingLimits = LandingLimits()) -> pd.DataFrame:
    """One row per UBI document (bulk action lines are consumed, not counted as records); a line over
    ``limits.hard_max_chars`` or nested too deeply is a record that could not be parsed."""
    rows: list[dict] = []
    pending_index: str | None = None
    saw_document = False
    try:
        with _open_text(path) as handle:
            for number, line in BoundedLines(handle, limits.hard_max_chars).numbered():
                if isinstance(line, LineTooLong):
                    rows.append({SOURCE_ROW: number, PARSE_ERROR: str(line)})
                    pending_index = None
                    continue
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                    if not isinstance(doc, dict):
                        raise ValueError(f"a JSON {type(doc).__name__}, not an object")
                except RecursionError:
                    rows.append({SOURCE_ROW: number, PARSE_ERROR: f"line {number} is JSON nested too deeply"})
                    pending_index = None
                    continue
                except ValueError as exc:
                    rows.append({SOURCE_ROW: number, PARSE_ERROR: f"line {number} is not a JSON object: {exc}"})
                    pending_index = None
                    continue
                action = next((k for k in ("index", "create") if k in doc and len(doc) == 1), None)
                if action:  # bulk header: names the index of the next document
                    pending_index = _get(doc, action, "_index")
                    continue
                saw_document = True
                rows.append({**_event_row(doc, pending_index), SOURCE_ROW: number, PARSE_ERROR: None})
                pending_index = None
    except UnicodeDecodeError as exc:
        raise LandingFileError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if rows and not saw_document:
        raise LandingFileError(path, "no line is a UBI document; expected OpenSearch bulk or NDJSON export")
    frame = pd.DataFrame.from_records(rows, columns=EVENT_COLUMNS + [SOURCE_ROW, PARSE_ERROR]) if rows else \
        pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS + [SOURCE_ROW, PARSE_ERROR]})
    frame[SOURCE_FILE] = str(path)
    frame[SOURCE_ROW] = frame[SOURCE_ROW].astype("int64")
    return frame


def _first_present(*values):
    return next((v for v in values if isinstance(v, str)), None)


def ubi_log_records(events: pd.DataFrame, language: str = UNKNOWN_LANGUAGE) -> tuple[pd.DataFrame, pd.Series]:
    """Map impressions and clicks to raw query-log records (text columns of the contract).

    One record per (query_id, object_id): position from the impression's 0-based ordinal,
    ``clicked`` if any click event names the pair, dwell from the click's ``dwell_time`` (seconds).
    Returns the records and, per event row, what it mapped to (``query_logs`` or None).
    """
    ok = events[PARSE_ERROR].isna() if PARSE_ERROR in events else pd.Series(True, index=events.index)
    action = events["action_name"].fillna("")
    shown = ok & action.isin(IMPRESSION_ACTIONS) & events["query_id"].notna() & events["object_id"].notna()
    clicked = ok & action.isin(CLICK_ACTIONS) & events["query_id"].notna() & events["object_id"].notna()
    maps_to = pd.Series(["query_logs" if m else None for m in (shown | clicked)], index=events.index, dtype=object)

    queries = events[ok & (events["kind"] == "query") & events["query_id"].notna()]
    query_text = queries.drop_duplicates("query_id").set_index("query_id")["user_query"]
    query_client = queries.drop_duplicates("query_id").set_index("query_id")["client_id"]

    pairs = events[shown | clicked].copy()
    pairs["is_click"] = action[shown | clicked].isin(CLICK_ACTIONS)
    pairs["position_rank"] = pd.to_numeric(pairs["ordinal"], errors="coerce")
    records = []
    for (query_id, object_id), group in pairs.groupby(["query_id", "object_id"], sort=False):
        impressions = group[~group["is_click"]]
        first = (impressions if len(impressions) else group).iloc[0]
        clicks = group[group["is_click"]]
        dwell = pd.to_numeric(clicks["dwell_time"], errors="coerce").dropna()
        ordinal = _first_present(first["ordinal"])
        try:
            position = str(int(float(ordinal)) + 1) if ordinal is not None else None
        except ValueError:
            position = ordinal  # keep the bad value: validation quarantines it with its reason
        records.append({
            "request_id": query_id,
            "ts": first["timestamp"],
            "session_id": _first_present(first["session_id"], first["client_id"], query_client.get(query_id)),
            "query": _first_present(first["user_query"], query_text.get(query_id)),
            "language": language,
            "doc_id": object_id,
            "position": position,
            "clicked": "true" if len(clicks) else "false",
            "dwell_ms": str(float(dwell.iloc[0]) * 1000.0) if len(dwell) else None,
            SOURCE_FILE: first[SOURCE_FILE],
            SOURCE_ROW: int(first[SOURCE_ROW]),
            PARSE_ERROR: None,
        })
    columns = ["request_id", "ts", "session_id", "query", "language", "doc_id", "position", "clicked",
               "dwell_ms", SOURCE_FILE, SOURCE_ROW, PARSE_ERROR]
    frame = pd.DataFrame.from_records(records, columns=columns)
    frame[SOURCE_ROW] = frame[SOURCE_ROW].astype("int64")
    return frame, maps_to

"""UBI exports: the real OpenSearch export in ../shared/data/ubi maps what maps and loses nothing."""

import json
from collections import Counter
from pathlib import Path

import pytest

from spark_jobs.schemas import QUERY_LOGS, validate_records
from spark_jobs.ubi import read_ubi_file, ubi_log_records

EXPORT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ubi" / "esci_ubi_sample.ndjson"
pytestmark = pytest.mark.skipif(not EXPORT.exists(), reason=f"the shared UBI export is not at {EXPORT}")


def _documents():
    docs = []
    for line in EXPORT.read_text().splitlines():
        obj = json.loads(line)
        if not (len(obj) == 1 and "index" in obj):
            docs.append(obj)
    return docs


def test_every_document_of_the_real_export_is_read():
    events = read_ubi_file(EXPORT)
    docs = _documents()
    assert len(events) == len(docs) == 473 + 3448
    assert Counter(events["index"]) == {"ubi_queries": 473, "ubi_events": 3448}
    assert Counter(events["action_name"].dropna()) == Counter(d["action_name"] for d in docs if "action_name" in d)
    # the raw document is kept whole, so unmapped fields stay queryable
    assert json.loads(events["document"].iat[0]) == docs[0]


def test_impressions_and_clicks_become_query_log_rows():
    events = read_ubi_file(EXPORT)
    records, maps_to = ubi_log_records(events)
    impressions = events[events["action_name"] == "impression"]
    pairs = set(zip(impressions["query_id"], impressions["object_id"]))
    assert pairs <= set(zip(records["request_id"], records["doc_id"]))
    assert (maps_to == "query_logs").sum() >= len(impressions)
    kept, rejected = validate_records(records, QUERY_LOGS)
    assert len(kept) + len(rejected) == len(records)
    assert len(kept) > 1800
    assert kept["clicked"].sum() > 100  # clicks land on their impressions
    assert set(kept["language"]) == {"und"}
    # ordinal 0 is the first position
    first = impressions[impressions["ordinal"] == "0"].iloc[0]
    row = kept[(kept["request_id"] == first["query_id"]) & (kept["doc_id"] == first["object_id"])]
    assert row["position"].iat[0] == 1
    # what cannot map (a click with no query text anywhere) is quarantined with its reason, not dropped
    assert rejected["reason"].str.contains("column 'query'").all()


def test_plain_ndjson_without_bulk_headers(tmp_path):
    path = tmp_path / "ubi.ndjson"
    path.write_text("\n".join(json.dumps(d) for d in [
        {"query_id": "q1", "user_query": "red shoes", "timestamp": "2026-01-01T00:00:00Z", "client_id": "c"},
        {"action_name": "impression", "query_id": "q1", "client_id": "c", "timestamp": "2026-01-01T00:00:01Z",
         "event_attributes": {"object": {"object_id": "D1"}, "position": {"ordinal": 2}}},
        {"action_name": "click", "query_id": "q1", "client_id": "c", "timestamp": "2026-01-01T00:00:05Z",
         "event_attributes": {"object": {"object_id": "D1"}, "position": {"ordinal": 2}, "dwell_time": 4.5}},
        {"action_name": "add_to_cart", "query_id": "q1", "timestamp": "2026-01-01T00:00:09Z"},
    ]) + "\nnot json\n")
    events = read_ubi_file(path)
    assert events["kind"].tolist()[:4] == ["query", "event", "event", "event"]
    assert events["_parse_error"].notna().tolist() == [False, False, False, False, True]
    records, maps_to = ubi_log_records(events)
    assert maps_to.tolist()[:4] == [None, "query_logs", "query_logs", None]
    row = records.iloc[0]
    assert (row["query"], row["position"], row["clicked"], row["dwell_ms"], row["session_id"]) == \
        ("red shoes", "3", "true", "4500.0", "c")

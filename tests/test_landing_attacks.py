"""Landing files are untrusted: each test is an attack on the landing folder and what stops it."""

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dagster import materialize

from assets.ingest import ingest_catalog, ingest_query_logs, landing_assets, silver_impressions
from serm_dagster.resources import LakehouseResource, SparkResource
from serm_dagster.storage import DeltaStore
from spark_jobs.ingest import bronze_tables, collect_catalog, collect_query_logs, landing_index
from spark_jobs.landing import LandingFileError, LandingLimits, landing_files, read_records
from spark_jobs.schemas import CATALOG, QUERY_LOGS, validate_records
from spark_jobs.ubi import read_ubi_file
from tests.conftest import LOG_HEADER, write_logs_csv

SECRET_HEADER = "TOP_SECRET_COLUMN,password_hash,api_key"
DAY = "2026-01-01"


def log_row(request_id: str, query: str = "red shoes", doc_id: str = "D1") -> str:
    return f"{request_id},{DAY}T10:00:00Z,s1,{query},en,{doc_id},1,true,3000"


def log_record(request_id: str, **values) -> dict:
    return {"request_id": request_id, "ts": f"{DAY}T10:00:00Z", "session_id": "s1", "query": "red shoes",
            "language": "en", "doc_id": "D1", "position": 1, "clicked": True, "dwell_ms": 3000, **values}


def validate(path: Path, limits: LandingLimits = LandingLimits()):
    raw = read_records(path, QUERY_LOGS.required, QUERY_LOGS.optional, limits)
    kept, rejected = validate_records(raw, QUERY_LOGS, limits)
    assert len(kept) + len(rejected) == len(raw)  # rows conserved
    return kept, rejected


def reason_of(rejected, row: int) -> tuple[str, str]:
    match = rejected[rejected["source_row"] == row]
    assert len(match) == 1, f"record {row} not quarantined"
    return match["columns"].iat[0], match["reason"].iat[0]


@pytest.fixture()
def outside_secret(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "secrets.csv"
    secret.parent.mkdir()
    secret.write_text(SECRET_HEADER + "\nroot,$6$hash,sk-123\n")
    return secret


# ---------------------------------------------------------------------------------------------
# Symbolic links out of the landing folder


def test_a_file_link_to_an_outside_csv_is_refused_without_showing_its_header(tmp_path, outside_secret):
    logs = tmp_path / "landing" / "logs"
    write_logs_csv(logs / "good.csv", [log_row("r1")])
    link = logs / "2026-01-01.csv"
    os.symlink(outside_secret, link)
    with pytest.raises(LandingFileError) as caught:
        landing_files(logs)
    message = str(caught.value)
    assert str(link) in message and "points outside the landing folder" in message
    assert "TOP_SECRET" not in message and "password_hash" not in message and str(outside_secret) not in message
    with pytest.raises(LandingFileError, match="points outside"):
        landing_index(tmp_path / "landing", tmp_path / "index.json")
    assert not (tmp_path / "index.json").exists()  # refused before anything is written


def test_a_folder_link_out_of_the_landing_folder_is_refused(tmp_path, outside_secret):
    catalog = tmp_path / "landing" / "catalog"
    catalog.mkdir(parents=True)
    link = catalog / "more"
    os.symlink(outside_secret.parent, link, target_is_directory=True)
    with pytest.raises(LandingFileError) as caught:
        collect_catalog(catalog)
    assert str(link) in str(caught.value) and "points outside" in str(caught.value)
    assert "TOP_SECRET" not in str(caught.value)


def test_links_inside_the_landing_folder_stay_allowed(tmp_path):
    logs = tmp_path / "logs"
    real = write_logs_csv(logs / "real" / "day.csv", [log_row("r1")])
    os.symlink(real, logs / "alias.csv")
    os.symlink(logs / "real", logs / "again", target_is_directory=True)  # not followed: read at its own place
    assert landing_files(logs) == [logs / "alias.csv", real]


def test_an_outside_link_run_fails_and_writes_nothing(home, outside_secret):
    write_logs_csv(home / "landing" / "logs" / f"{DAY}.csv", [log_row("r1")])
    link = home / "landing" / "logs" / "stolen.csv"
    os.symlink(outside_secret, link)
    result = materialize([*landing_assets, ingest_query_logs, silver_impressions], raise_on_error=False,
                         resources={"spark": SparkResource(), "lakehouse": LakehouseResource(home=str(home))},
                         selection=[ingest_query_logs], partition_key=DAY)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.step_failure_data.error.cause or failure.step_failure_data.error.message)
    assert str(link) in message and "points outside the landing folder" in message and "TOP_SECRET" not in message
    assert not DeltaStore(home / "lakehouse").exists("bronze/query_logs")


def test_a_missing_column_error_does_not_echo_a_huge_or_hostile_header(tmp_path):
    path = tmp_path / "logs.csv"
    names = ["\x1b[2J\x1b[31mowned" + "x" * 500] + [f"c{i}" for i in range(200)]
    path.write_text(",".join(names) + "\n" + ",".join("v" for _ in names) + "\n")
    with pytest.raises(LandingFileError) as caught:
        read_records(path, QUERY_LOGS.required, QUERY_LOGS.optional)
    message = str(caught.value)
    assert "missing required column(s)" in message and "and 191 more" in message
    assert "\x1b" not in message and "\\u001b[2J" in message and "x" * 100 not in message and len(message) < 1000


# ---------------------------------------------------------------------------------------------
# Over-long fields


def test_one_200000_character_csv_field_quarantines_only_its_row(tmp_path):
    path = write_logs_csv(tmp_path / "logs.csv", [log_row("r1"), log_row("r2", query="q" * 200_000), log_row("r3")])
    kept, rejected = validate(path)
    assert kept["request_id"].tolist() == ["r1", "r3"]
    columns, reason = reason_of(rejected, 2)
    assert columns == "query" and "column 'query': 200000 characters, more than the limit 1000" in reason
    record = json.loads(rejected["record"].iat[0])
    assert record["_truncated"] == {"query": 200_000} and len(record["query"]) == 1000
    assert len(rejected["record"].iat[0]) < 2000  # the quarantine row is not huge itself


def test_a_csv_line_over_the_hard_limit_is_not_read_and_the_rest_is_kept(tmp_path):
    path = write_logs_csv(tmp_path / "logs.csv", [log_row("r1"), log_row("r2", query="q" * 5_000), log_row("r3")])
    kept, rejected = validate(path, LandingLimits(hard_max_chars=4_000))
    assert kept["request_id"].tolist() == ["r1", "r3"]
    assert reason_of(rejected, 2) == (None, "line 3 is longer than the hard limit of 4000 characters; it was not read")


def test_a_quoted_csv_field_across_lines_over_the_hard_limit_does_not_fail_the_file(tmp_path):
    path = tmp_path / "logs.csv"  # every line short, the field long: csv.field_size_limit stops it
    path.write_text(LOG_HEADER + "\n" + log_row("r1") + "\n" + log_row("r2", query='"' + "q\n" * 3_000 + '"') + "\n")
    kept, rejected = validate(path, LandingLimits(hard_max_chars=4_000))
    assert kept["request_id"].tolist() == ["r1"]
    assert "field larger than field limit (4000)" in reason_of(rejected, 2)[1]


def test_jsonl_over_long_value_and_over_long_line(tmp_path):
    path = tmp_path / "logs.jsonl"
    lines = [log_record("r1"), log_record("r2", doc_id="D" * 200_000), log_record("r3", query="q" * 2_000_000),
             log_record("r4")]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    kept, rejected = validate(path)
    assert kept["request_id"].tolist() == ["r1", "r4"]
    assert reason_of(rejected, 2) == ("doc_id", "column 'doc_id': 200000 characters, more than the limit 512")
    columns, reason = reason_of(rejected, 3)
    assert columns is None and "line 3 is longer than the hard limit of 1000000 characters" in reason


def test_a_ubi_export_with_an_over_long_or_deeply_nested_line_keeps_its_other_documents(tmp_path):
    path = tmp_path / "ubi.ndjson"
    query = {"query_id": "q1", "user_query": "red shoes", "timestamp": "2026-01-01T00:00:00Z", "client_id": "c"}
    path.write_text("\n".join([json.dumps(query), '{"query_id": "' + "x" * 2_000 + '"}', '{"a": ' + "[" * 100_000,
                               json.dumps({**query, "query_id": "q2"})]) + "\n")
    events = read_ubi_file(path, LandingLimits(hard_max_chars=1_000))
    errors = events["_parse_error"].tolist()
    assert events["_source_row"].tolist() == [1, 2, 3, 4] and errors[0] is None and errors[3] is None
    assert "line 2 is longer than the hard limit of 1000" in errors[1]
    events = read_ubi_file(path)  # under the default limit, the 100,000-deep line is read, then refused
    assert "nested too deeply" in events["_parse_error"].iat[2] and events["_parse_error"].iat[3] is None


def test_parquet_over_long_value_quarantines_its_row(tmp_path):
    path = tmp_path / "logs.parquet"
    rows = [log_record("r1"), log_record("r2", session_id="s" * 200_000), log_record("r3")]
    pq.write_table(pa.Table.from_pylist(rows), path)
    kept, rejected = validate(path)
    assert kept["request_id"].tolist() == ["r1", "r3"]
    assert reason_of(rejected, 2)[0] == "session_id"


# ---------------------------------------------------------------------------------------------
# Control characters and over-long ids and queries


@pytest.mark.parametrize("column,value,words", [
    ("query", "red\x00shoes", "control character U+0000 at character 4"),
    ("query", "\x1b[31mred shoes", "control character U+001B at character 1"),
    ("query", "red shoes\x85", "control character U+0085"),  # NEL: str.strip() would have removed it silently
    ("query", "red\tshoes", "control character U+0009"),
    ("query", "q" * 10_000, "10000 characters, more than the limit 1000"),
    ("doc_id", "D1\x1f", "control character U+001F"),
    ("doc_id", "\x9b31mD1", "control character U+009B"),  # C1 CSI
    ("doc_id", "D" * 10_000, "10000 characters, more than the limit 512"),
    ("request_id", "r\x7f", "control character U+007F"),
    ("session_id", "s\ud800", "unpaired surrogate U+D800"),
    ("language", "en\x00", "control character U+0000"),
])
def test_control_characters_and_long_ids_are_quarantined_with_the_column(tmp_path, column, value, words):
    path = tmp_path / "logs.jsonl"
    path.write_text(json.dumps(log_record("r1")) + "\n" + json.dumps({**log_record("r2"), column: value}) + "\n")
    kept, rejected = validate(path)
    assert kept["request_id"].tolist() == ["r1"]
    columns, reason = reason_of(rejected, 2)
    assert columns == column and reason.startswith(f"column '{column}': ") and words in reason
    stored = rejected["record"].iat[0]
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in stored)
    if len(value) <= 1000:
        assert json.loads(stored)[column] == value  # stored escaped, never rewritten


def test_csv_with_an_ansi_escape_in_the_query(tmp_path):
    path = write_logs_csv(tmp_path / "logs.csv", [log_row("r1"), log_row("r2", query="\x1b[31mred"), log_row("r3")])
    kept, rejected = validate(path)
    assert kept["request_id"].tolist() == ["r1", "r3"]
    assert reason_of(rejected, 2) == ("query", "column 'query': control character U+001B at character 1")


def test_free_text_may_hold_tabs_and_line_breaks_but_not_escapes(tmp_path):
    path = tmp_path / "catalog.jsonl"
    docs = [{"doc_id": "D1", "language": "en", "title": "Red shoes", "description": "line one\n\tline two\r\n"},
            {"doc_id": "D2", "language": "en", "title": "Red\tshoes"},
            {"doc_id": "D3", "language": "en", "title": "Shoes", "description": "\x1b]0;pwned\x07"}]
    path.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    kept, rejected = validate_records(read_records(path, CATALOG.required, CATALOG.optional), CATALOG)
    assert kept["doc_id"].tolist() == ["D1"]
    assert reason_of(rejected, 2) == ("title", "column 'title': control character U+0009 at character 4")
    assert reason_of(rejected, 3)[0] == "description"


# ---------------------------------------------------------------------------------------------
# The limits are configuration


def test_the_limits_decide_the_outcome(tmp_path):
    path = write_logs_csv(tmp_path / "logs.csv", [log_row("r1", query="q" * 1_500), log_row("r2", doc_id="D" * 600)])
    kept, _ = validate(path)
    assert kept.empty
    kept, rejected = validate(path, LandingLimits(max_query_chars=2_000, max_id_chars=1_000))
    assert kept["request_id"].tolist() == ["r1", "r2"] and rejected.empty
    kept, rejected = validate(path, LandingLimits(max_query_chars=2_000, max_quarantine_value_chars=10))
    assert kept["request_id"].tolist() == ["r1"]
    assert json.loads(rejected["record"].iat[0])["doc_id"] == "D" * 10
    with pytest.raises(ValueError, match="max_id_chars"):
        LandingLimits(max_id_chars=0)


def test_index_and_collection_take_the_limits(tmp_path):
    landing = tmp_path / "landing"
    write_logs_csv(landing / "logs" / f"{DAY}.csv", [log_row("r1"), log_row("r2", query="q" * 300)])
    limits = LandingLimits(max_query_chars=100)
    logs, _ = collect_query_logs(landing_index(landing, tmp_path / "index.json", limits), [DAY], limits=limits)
    assert logs.kept.column("request_id").to_pylist() == ["r1"] and logs.conserved
    assert "more than the limit 100" in logs.quarantined["reason"].iat[0]


def test_lakehouse_resource_limits_reach_the_ingest_asset(home, spark):
    (home / "landing" / "catalog" / "catalog.csv").write_text(
        "doc_id,language,title,description,attributes\nD1,en,Red shoes,,\nD2,en,Shoes,,\n")
    lakehouse = LakehouseResource(home=str(home), max_title_chars=5)
    result = materialize([*landing_assets, ingest_catalog], selection=[ingest_catalog],
                         resources={"spark": SparkResource(), "lakehouse": lakehouse})
    assert result.success
    store = DeltaStore(home / "lakehouse")
    assert store.read_arrow("bronze/catalog").to_pandas()["doc_id"].tolist() == ["D2"]
    quarantine = store.read_arrow("quarantine/catalog").to_pandas()
    assert quarantine["reason"].tolist() == ["column 'title': 9 characters, more than the limit 5"]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_a_file_read_in_batches_gives_what_one_read_gives(tmp_path, fmt):
    """A large file is read, validated and turned into Arrow a batch at a time: the outcome is the same, row
    numbers run on across batches, and a duplicate is found in a later batch than its first row."""
    records = [log_record(f"r{i}", doc_id=f"D{i}") for i in range(7)]
    records[3]["position"] = 0                             # invalid, in the second batch of two
    records[6] = log_record("r1", doc_id="D1")             # a duplicate of row 2, in the fourth batch
    path = tmp_path / "landing" / "logs" / f"{DAY}.{fmt}"
    path.parent.mkdir(parents=True)
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    elif fmt == "csv":
        write_logs_csv(path, [",".join(str(r[c]).lower() if c == "clicked" else str(r[c]) for c in r) for r in records])
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    index = landing_index(tmp_path / "landing", tmp_path / "index.json")
    whole, _ = collect_query_logs(index, [DAY])
    small, _ = collect_query_logs(index, [DAY], limits=LandingLimits(batch_rows=2))
    assert small.kept.equals(whole.kept) and small.quarantined.equals(whole.quarantined)
    assert small.kept.num_rows == 6 and small.conserved
    assert small.quarantined["source_row"].tolist() == [4] and "position" in small.quarantined["reason"].iat[0]
    kept, rejected = bronze_tables(small, ["request_id", "doc_id"], "impression")
    assert sorted(kept.column("source_row").to_pylist()) == [1, 2, 3, 5, 6]
    duplicate = rejected.filter(pc.equal(rejected["source_row"], 7)).to_pylist()
    assert duplicate[0]["reason"] == f"duplicate impression (r1, D1) first seen in {path} row 2"
    assert json.loads(duplicate[0]["record"])["request_id"] == "r1" and rejected.num_rows == 2


def test_a_json_lines_file_missing_a_required_column_fails_after_its_last_batch(tmp_path):
    path = tmp_path / "logs.jsonl"
    path.write_text("".join(json.dumps({k: v for k, v in log_record(f"r{i}").items() if k != "doc_id"}) + "\n"
                            for i in range(5)))
    with pytest.raises(LandingFileError, match="missing required column.*doc_id"):
        read_records(path, QUERY_LOGS.required, QUERY_LOGS.optional, LandingLimits(batch_rows=2))

"""The input contract: every kind of malformed row is quarantined with file, row and reason."""

import datetime as dt
import gzip
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spark_jobs.ingest import (QUERY_LOG_TYPES, _merged, _parquet_logs, _validated_logs, arrow_schema, bronze_tables,
                              scan_file_days)
from spark_jobs.landing import LandingFileError, LandingLimits, _text, read_records
from spark_jobs.schemas import CATALOG, JUDGMENTS, QUERY_LOGS, check_table, plain_query_logs, validate_records
from tests.conftest import write_logs_csv

GOOD = "r1,2026-01-01T10:00:00Z,s1,red shoes,en,D1,1,true,3000"

# (row, column expected in the reason, words expected in the reason)
BAD_ROWS = [
    ("r2,notatime,s1,red shoes,en,D1,1,true,", "ts", "not an ISO-8601 timestamp"),
    ("r3,1767261600,s1,red shoes,en,D1,1,true,", "ts", "between 2000-01-01 and tomorrow"),  # epoch seconds
    ("r4,2100-01-01T00:00:00Z,s1,red shoes,en,D1,1,true,", "ts", "between 2000-01-01 and tomorrow"),
    ("r4b,2999-01-01T00:00:00Z,s1,red shoes,en,D1,1,true,", "ts", "outside the years 1677-2262"),
    ("r5,2026-01-01T10:00:00Z,s1,   ,en,D1,1,true,", "query", "missing"),
    ("r6,2026-01-01T10:00:00Z,s1,red shoes,EN,D1,1,true,", "language", "str_matches"),
    ("r7,2026-01-01T10:00:00Z,s1,red shoes,en,,1,true,", "doc_id", "missing"),
    ("r8,2026-01-01T10:00:00Z,s1,red shoes,en,D1,0,true,", "position", "in_range(1, 2147483647)"),
    ("r9,2026-01-01T10:00:00Z,s1,red shoes,en,D1,two,true,", "position", "not an integer"),
    ("r10,2026-01-01T10:00:00Z,s1,red shoes,en,D1,1.5,true,", "position", "not an integer"),
    ("r10b,2026-01-01T10:00:00Z,s1,red shoes,en,D1,inf,true,", "position", "not an integer"),
    ("r10c,2026-01-01T10:00:00Z,s1,red shoes,en,D1,1e400,true,", "position", "not an integer"),
    ("r10f,2026-01-01T10:00:00Z,s1,red shoes,en,D1,3000000000,true,", "position", "in_range(1, 2147483647)"),
    ("r10d,now,s1,red shoes,en,D1,1,true,", "ts", "not an ISO-8601 timestamp"),
    ("r10e,Jan 5 2026,s1,red shoes,en,D1,1,true,", "ts", "not an ISO-8601 timestamp"),
    ("r11,2026-01-01T10:00:00Z,s1,red shoes,en,D1,1,maybe,", "clicked", "not a boolean"),
    ("r12,2026-01-01T10:00:00Z,s1,red shoes,en,D1,1,true,-4", "dwell_ms", "greater_than_or_equal_to(0)"),
    ("r13,2026-01-01T10:00:00Z,s1,red shoes,en,D1,1,true,fast", "dwell_ms", "not a number"),
    ("r13b,2026-01-01T10:00:00Z,s1,red shoes,en,D1,1,true,inf", "dwell_ms", "not a number"),
    (",2026-01-01T10:00:00Z,s1,red shoes,en,D1,1,true,", "request_id", "missing"),
    ("r15,2026-01-01T10:00:00Z,,red shoes,en,D1,1,true,", "session_id", "missing"),
    ("r16,2026-01-01T10:00:00Z,s1,red shoes,en,D1,1", None, "has 7 fields, the header has 9"),
    ("r17,2026-01-01T10:00:00Z,s1,red shoes,en,D1,1,true,,extra", None, "has 10 fields"),
]


def test_each_malformed_csv_row_is_quarantined_with_its_reason(tmp_path):
    path = write_logs_csv(tmp_path / "logs.csv", [GOOD] + [row for row, _, _ in BAD_ROWS])
    kept, rejected = validate_records(read_records(path, QUERY_LOGS.required, QUERY_LOGS.optional), QUERY_LOGS)
    assert kept["request_id"].tolist() == ["r1"]
    assert len(kept) + len(rejected) == 1 + len(BAD_ROWS)
    assert set(rejected["source_file"]) == {str(path)}
    for number, (_, column, words) in enumerate(BAD_ROWS, start=2):
        row = rejected[rejected["source_row"] == number]
        assert len(row) == 1, f"row {number} not quarantined"
        reason = row["reason"].iat[0]
        assert words in reason, (number, reason)
        if column:
            assert column in row["columns"].iat[0].split(", ") and f"column '{column}'" in reason
        assert row["record"].iat[0].startswith("{")


def test_one_row_with_many_problems_gets_them_all(tmp_path):
    path = write_logs_csv(tmp_path / "logs.csv", ["r1,2026-01-01T10:00:00Z,s1, ,EN,D1,0,maybe,-5"])
    _, rejected = validate_records(read_records(path, QUERY_LOGS.required, QUERY_LOGS.optional), QUERY_LOGS)
    assert rejected["columns"].iat[0] == "clicked, dwell_ms, language, position, query"


def test_typed_values_epoch_millis_and_iso_agree(tmp_path):
    path = write_logs_csv(tmp_path / "logs.csv", [
        "a,2026-01-01T10:00:00Z,s,q,en,D1,1,true,3000",
        "b,1767261600000,s,q,pt-BR,D1,2,0,",
        "c,2026-01-01 10:00:00,s,q,und,D1,3,no,",
    ])
    kept, rejected = validate_records(read_records(path, QUERY_LOGS.required, QUERY_LOGS.optional), QUERY_LOGS)
    assert rejected.empty
    assert kept["ts"].nunique() == 1
    assert kept["clicked"].tolist() == [True, False, False]
    assert kept["position"].dtype == "int64" and kept["dwell_ms"].isna().tolist() == [False, True, True]


def test_jsonl_bad_lines_and_non_objects(tmp_path):
    path = tmp_path / "logs.jsonl"
    good = {"request_id": "r1", "ts": 1767261600000, "session_id": "s", "query": "q", "language": "en",
            "doc_id": "D", "position": 1, "clicked": False, "dwell_ms": None}
    path.write_text("\n".join([json.dumps(good), "{not json", "[1, 2]", json.dumps({**good, "position": "x"})]) + "\n")
    kept, rejected = validate_records(read_records(path, QUERY_LOGS.required, QUERY_LOGS.optional), QUERY_LOGS)
    assert len(kept) == 1
    reasons = dict(zip(rejected["source_row"], rejected["reason"]))
    assert "line 2 is not a JSON object" in reasons[2]
    assert "line 3 is not a JSON object" in reasons[3] and "list" in reasons[3]
    assert "column 'position'" in reasons[4]


def test_parquet_with_wrong_types_and_nulls(tmp_path):
    path = tmp_path / "logs.parquet"
    pq.write_table(pa.table({
        "request_id": ["r1", "r2", None], "ts": [1767261600000, 1767261600000, 1767261600000],
        "session_id": ["s", "s", "s"], "query": ["q", "q", "q"], "language": ["en", "en", "en"],
        "doc_id": ["D1", "D2", "D3"], "position": ["1", "second", "3"], "clicked": [True, False, None],
        "dwell_ms": [1.0, None, None],
    }), path)
    kept, rejected = validate_records(read_records(path, QUERY_LOGS.required, QUERY_LOGS.optional), QUERY_LOGS)
    assert kept["request_id"].tolist() == ["r1"]
    assert rejected["source_row"].tolist() == [2, 3]
    assert "position" in rejected["columns"].iat[0]
    assert rejected["columns"].iat[1] == "clicked, request_id"


def test_parquet_columns_read_as_text_exactly_as_value_by_value(tmp_path):
    """Parquet is read a column at a time; each value must be the text the value-by-value rule gives it."""
    utc = dt.timezone.utc
    table = pa.table({
        "s": ["a", None, "", " b "], "i": pa.array([1, None, -3, 2**40], pa.int64()),
        "i8": pa.array([1, 2, None, -1], pa.int8()),
        "b": [True, None, False, True], "f": [2.0, float("nan"), 1e20, float("inf")],
        "ts": [dt.datetime(2026, 1, 1, tzinfo=utc), None, dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=utc), None],
        "l": [[1, 2], None, [], [3]], "m": [{"k": "v"}, None, {"a": 1}, {}],
        "dic": pa.array(["x", None, "y", "x"]).dictionary_encode(),
    })
    pq.write_table(table, tmp_path / "t.parquet")
    read = read_records(tmp_path / "t.parquet", ["s"], [c for c in table.column_names if c != "s"] + ["absent"])
    expected = [{c: _text(v) for c, v in row.items()} for row in table.to_pylist()]
    assert read[table.column_names].to_dict("records") == expected
    assert read["absent"].isna().all() and read["_source_row"].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("name,content,problem", [
    ("logs.csv", "request_id,ts,query\nr1,2026-01-01,q\n", "missing required column(s) session_id, language"),
    ("logs.txt", "whatever", "unsupported file type"),
    ("logs.parquet", "this is not parquet", "cannot be read as parquet"),
    ("logs.csv", b"\xff\xfe\x00garbage", "not UTF-8 text"),
    ("logs.jsonl", "a\nb\n", "is this really JSON Lines"),
])
def test_unreadable_files_fail_with_the_file_and_the_problem(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(LandingFileError) as caught:
        read_records(path, QUERY_LOGS.required, QUERY_LOGS.optional)
    assert str(path) in str(caught.value) and problem in str(caught.value)


def test_gzipped_jsonl_is_read(tmp_path):
    path = tmp_path / "logs.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(json.dumps({"request_id": "r", "ts": "2026-01-01T00:00:00Z", "session_id": "s", "query": "q",
                                 "language": "en", "doc_id": "D", "position": 1, "clicked": True, "dwell_ms": 5}))
    kept, rejected = validate_records(read_records(path, QUERY_LOGS.required, QUERY_LOGS.optional), QUERY_LOGS)
    assert len(kept) == 1 and rejected.empty


def test_catalog_attributes_must_be_a_json_object(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text('doc_id,language,title,description,attributes\n'
                    'D1,en,Red shoes,nice,"{""colour"": ""red""}"\n'
                    'D2,en,Blue shoes,,\n'
                    'D3,en,Bad,,"[1, 2]"\n'
                    'D4,en,Bad,,{oops\n'
                    'D5,en,,,\n')
    kept, rejected = validate_records(read_records(path, CATALOG.required, CATALOG.optional), CATALOG)
    assert kept["attributes"].tolist() == ['{"colour": "red"}', "{}"]
    reasons = dict(zip(rejected["source_row"], rejected["reason"]))
    assert "not an object" in reasons[3] and "not JSON" in reasons[4] and "column 'title'" in reasons[5]


def test_judgment_labels_and_splits(tmp_path):
    path = tmp_path / "judgments.csv"
    path.write_text("query,doc_id,language,label,split,ts\n"
                    "q,D1,en,3,seed,\n"
                    "q,D2,en,4,seed,\n"
                    "q,D3,en,2,train,\n"
                    "q,D4,en,1,test,2026-01-05\n")
    kept, rejected = validate_records(read_records(path, JUDGMENTS.required, JUDGMENTS.optional), JUDGMENTS)
    assert kept["doc_id"].tolist() == ["D1", "D4"]
    assert pd.isna(kept["ts"].iat[0]) and kept["ts"].iat[1].isoformat().startswith("2026-01-05")
    assert "isin" in dict(zip(rejected["source_row"], rejected["reason"]))[2]
    assert "column 'split'" in dict(zip(rejected["source_row"], rejected["reason"]))[3]


def _typed_log_rows(ts: list) -> dict:
    """Query-log columns in Parquet types, one row per case: rows that keep the contract in every way it can be
    kept, and rows that break it in every way a typed column can."""
    n = len(ts)
    base = {"request_id": [f"r{i}" for i in range(n)], "ts": ts, "session_id": ["s1"] * n,
            "query": ["red shoes"] * n, "language": ["en"] * n, "doc_id": [f"D{i}" for i in range(n)],
            "position": [1] * n, "clicked": [True] * n, "dwell_ms": [None] * n}
    cases = [  # (column, value)
        ("query", "  padded  "), ("query", "   "), ("query", "café"), ("query", "tab\there"), ("query", "x" * 1001),
        ("query", "bell\x07"), ("query", "ß"), ("query", None), ("request_id", "r" * 513), ("request_id", " r "),
        ("language", "EN"), ("language", "pt-BR"), ("language", "en-"), ("language", "und"), ("language", "en\n"),
        ("doc_id", ""), ("doc_id", "D\u2028"), ("position", 0), ("position", 2**31 - 1), ("position", 2**31),
        ("position", -3), ("position", None), ("clicked", False), ("clicked", None), ("dwell_ms", 0.0),
        ("dwell_ms", -0.0), ("dwell_ms", -4.0), ("dwell_ms", float("nan")), ("dwell_ms", float("inf")),
        ("dwell_ms", 1e20), ("dwell_ms", 2.5), ("session_id", None), ("request_id", "r0"),  # a duplicate key
        ("query", "東京 ١٢"), ("query", "e\u0301"), ("query", "\u3000wide space"),
    ]
    for i, (column, value) in enumerate(cases[:n]):
        base[column][i] = value
    return base


@pytest.mark.parametrize("ts_type", ["int64 ms", "timestamp[ns, Europe/Berlin]", "timestamp[us]", "timestamp[s, UTC]"])
def test_parquet_rows_kept_at_once_are_those_validation_keeps(tmp_path, ts_type):
    """Parquet log rows that plainly keep the contract are typed at once with Arrow compute; the rest go through
    validate_records. Both ways must give what validate_records alone gives: the same bronze rows and values, the
    same quarantined rows with the same reasons."""
    now = pd.Timestamp.now(tz="UTC").floor("s")
    stamps = [pd.Timestamp("2026-01-01T10:00:00.123456789Z") + pd.Timedelta(minutes=i) for i in range(36)]
    stamps[1], stamps[2], stamps[3] = pd.Timestamp("1999-12-31T23:59:59Z"), now + pd.Timedelta(days=3), None
    stamps[4] = pd.Timestamp("2026-01-02T23:59:59.999999Z")  # the next day
    unit, _, zone = ts_type.partition("[")[2].rstrip("]").partition(", ")
    if ts_type == "int64 ms":
        column = pa.array([None if s is None else s.value // 1_000_000 for s in stamps], pa.int64())
    else:
        column = pa.array([None if s is None else s.value // {"s": 10**9, "us": 10**3, "ns": 1}[unit] for s in stamps],
                          pa.int64()).cast(pa.timestamp(unit, tz=zone or None))
    rows = _typed_log_rows([None] * 36)
    rows["ts"] = column
    path = tmp_path / "logs.parquet"
    pq.write_table(pa.table(rows, schema=pa.schema([
        ("request_id", pa.string()), ("ts", column.type), ("session_id", pa.string()), ("query", pa.string()),
        ("language", pa.dictionary(pa.int8(), pa.string())), ("doc_id", pa.large_string()), ("position", pa.int64()),
        ("clicked", pa.bool_()), ("dwell_ms", pa.float32())])), path)
    days = {"2026-01-01", "2026-01-02"}
    limits = LandingLimits(batch_rows=7)

    fast = bronze_tables(_merged(_parquet_logs(path, "2026-01-01", days, limits), QUERY_LOG_TYPES, [str(path)]),
                         ["request_id", "doc_id"], "impression")
    slow = bronze_tables(_validated_logs(read_records(path, QUERY_LOGS.required, QUERY_LOGS.optional, limits),
                                         "2026-01-01", days, limits), ["request_id", "doc_id"], "impression")
    # the same rows and values; a float pandas parses from text may be one unit in the last place off
    assert fast[0].drop_columns(["dwell_ms"]).equals(slow[0].drop_columns(["dwell_ms"]))
    assert fast[0]["dwell_ms"].to_numpy() == pytest.approx(slow[0]["dwell_ms"].to_numpy(), rel=1e-15, nan_ok=True)
    assert fast[1].to_pylist() == slow[1].to_pylist()
    kept, rejected = fast[0].num_rows, fast[1].num_rows
    assert kept >= 12 and rejected >= 15 and kept + rejected == 36
    plain, _ = plain_query_logs(pq.read_table(path).combine_chunks().to_batches()[0],
                                arrow_schema({c: QUERY_LOG_TYPES[c] for c in QUERY_LOGS.kinds}), limits)
    assert 8 <= plain.sum() < kept  # both ways were taken by rows that are kept
    # the landing index reads typed timestamps the same way: the days of the rows it can date
    assert scan_file_days(path, "logs", limits) == ["2026-01-01", "2026-01-02"]


def test_table_checks_name_the_failing_columns_whatever_the_frame():
    """The lakehouse tables' checks: Arrow tables (what the asset checks read) and pandas frames alike."""
    good = {"date": [dt.date(2026, 1, 1)] * 3, "query": ["red shoes", "hoodie", "pesi"], "language": ["en", "en", "it"],
            "doc_id": ["D1", "D2", "D3"], "impressions": [3, 1, 2], "clicks": [1, 0, 2], "ctr": [1 / 3, 0.0, 1.0],
            "mean_position": [1.5, 2.0, 1.0], "mean_dwell_ms": [300.0, None, 10.0]}
    assert check_table("silver/impressions", pa.table(good)).empty
    assert check_table("silver/impressions", pd.DataFrame(good)).empty
    bad = {**good, "query": ["red shoes", "", "pesi"], "language": ["en", "EN!", None], "impressions": [3, 0, 2]}
    for frame in (pa.table(bad), pd.DataFrame(bad)):
        failures = check_table("silver/impressions", frame)
        assert set(failures["column"]) == {"query", "language", "impressions"}
        assert set(failures["failure_case"].dropna().astype(str)) >= {"", "EN!", "0"}

"""DuckDB analytics over the annotator's agreement (plain Python: no Dagster imports).

Every analytic is one SQL file in the repository's ``sql/`` folder (DuckDB dialect). The files
refer to the source tables by short names, registered here from the lakehouse's Delta tables:

=================  =========================  ==============================================
name               Delta table                what
=================  =========================  ==============================================
agent_votes        gold/agent_votes           one row per pair, agent and reasoning path
agent_labels       gold/agent_labels          one row per pair and agent (level-1 outcome)
consensus_labels   gold/consensus_labels      accepted pairs only (level-2 outcome)
judgments          bronze/judgments           human-judged pairs (seed and test splits)
=================  =========================  ==============================================

A table that does not exist yet is registered empty with the right columns, and a table missing
one of the expected columns gets it as NULLs, so every SQL file runs on a fresh lakehouse.

``connect`` (what ``serm sql`` runs on) is a sandbox: a read-only DuckDB connection with external
access disabled (no files, URLs or other databases), no extension installed or loaded, no Python
variables scanned, its configuration locked. It reads the registered tables and nothing else.

``materialize_analytics`` writes ``SERM_HOME/analytics.duckdb``: copies of the four source tables,
one table per analytic and ``_analytics_refreshed`` (when, and which Delta version of each source
was read), so ``duckdb analytics.duckdb`` alone shows everything without Python.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import pyarrow as pa

if TYPE_CHECKING:  # pragma: no cover
    import duckdb
    import pandas as pd

    from .storage import DeltaStore

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

# short name -> Delta table ("layer/table")
SOURCE_TABLES: dict[str, str] = {
    "agent_votes": "gold/agent_votes",
    "agent_labels": "gold/agent_labels",
    "consensus_labels": "gold/consensus_labels",
    "judgments": "bronze/judgments",
}

_PAIR = [
    ("iteration", pa.int64()), ("pair_id", pa.string()), ("query", pa.string()), ("language", pa.string()),
    ("language_family", pa.string()), ("doc_id", pa.string()),
]

# The one place the source tables' expected columns are defined (used for absent tables and for
# columns a table lacks). Types only matter for empty/missing columns: present columns keep theirs.
SOURCE_SCHEMAS: dict[str, pa.Schema] = {
    "agent_votes": pa.schema([
        *_PAIR, ("agent", pa.string()), ("path", pa.int64()), ("label", pa.int64()), ("status", pa.string()),
        ("rationale", pa.string()), ("backend", pa.string()), ("model", pa.string()),
        ("prompt_version", pa.string()), ("config_key", pa.string()), ("latency_ms", pa.float64()),
        ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()), ("error", pa.string()),
        ("cached", pa.bool_()),
    ]),
    "agent_labels": pa.schema([
        *_PAIR, ("agent", pa.string()), ("label", pa.int64()), ("status", pa.string()),
        ("paths_used", pa.int64()), ("paths_agreeing", pa.int64()), ("stopped_early", pa.bool_()),
        ("rationale", pa.string()),
    ]),
    "consensus_labels": pa.schema([
        *_PAIR, ("label", pa.int64()), ("agreeing_agents", pa.list_(pa.string())), ("n_voters", pa.int64()),
        ("rationale", pa.string()),
    ]),
    "judgments": pa.schema([
        ("query", pa.string()), ("doc_id", pa.string()), ("language", pa.string()), ("label", pa.int64()),
        ("split", pa.string()), ("ts", pa.timestamp("us", tz="UTC")), ("source_file", pa.string()),
        ("source_row", pa.int64()),
    ]),
}

REFRESH_TABLE = "_analytics_refreshed"
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def list_analytics() -> list[str]:
    """The analytics' names: the ``sql/*.sql`` files' stems, sorted."""
    return sorted(p.stem for p in SQL_DIR.glob("*.sql") if _NAME.match(p.stem))


def analytic_sql(name: str) -> str:
    """The SQL of one analytic, without a trailing semicolon (so it can be wrapped in CREATE ... AS)."""
    if name not in list_analytics():
        raise KeyError(f"no analytic {name!r}; known: {', '.join(list_analytics())}")
    return (SQL_DIR / f"{name}.sql").read_text().strip().rstrip(";").rstrip()


def conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """``data`` with every column of ``schema`` (missing ones added as NULLs of the schema's type)."""
    for field in schema:
        if field.name not in data.column_names:
            data = data.append_column(field, pa.nulls(data.num_rows, type=field.type))
    return data


def read_source(store: "DeltaStore", name: str) -> tuple[pa.Table, int | None]:
    """One source table as Arrow (empty with the expected columns when absent) and its Delta version."""
    table = SOURCE_TABLES[name]
    version = store.version(table)
    if version is None:
        return SOURCE_SCHEMAS[name].empty_table(), None
    return conform(store.read_arrow(table, version=version), SOURCE_SCHEMAS[name]), version


def register_tables(con: "duckdb.DuckDBPyConnection", store: "DeltaStore",
                    tables: Mapping[str, str] | None = None, *, copy: bool = False) -> dict[str, dict]:
    """Register each source table by its short name: an Arrow view, or with ``copy`` a real table.

    ``tables`` maps short names to Delta tables (default ``SOURCE_TABLES``; a short name outside
    ``SOURCE_TABLES`` has no expected schema and must exist). Returns, per short name, the Delta
    table, the version read (None when absent) and the row count.
    """
    tables = dict(SOURCE_TABLES if tables is None else tables)
    info: dict[str, dict] = {}
    for name, delta_table in tables.items():
        if not _NAME.match(name):
            raise ValueError(f"not a plain table name: {name!r}")
        if name in SOURCE_TABLES and delta_table == SOURCE_TABLES[name]:
            data, version = read_source(store, name)
        else:
            version = store.version(delta_table)
            if version is None and name not in SOURCE_SCHEMAS:
                raise FileNotFoundError(f"Delta table {delta_table!r} does not exist and {name!r} has no schema")
            data = (SOURCE_SCHEMAS[name].empty_table() if version is None
                    else store.read_arrow(delta_table, version=version))
            if name in SOURCE_SCHEMAS:
                data = conform(data, SOURCE_SCHEMAS[name])
        _drop(con, name)
        if copy:
            staging = f"_staging_{name}"
            con.register(staging, data)
            try:
                con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM "{staging}"')
            finally:
                con.unregister(staging)
        else:
            con.register(name, data)
        info[name] = {"delta_table": delta_table, "delta_version": version, "rows": data.num_rows}
    return info


def _drop(con: "duckdb.DuckDBPyConnection", name: str) -> None:
    """Remove whatever holds ``name`` (a registered Arrow view, a view or a table)."""
    try:
        con.unregister(name)
    except Exception:  # pragma: no cover - nothing registered under that name
        pass
    kinds = con.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_name = ? AND table_schema = current_schema()",
        [name],
    ).fetchall()
    for (kind,) in kinds:
        con.execute(f'DROP {"VIEW" if kind == "VIEW" else "TABLE"} IF EXISTS "{name}"')


# What a query typed by a user may not do: reach files, URLs or other databases, install or load
# extensions, read the caller's Python variables, or change any of this.
SANDBOX_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,
    "lock_configuration": True,
}


def connect(store: "DeltaStore") -> "duckdb.DuckDBPyConnection":
    """A read-only, sandboxed DuckDB connection (``SANDBOX_CONFIG``) with the source tables registered by
    name as Arrow views. DuckDB opens no in-memory database read-only, so the connection is on an empty
    database file, removed as soon as it is open."""
    import duckdb

    folder = tempfile.mkdtemp(prefix="serm-sql-")
    try:
        empty = str(Path(folder) / "empty.duckdb")
        duckdb.connect(empty).close()
        con = duckdb.connect(empty, read_only=True, config=SANDBOX_CONFIG)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    register_tables(con, store)
    return con


def run_analytic(con: "duckdb.DuckDBPyConnection", name: str) -> "pd.DataFrame":
    """One analytic's result (the source tables must be registered on ``con``)."""
    return con.execute(analytic_sql(name)).df()


def run_query(con: "duckdb.DuckDBPyConnection", sql: str, params: list | None = None) -> "pd.DataFrame":
    """An ad-hoc read-only query (``SELECT``/``WITH``/``FROM``...) over the registered tables."""
    import duckdb

    statements = duckdb.extract_statements(sql)
    if len(statements) != 1:
        raise ValueError(f"run_query takes exactly one statement, got {len(statements)}")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise ValueError(f"run_query only runs SELECT statements, got {statements[0].type.name}")
    return con.execute(sql, params or []).df()


def materialize_analytics(db_path: str | Path | None, store: "DeltaStore") -> dict[str, int]:
    """Refresh the DuckDB file: source copies, one table per analytic, ``_analytics_refreshed``.

    ``db_path`` defaults to ``SERM_HOME/analytics.duckdb``. Everything happens in one transaction,
    so a failing analytic leaves the previous contents in place. Returns rows per analytic.
    """
    import duckdb

    if db_path is None:
        from .settings import SermPaths

        db_path = SermPaths.from_env().analytics_db
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    refreshed_at = datetime.now(timezone.utc)
    rows: dict[str, int] = {}
    con = duckdb.connect(str(db_path))
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            sources = register_tables(con, store, copy=True)
            for name in list_analytics():
                con.execute(f'CREATE OR REPLACE TABLE "{name}" AS\n{analytic_sql(name)}\n')
                rows[name] = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
            records = [
                (refreshed_at, "source", name, meta["delta_table"], meta["delta_version"], meta["rows"])
                for name, meta in sources.items()
            ] + [(refreshed_at, "analytic", name, None, None, n) for name, n in rows.items()]
            con.execute(f"""CREATE OR REPLACE TABLE {REFRESH_TABLE} (
                refreshed_at TIMESTAMPTZ, kind VARCHAR, name VARCHAR, delta_table VARCHAR,
                delta_version BIGINT, "rows" BIGINT)""")
            con.executemany(f"INSERT INTO {REFRESH_TABLE} VALUES (?, ?, ?, ?, ?, ?)", records)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return rows

"""The one storage layer: Delta tables under ``<root>/<layer>/<table>``, the root a local folder (default
``SERM_HOME/lakehouse``) or an object-store URI (``s3://``, ``gs://``, ``abfss://``; ``SermPaths.lakehouse``).

Spark computes, and delta-spark fetches its jars from Maven when a session starts, so by default Spark's
executors write a DataFrame's Parquet files and ``deltalake`` (delta-rs) commits those very files to the table:
no byte passes through the driver. (A partition column of another type than date, integer or text, whose
folder names Spark and Delta spell differently, goes Parquet staging -> Arrow batches -> delta-rs instead; an
Arrow table is written by delta-rs.) Where the Delta jars are on the session's classpath (a cluster), the same
call writes natively with delta-spark. Each commit carries the lineage as JSON in ``commitInfo.userMetadata``,
the field every writer here shares.
Reading for Spark without the jars, Spark reads the version's Parquet files itself (the list from the Delta
log), not a copy handed over from Arrow.

On object storage every operation goes through delta-rs (nothing here touches the root with pathlib): its
options come from ``storage_options`` and the standard ``AWS_*`` / ``GOOGLE_*`` / ``AZURE_*`` environment variables,
which delta-rs reads itself, so credentials never pass through our code, tables or logs. Spark's Parquet staging
stays on the local disk (a temporary folder) and is streamed from there to the object store.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.dataset as pa_dataset
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, SchemaMismatchError, TableNotFoundError
from deltalake.fs import DeltaStorageHandler
from deltalake.transaction import AddAction, create_table_with_add_actions

from serm_dagster.settings import is_uri

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

LINEAGE_KEY = "userMetadata"
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # the folder name Spark gives a null partition value
# a partition replacement of Spark's files is committed again on a newer snapshot when another writer's commit
# (another day's replacement, say) came first: delta-rs's own writer resolves those itself
COMMIT_ATTEMPTS = 5


@dataclass(frozen=True)
class WriteResult:
    table: str
    path: Path | str
    version: int
    rows_written: int
    schema: pa.Schema
    native: bool


def delta_jars_available(spark: "SparkSession") -> bool:
    """True where delta-spark's classes are on the session's classpath (a cluster with the jars)."""
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if "DeltaSparkSessionExtension" not in extensions:
        return False
    jvm = getattr(getattr(spark, "sparkContext", None), "_jvm", None)
    if jvm is None:  # Spark Connect: the server was configured with the extension, trust it
        return True
    try:
        jvm.java.lang.Class.forName("io.delta.tables.DeltaTable")
        return True
    except Exception:
        return False


def partition_predicate(replace: Mapping[str, Iterable[Any]]) -> str:
    """SQL predicate selecting exactly the given partition values, e.g. ``date IN ('2026-01-01')``."""
    clauses = []
    for column, values in replace.items():
        quoted = ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)
        clauses.append(f"{column} IN ({quoted})" if quoted else "false")
    return " AND ".join(clauses)


class DeltaStore:
    """Reads and writes the lakehouse's Delta tables; a table is named ``"<layer>/<table>"``."""

    def __init__(self, root: str | Path, storage_options: Mapping[str, str] | None = None):
        """``root``: a local folder or a delta-rs URI; ``storage_options``: delta-rs options on top of the
        environment's (e.g. ``AWS_ENDPOINT_URL``); keep secrets in the environment."""
        self.remote = is_uri(root)
        self.root: Path | str = str(root).rstrip("/") if self.remote else Path(root)
        self.storage_options = dict(storage_options) if storage_options else None

    def path(self, table: str) -> Path | str:
        layer, _, name = table.partition("/")
        if not layer or not name or "/" in name:
            raise ValueError(f"table names look like 'layer/table', got {table!r}")
        return f"{self.root}/{layer}/{name}" if self.remote else self.root / layer / name

    def _table(self, table: str, version: int | None = None) -> DeltaTable | None:
        try:
            return DeltaTable(str(self.path(table)), version=version, storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def exists(self, table: str) -> bool:
        return self._table(table) is not None

    def version(self, table: str) -> int | None:
        dt = self._table(table)
        return None if dt is None else dt.version()

    def read_arrow(self, table: str, version: int | None = None, filters: Any = None,
                   columns: list[str] | None = None) -> pa.Table:
        dt = self._table(table, version)
        if dt is None:
            raise FileNotFoundError(f"Delta table {table!r} does not exist yet at {self.path(table)}")
        return dt.to_pyarrow_table(filters=filters, columns=columns)

    def count_rows(self, table: str, version: int | None = None) -> int:
        """Row count from the Parquet footers, without reading the data."""
        dt = self._table(table, version)
        return 0 if dt is None else dt.to_pyarrow_dataset().count_rows()

    def read_spark(self, spark: "SparkSession", table: str, version: int | None = None,
                   where_in: tuple[str, list] | None = None) -> "DataFrame":
        """The table as a Spark DataFrame, optionally only rows whose ``column`` is in ``values``."""
        if version is None:
            version = self.version(table)
        if version is None:
            raise FileNotFoundError(f"Delta table {table!r} does not exist yet at {self.path(table)}")
        if delta_jars_available(spark):
            frame = spark.read.format("delta").option("versionAsOf", version).load(str(self.path(table)))
            return frame.where(frame[where_in[0]].isin(list(where_in[1]))) if where_in else frame
        dt = self._table(table, version)
        if self.remote or dt.protocol().reader_features:  # Spark has no object-store jars; deletion vectors...
            data = dt.to_pyarrow_table(filters=[(where_in[0], "in", list(where_in[1]))] if where_in else None)
            return spark.createDataFrame(data) if data.num_rows else spark.createDataFrame([], _spark_schema(data.schema))
        return self._read_files(spark, dt, self.path(table), where_in)

    @staticmethod
    def _read_files(spark: "SparkSession", dt: DeltaTable, base: Path, where_in: tuple[str, list] | None
                    ) -> "DataFrame":
        """The version's Parquet files read by Spark itself (typed by the Delta schema, partition values from the
        paths): a million-row table handed over from Arrow cost the driver 2x the time of the read."""
        schema = pa.schema(dt.schema().to_arrow())
        actions = pa.table(dt.get_add_actions(flatten=True))
        files = [str(base / unquote(path)) for path in actions.column("path").to_pylist()]  # paths are URI-encoded
        if where_in and f"partition.{where_in[0]}" in actions.column_names:  # only the partitions asked for
            wanted = {str(v) for v in where_in[1]}
            values = actions.column(f"partition.{where_in[0]}").to_pylist()
            files = [f for f, value in zip(files, values) if str(value) in wanted]
        if not files:
            return spark.createDataFrame([], _spark_schema(schema))
        frame = (spark.read.schema(_spark_schema(schema)).option("basePath", str(base))
                 .parquet(*files).select(*schema.names))
        return frame.where(frame[where_in[0]].isin(list(where_in[1]))) if where_in else frame

    def write(
        self,
        table: str,
        data: "DataFrame | pa.Table",
        *,
        lineage: Mapping[str, Any],
        partition_by: list[str] | None = None,
        replace: Mapping[str, Iterable[Any]] | None = None,
    ) -> WriteResult:
        """Overwrite the table, or with ``replace`` only the partitions given (others untouched)."""
        path = self.path(table)
        if not self.remote:
            path.parent.mkdir(parents=True, exist_ok=True)
        # the write id finds this commit's version afterwards, even when another writer committed since
        write_id = uuid.uuid4().hex
        metadata = json.dumps({**dict(lineage), "write_id": write_id}, sort_keys=True, default=str)
        predicate = partition_predicate(replace) if replace else None
        native = not isinstance(data, pa.Table) and delta_jars_available(data.sparkSession)
        spark_schema = None if native or isinstance(data, pa.Table) else _arrow_schema_of(data)
        if native:
            writer = data.write.format("delta").mode("overwrite").option(LINEAGE_KEY, metadata)
            if partition_by:
                writer = writer.partitionBy(*partition_by)
            writer = writer.option("replaceWhere", predicate) if predicate else writer.option("overwriteSchema", "true")
            writer.save(str(path))
            rows = None
        elif spark_schema is not None and not self.remote and _committable(spark_schema, partition_by):
            rows = self._commit_spark_files(table, data, spark_schema, partition_by, replace, metadata)
        else:
            with self._arrow_stream(data, spark_schema) as (stream, counted):
                write_deltalake(
                    str(path),
                    stream,
                    mode="overwrite",
                    partition_by=partition_by,
                    predicate=predicate,
                    schema_mode=None if predicate else "overwrite",
                    commit_properties=CommitProperties(custom_metadata={LINEAGE_KEY: metadata}),
                    storage_options=self.storage_options,
                )
                rows = counted["rows"]
        dt = DeltaTable(str(path), storage_options=self.storage_options)
        schema = pa.schema(dt.schema().to_arrow())
        version, commit = self._own_commit(path, dt.version(), write_id)
        if rows is None:
            rows = int(commit.get("operationMetrics", {}).get("numOutputRows", -1))
        return WriteResult(table, path, version, rows, schema, native)

    def _commit_spark_files(self, table: str, data: "DataFrame", schema: pa.Schema, partition_by: list[str] | None,
                            replace: Mapping[str, Iterable[Any]] | None, metadata: str) -> int:
        """Spark's executors write the Parquet files, which move into the table's folder as they are, and delta-rs
        commits them (``replace``: those partitions; otherwise the whole table, schema included); the rows written.
        No byte of the data passes through the driver, so the write scales with the executors."""
        path, existing = self.path(table), self._table(table) if replace else None
        columns = _columns(DeltaSchema.from_arrow(schema))
        if existing is not None and _columns(existing.schema()) != columns:
            raise SchemaMismatchError(f"{table}: the partitions to replace have other columns than the table "
                                      f"({columns} against {_columns(existing.schema())}); write the table whole, "
                                      f"or delete {path}")
        staging = self.root / "_staging" / uuid.uuid4().hex
        try:
            writer = data.write.mode("overwrite")
            (writer.partitionBy(*partition_by) if partition_by else writer).parquet(str(staging))
            actions = [_moved_file(file, staging, path) for file in sorted(staging.rglob("*.parquet"))]
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        commit = CommitProperties(custom_metadata={LINEAGE_KEY: metadata})
        if existing is None:
            create_table_with_add_actions(str(path), DeltaSchema.from_arrow(schema), actions, mode="overwrite",
                                          partition_by=partition_by, commit_properties=commit)
        else:
            filters = [(column, "in", [str(v) for v in values]) for column, values in replace.items()]
            for attempt in range(1, COMMIT_ATTEMPTS + 1):
                try:
                    existing.create_write_transaction(actions, mode="overwrite", schema=schema,
                                                      partition_by=partition_by, partition_filters=filters,
                                                      commit_properties=commit)
                    break
                except CommitFailedError:  # another writer committed since this snapshot: replace on top of it
                    if attempt == COMMIT_ATTEMPTS:
                        raise
                    existing.update_incremental()
        return sum(json.loads(action.stats)["numRecords"] for action in actions)

    @contextmanager
    def _arrow_stream(self, data: "DataFrame | pa.Table", schema: pa.Schema | None):
        """(record batches, {"rows": n once consumed}) of an Arrow table, or of a Spark DataFrame of ``schema``
        (``_arrow_schema_of``).

        A DataFrame is not collected to the driver (a million-row window would not fit its memory):
        Spark's executors write it to Parquet under ``_staging/`` and delta-rs streams the files batch
        by batch, cast to the schema Spark's own Arrow conversion gives (so both paths write alike)."""
        counted = {"rows": 0}

        def counting(batches):
            for batch in batches:
                counted["rows"] += batch.num_rows
                yield batch

        if isinstance(data, pa.Table):
            yield pa.RecordBatchReader.from_batches(data.schema, counting(data.to_batches())), counted
            return
        # Spark's executors write local files (an object store needs jars and credentials Spark does not have)
        staging = Path(tempfile.mkdtemp(prefix="serm-staging-")) if self.remote else \
            self.root / "_staging" / uuid.uuid4().hex
        try:
            data.write.mode("overwrite").parquet(str(staging))
            files = pa_dataset.dataset(str(staging), format="parquet", exclude_invalid_files=True)
            batches = (batch.cast(schema) for batch in files.to_batches(columns=schema.names))
            yield pa.RecordBatchReader.from_batches(schema, counting(batches)), counted
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _own_commit(self, path: Path | str, latest: int, write_id: str, look_back: int = 100) -> tuple[int, dict]:
        """(version, commitInfo) of the commit carrying ``write_id``, read from the log files themselves, newest
        first: another writer may have committed after it, so the latest version need not be ours (and delta-rs's
        ``history`` numbers its entries by position, which such a commit shifts)."""
        files = None if not self.remote else DeltaStorageHandler(str(path), self.storage_options)
        for version in range(latest, max(latest - look_back, -1), -1):
            name = f"_delta_log/{version:020d}.json"
            text = (Path(path) / name).read_text() if files is None else files.open_input_file(name).read().decode()
            if write_id in text:
                for line in text.splitlines():
                    if '"commitInfo"' in line:
                        return version, json.loads(line)["commitInfo"]
                return version, {}
        raise RuntimeError(f"the commit of write {write_id} is not among the last {look_back} commits of {path}")

    def history(self, table: str, limit: int | None = None) -> list[dict]:
        dt = self._table(table)
        return [] if dt is None else dt.history(limit)

    def lineage(self, table: str, version: int | None = None) -> dict:
        """The lineage stored with a commit (the latest by default)."""
        for entry in self.history(table):
            if version is None or entry.get("version") == version:
                raw = entry.get(LINEAGE_KEY)
                return json.loads(raw) if raw else {}
        raise KeyError(f"no commit {version} in {table!r}")


def _arrow_schema_of(data: "DataFrame") -> pa.Schema:
    """The Arrow schema Spark's own conversion gives a DataFrame: the table's schema on either write path."""
    return data.limit(0).toArrow().schema


def _columns(schema: DeltaSchema) -> list[tuple[str, str]]:
    """Each column's name and Delta type (nullability aside: Spark's differs from write to write)."""
    return [(field.name, str(field.type)) for field in schema.fields]


def _committable(schema: pa.Schema, partition_by: list[str] | None) -> bool:
    """Whether Spark's files can be committed as written: partition values (read back from the folder names Spark
    gives them) of a type whose text is the same in Spark's names and in Delta's log: dates, integers, text."""
    kinds = (pa.types.is_date32, pa.types.is_integer, pa.types.is_string, pa.types.is_large_string)
    return all(any(kind(schema.field(column).type) for kind in kinds) for column in partition_by or [])


def _moved_file(file: Path, staging: Path, table: Path) -> AddAction:
    """A Parquet file Spark wrote under ``staging`` moved to the same place under ``table``, as a Delta add
    action: partition values from its folders (``name=value``, Spark's escapes undone), rows from its footer."""
    relative = file.relative_to(staging)
    target = table / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    file.replace(target)
    values = {}
    for folder in relative.parts[:-1]:
        column, _, value = folder.partition("=")
        values[column] = None if value == HIVE_NULL else unquote(value)
    stat = target.stat()
    stats = json.dumps({"numRecords": pq.read_metadata(target).num_rows})
    return AddAction(relative.as_posix(), stat.st_size, values, stat.st_mtime_ns // 1_000_000, True, stats)


def _spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)

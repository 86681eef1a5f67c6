"""Writing an asset's Delta table with its lineage, and describing it to Dagster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
)

from serm_dagster.storage import DeltaStore, WriteResult

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame


def table_name(key: AssetKey) -> str:
    """An asset key ``["bronze", "query_logs"]`` is the Delta table ``bronze/query_logs``."""
    return "/".join(key.path)


def table_schema(schema: pa.Schema) -> TableSchema:
    return TableSchema(columns=[TableColumn(name=f.name, type=str(f.type)) for f in schema])


def lineage_for(context: AssetExecutionContext, key: AssetKey, upstream: Mapping[str, int | None]) -> dict:
    """What a commit records: the run, asset, partitions, code version and upstream Delta versions."""
    partition_keys = list(context.partition_keys) if context.has_partition_key or _has_range(context) else []
    return {
        "dagster_run_id": context.run_id,
        "asset_key": table_name(key),
        "partition_key": partition_keys[0] if len(partition_keys) == 1 else None,
        "partition_keys": partition_keys,
        "code_version": context.assets_def.code_versions_by_key.get(key),
        "upstream_versions": dict(upstream),
    }


def _has_range(context: AssetExecutionContext) -> bool:
    try:
        return bool(context.partition_keys)
    except Exception:
        return False


def write_asset_table(
    context: AssetExecutionContext,
    store: DeltaStore,
    key: AssetKey,
    data: "DataFrame | pa.Table",
    *,
    upstream: Mapping[str, int | None] | None = None,
    partition_by: list[str] | None = None,
    replace: Mapping[str, Iterable[Any]] | None = None,
    metadata: Mapping[str, Any] | None = None,
    lineage: Mapping[str, Any] | None = None,
) -> MaterializeResult:
    """Write ``data`` to the asset's table and report version, rows and schema to Dagster.

    ``lineage`` adds asset-specific facts to the commit's lineage (e.g. which training set it holds).
    """
    result = store.write(table_name(key), data,
                         lineage={**lineage_for(context, key, upstream or {}), **(lineage or {})},
                         partition_by=partition_by, replace=replace)
    return MaterializeResult(asset_key=key, metadata={**describe(result, store), **(metadata or {})},
                             data_version=DataVersion(str(result.version)))


def describe(result: WriteResult, store: DeltaStore) -> dict[str, Any]:
    total = store.count_rows(result.table, result.version)
    return {
        "delta_version": result.version,
        "rows_written": result.rows_written,
        "dagster/row_count": total,
        "dagster/column_schema": table_schema(result.schema),
        "path": MetadataValue.path(str(result.path)),
        "writer": "delta-spark" if result.native else "delta-rs",
        "lineage": MetadataValue.json(store.lineage(result.table, result.version)),
    }

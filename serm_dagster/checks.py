"""Asset checks that guard each lakehouse table against its pandera schema."""

from __future__ import annotations

from datetime import date

from dagster import AssetCheckResult, AssetCheckSeverity, AssetKey, MetadataValue, asset_check

from serm_dagster.resources import LakehouseResource
from serm_dagster.tables import table_name
from spark_jobs.schemas import TABLE_SCHEMAS, check_table


def schema_check(key: AssetKey):
    """Validate the rows the table's latest commit wrote (its partitions, or the whole table)."""
    name = table_name(key)

    @asset_check(asset=key, name="schema_valid", description=f"{name} conforms to its pandera schema")
    def _check(lakehouse: LakehouseResource) -> AssetCheckResult:
        store = lakehouse.store
        version = store.version(name)
        if version is None:
            return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR,
                                    metadata={"problem": f"table {name} does not exist"})
        days = store.lineage(name, version).get("partition_keys") or []
        filters = [("date", "in", [date.fromisoformat(d) for d in days])] if days else None
        table = store.read_arrow(name, version, filters=filters)
        failures = check_table(name, table)
        return AssetCheckResult(
            passed=failures.empty,
            metadata={
                "delta_version": version,
                "rows_checked": table.num_rows,
                "failures": len(failures),
                "sample": MetadataValue.md(failures.head(10).to_markdown(index=False) if len(failures) else "none"),
            },
        )

    return _check


def table_checks(keys: list[AssetKey]):
    return [schema_check(key) for key in keys if table_name(key) in TABLE_SCHEMAS]

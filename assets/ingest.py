"""Ingest stage: landing files -> bronze tables (+ quarantine) -> silver impressions."""


from datetime import date

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    asset,
    multi_asset,
)

from serm_dagster.partitions import daily_partitions
from serm_dagster.resources import LakehouseResource, SparkResource
from serm_dagster.tables import table_name, write_asset_table
from spark_jobs.impressions import build_impressions
from spark_jobs.ingest import (
    Batch,
    bronze_tables,
    collect_catalog,
    collect_glossary,
    collect_judgments,
    collect_query_logs,
    landing_index,
)

GROUP = "ingest"
OWNERS = ["team:serm"]

LANDING_LOGS = AssetKey(["landing", "logs"])
LANDING_UBI = AssetKey(["landing", "ubi"])
LANDING_CATALOG = AssetKey(["landing", "catalog"])
LANDING_JUDGMENTS = AssetKey(["landing", "judgments"])
LANDING_KNOWLEDGE = AssetKey(["landing", "knowledge"])
BRONZE_QUERY_LOGS = AssetKey(["bronze", "query_logs"])
QUARANTINE_QUERY_LOGS = AssetKey(["quarantine", "query_logs"])
BRONZE_UBI_EVENTS = AssetKey(["bronze", "ubi_events"])
QUARANTINE_UBI_EVENTS = AssetKey(["quarantine", "ubi_events"])
BRONZE_CATALOG = AssetKey(["bronze", "catalog"])
QUARANTINE_CATALOG = AssetKey(["quarantine", "catalog"])
BRONZE_JUDGMENTS = AssetKey(["bronze", "judgments"])
QUARANTINE_JUDGMENTS = AssetKey(["quarantine", "judgments"])
BRONZE_GLOSSARY = AssetKey(["bronze", "glossary"])
QUARANTINE_GLOSSARY = AssetKey(["quarantine", "glossary"])
SILVER_IMPRESSIONS = AssetKey(["silver", "impressions"])

# Files dropped into SERM_HOME/landing/<source>/ by the user (or `serm simulate`): external assets,
# so the lineage in the UI starts where the data enters.
landing_assets = [
    AssetSpec(LANDING_LOGS, group_name=GROUP, kinds={"file"}, owners=OWNERS,
              description="Query-log files (Parquet, JSON Lines, CSV) in SERM_HOME/landing/logs/."),
    AssetSpec(LANDING_UBI, group_name=GROUP, kinds={"file"}, owners=OWNERS,
              description="OpenSearch User Behavior Insights exports (bulk or NDJSON) in SERM_HOME/landing/ubi/."),
    AssetSpec(LANDING_CATALOG, group_name=GROUP, kinds={"file"}, owners=OWNERS,
              description="Catalogue files in SERM_HOME/landing/catalog/."),
    AssetSpec(LANDING_JUDGMENTS, group_name=GROUP, kinds={"file"}, owners=OWNERS,
              description="Judged pairs (seed and test splits) in SERM_HOME/landing/judgments/."),
    AssetSpec(LANDING_KNOWLEDGE, group_name=GROUP, kinds={"file"}, owners=OWNERS,
              description="The company's glossary or taxonomy (term, language, concept, kind, added) in "
                          "SERM_HOME/landing/knowledge/: what the knowledge agent knows about query terms."),
]


def _spec(key: AssetKey, description: str, deps: list[AssetKey], code_version: str = "1") -> AssetSpec:
    # validated on the driver (pandas, Arrow) and written with delta-rs: see spark_jobs.ingest
    return AssetSpec(key, description=description, deps=deps, group_name=GROUP, kinds={"pandas", "delta"},
                     owners=OWNERS, code_version=code_version)


def _conservation(key: AssetKey, batch: Batch, kept: int, quarantined: int) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=key, check_name="rows_conserved", passed=batch.rows_in == kept + quarantined,
        metadata={"rows_in": batch.rows_in, "rows_kept": kept, "rows_quarantined": quarantined},
    )


@multi_asset(
    name="ingest_query_logs",
    specs=[
        _spec(BRONZE_QUERY_LOGS, "Validated query-log impressions, one row per request and document, "
              "partitioned by day; from landing logs and UBI exports.", [LANDING_LOGS, LANDING_UBI]),
        _spec(QUARANTINE_QUERY_LOGS, "Query-log rows rejected by validation or as duplicates, with file, row "
              "and reason.", [LANDING_LOGS, LANDING_UBI]),
        _spec(BRONZE_UBI_EVENTS, "Every UBI query and event document, with what it mapped to "
              "(maps_to = query_logs for impressions and clicks).", [LANDING_UBI]),
        _spec(QUARANTINE_UBI_EVENTS, "UBI documents that could not be read or dated.", [LANDING_UBI]),
    ],
    check_specs=[AssetCheckSpec("rows_conserved", asset=BRONZE_QUERY_LOGS,
                                description="rows in = rows kept + rows quarantined"),
                 AssetCheckSpec("rows_conserved", asset=BRONZE_UBI_EVENTS,
                                description="documents in = documents kept + documents quarantined")],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
)
def ingest_query_logs(context: AssetExecutionContext, lakehouse: LakehouseResource):
    """Ingest the days of the run (one day, or a range in one run): each day's partition is replaced."""
    days = list(context.partition_keys)
    paths, store = lakehouse.paths, lakehouse.store
    limits = lakehouse.landing_limits()
    index = landing_index(paths.landing, paths.state / "landing_index.json", limits)
    logs, events = collect_query_logs(index, days, limits=limits)
    replace = {"date": days}
    results = {}
    for (bronze, quarantine, batch, keys, what) in (
        (BRONZE_QUERY_LOGS, QUARANTINE_QUERY_LOGS, logs, ["request_id", "doc_id"], "impression"),
        (BRONZE_UBI_EVENTS, QUARANTINE_UBI_EVENTS, events, [], "UBI document"),
    ):
        kept, rejected = bronze_tables(batch, keys, what, limits)
        files = {"landing_files": len(logs.files), "rows_in": batch.rows_in}
        results[bronze] = write_asset_table(context, store, bronze, kept, partition_by=["date"], replace=replace,
                                            metadata=files)
        results[quarantine] = write_asset_table(context, store, quarantine, rejected, partition_by=["date"],
                                                replace=replace, metadata=files)
        yield results[bronze]
        yield results[quarantine]
        yield _conservation(bronze, batch, results[bronze].metadata["rows_written"],
                            results[quarantine].metadata["rows_written"])


def _reference_asset(name: str, bronze: AssetKey, quarantine: AssetKey, landing: AssetKey, collect,
                     keys: list[str], what: str, description: str):
    @multi_asset(
        name=name,
        specs=[_spec(bronze, description, [landing]),
               _spec(quarantine, f"Rows of landing/{landing.path[-1]} rejected by validation or as duplicates, "
                     "with file, row and reason.", [landing])],
        check_specs=[AssetCheckSpec("rows_conserved", asset=bronze,
                                    description="rows in = rows kept + rows quarantined")],
    )
    def _ingest(context: AssetExecutionContext, lakehouse: LakehouseResource):
        limits = lakehouse.landing_limits()
        batch = collect(getattr(lakehouse.paths, f"landing_{landing.path[-1]}"), limits)
        kept, rejected = bronze_tables(batch, keys, what, limits)
        meta = {"landing_files": len(batch.files), "rows_in": batch.rows_in}
        kept_result = write_asset_table(context, lakehouse.store, bronze, kept, metadata=meta)
        rejected_result = write_asset_table(context, lakehouse.store, quarantine, rejected, metadata=meta)
        yield kept_result
        yield rejected_result
        yield _conservation(bronze, batch, kept_result.metadata["rows_written"],
                            rejected_result.metadata["rows_written"])

    return _ingest


ingest_catalog = _reference_asset(
    "ingest_catalog", BRONZE_CATALOG, QUARANTINE_CATALOG, LANDING_CATALOG, collect_catalog,
    ["doc_id"], "document", "The catalogue: one row per document, attributes as a JSON object.")
ingest_judgments = _reference_asset(
    "ingest_judgments", BRONZE_JUDGMENTS, QUARANTINE_JUDGMENTS, LANDING_JUDGMENTS, collect_judgments,
    ["split", "query", "language", "doc_id"], "judgment",
    "Judged query-document pairs: the seed (SFT) set and the test sets, labels 0-3.")

ingest_glossary = _reference_asset(
    "ingest_glossary", BRONZE_GLOSSARY, QUARANTINE_GLOSSARY, LANDING_KNOWLEDGE, collect_glossary,
    ["term", "language", "concept"], "glossary entry",
    "The glossary: which concept (category, brand, attribute value) each term names, and since when it is known.")


@asset(
    key=SILVER_IMPRESSIONS,
    deps=[BRONZE_QUERY_LOGS],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name=GROUP,
    kinds={"spark", "delta"},
    owners=OWNERS,
    code_version="2",
)
def silver_impressions(context: AssetExecutionContext, spark: SparkResource,
                       lakehouse: LakehouseResource) -> MaterializeResult:
    """One row per query-document pair per day: impressions, clicks, CTR, mean position, mean dwell."""
    days = list(context.partition_keys)
    store = lakehouse.store
    source = table_name(BRONZE_QUERY_LOGS)
    version = store.version(source)
    logs = store.read_spark(spark.get_session(), source, version,
                            where_in=("date", [date.fromisoformat(d) for d in days]))
    return write_asset_table(context, store, SILVER_IMPRESSIONS, build_impressions(logs),
                             upstream={source: version}, partition_by=["date"], replace={"date": days})


ingest_assets = [*landing_assets, ingest_query_logs, ingest_catalog, ingest_judgments, ingest_glossary,
                 silver_impressions]

"""Jobs the sensors and the command line start."""

from dagster import AssetSelection, define_asset_job

from assets.ingest import ingest_catalog, ingest_judgments, ingest_query_logs, silver_impressions

ingest_daily_job = define_asset_job(
    "ingest_daily_job",
    selection=AssetSelection.assets(ingest_query_logs, silver_impressions),
    description="Ingest one day (or a range) of query logs and UBI events, then its silver impressions.",
)
ingest_reference_job = define_asset_job(
    "ingest_reference_job",
    selection=AssetSelection.assets(ingest_catalog, ingest_judgments),
    description="Ingest the catalogue and the judgments.",
)

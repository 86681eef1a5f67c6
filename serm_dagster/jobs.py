"""Jobs the sensors and the command line start."""

from dagster import AssetSelection, define_asset_job

from assets.evaluation import evaluations, promotions
from assets.ingest import ingest_catalog, ingest_judgments, ingest_query_logs, silver_impressions
from assets.training import relevance_model, seed_model, training_sets

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
seed_model_job = define_asset_job(
    "seed_model_job",
    selection=AssetSelection.assets(training_sets, seed_model, evaluations, promotions),
    description="Train the seed model on the seed judgments, register it and evaluate it.",
)
retrain_job = define_asset_job(
    "retrain_job",
    selection=AssetSelection.assets(training_sets, relevance_model, evaluations, promotions),
    description="Assemble the training mix, retrain, evaluate against the champion and promote if better.",
)
all_jobs = [ingest_daily_job, ingest_reference_job, seed_model_job, retrain_job]

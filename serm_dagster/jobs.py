"""Jobs the sensors and the command line start."""

from dagster import AssetSelection, define_asset_job

from assets.analytics import agent_agreement
from assets.comparison import evolution_report
from assets.annotation import annotate_mined_samples
from assets.evaluation import evaluations, promotions
from assets.ingest import ingest_catalog, ingest_glossary, ingest_judgments, ingest_query_logs, silver_impressions
from assets.iterations import iterations
from assets.mining import drift_reports, mined_samples
from assets.training import relevance_model, seed_model, training_sets

ingest_daily_job = define_asset_job(
    "ingest_daily_job",
    selection=AssetSelection.assets(ingest_query_logs, silver_impressions),
    description="Ingest one day (or a range) of query logs and UBI events, then its silver impressions.",
)
ingest_reference_job = define_asset_job(
    "ingest_reference_job",
    selection=AssetSelection.assets(ingest_catalog, ingest_judgments, ingest_glossary),
    description="Ingest the catalogue, the judgments and the glossary.",
)
seed_model_job = define_asset_job(
    "seed_model_job",
    selection=AssetSelection.assets(training_sets, seed_model, evaluations, promotions),
    description="Train the seed model on the seed judgments, register it and evaluate it.",
)
retrain_job = define_asset_job(
    "retrain_job",
    selection=AssetSelection.assets(annotate_mined_samples, agent_agreement, training_sets, relevance_model,
                                    evaluations, promotions, iterations),
    description="Label the newest mined samples, assemble the training mix, retrain, evaluate against the champion "
                "and promote if better.",
)
mining_job = define_asset_job(
    "mining_job",
    selection=AssetSelection.assets(drift_reports, mined_samples),
    description="Report drift of the newest window and mine the pairs worth labelling.",
)
iteration_job = define_asset_job(
    "iteration_job",
    selection=AssetSelection.assets(drift_reports, mined_samples, annotate_mined_samples, agent_agreement,
                                    training_sets, relevance_model, evaluations, promotions, iterations),
    description="One SERM iteration over the newest window: drift, mining, annotation, training mix, retraining, "
                "evaluation, promotion.",
)
record_iteration_job = define_asset_job(
    "record_iteration_job",
    selection=AssetSelection.assets(iterations),
    description="Record the newest iteration in gold/iterations: what a run whose challenger the promotion check "
                "rejected could not do (the blocking check stops everything downstream of the evaluations).",
)
relevance_model_job = define_asset_job(
    "relevance_model_job",
    selection=AssetSelection.assets(training_sets, relevance_model, evaluations, promotions),
    description="Retrain the relevance model on the current training mix (the labels already accepted), evaluate it "
                "against the champion and promote if better (`serm train --retrain`).",
)
comparison_report_job = define_asset_job(
    "comparison_report_job",
    selection=AssetSelection.assets(evolution_report),
    description="The comparison of the arms (seed, self-training, SERM) run by `serm evolve --compare`: "
                "gold/evolution_report and its chart.",
)
all_jobs = [ingest_daily_job, ingest_reference_job, seed_model_job, retrain_job, mining_job, iteration_job,
            record_iteration_job, relevance_model_job, comparison_report_job]

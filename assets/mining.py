"""Drift and mine stages: the drift report of the iteration's window, and the miner's samples."""

import time
from dataclasses import dataclass, field
from datetime import date, timedelta

import pandas as pd
import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from assets.ingest import BRONZE_CATALOG, BRONZE_JUDGMENTS, BRONZE_QUERY_LOGS, SILVER_IMPRESSIONS
from assets.training import AGENT_LABELS
from models.inference import Scorer, disagreement, entropy
from models.progress import reporting_to
from serm_dagster.registry import CHAMPION
from serm_dagster.resources import LakehouseResource, MiningSettings, MlflowResource, ModelSettings, SparkResource
from serm_dagster.tables import table_name, write_asset_table
from spark_jobs.click_model import PbmSettings, fit_pbm, position_counts
from spark_jobs.drift import drift_report
from spark_jobs.mining import (
    AGENTS,
    PAIR,
    MinerSettings,
    behavioural_candidates,
    click_model_agent,
    model_agents,
    model_thresholds,
    select_within_budget,
    uniform_sample,
    union_of_agents,
    user_feedback_agent,
    window_pairs,
)
from spark_jobs.training import document_texts

DRIFT_REPORTS = AssetKey(["gold", "drift_reports"])
MINED_SAMPLES = AssetKey(["gold", "mined_samples"])
OWNERS = ["team:serm"]
# The drift report's automation condition: once after new days of query logs are ingested, when no ingestion is
# still running (new judgments alone do not ask: with no logs yet the report could not be made). Unpartitioned,
# so a backfill of many days is one report of the newest window.
AFTER_INGESTION = (AutomationCondition.any_deps_updated().allow(AssetSelection.assets(BRONZE_QUERY_LOGS))
                   .since_last_handled()
                   & ~AutomationCondition.any_deps_in_progress()
                   & ~AutomationCondition.in_progress()).with_label("after new days of query logs are ingested")


def iteration_window(store, settings: MiningSettings) -> tuple[date, date]:
    """The window an iteration works on, decided here for drift, mining and evaluation alike: the
    ``window_days`` days ending at ``settings.window_end`` (a replayed iteration's), or at the newest
    ingested day of query logs when it is empty. Its end is the iteration's as-of day: nothing dated after
    it is read, even when later days are ingested."""
    days = store.read_arrow(table_name(BRONZE_QUERY_LOGS), columns=["date"]).column("date").unique().to_pylist() \
        if store.exists(table_name(BRONZE_QUERY_LOGS)) else []
    if not days:
        raise ValueError("bronze/query_logs is empty: ingest some logs first")
    end = date.fromisoformat(settings.window_end) if settings.window_end else max(days)
    if end not in days:
        raise ValueError(f"window end {end} has no ingested query logs (ingested {min(days)}..{max(days)})")
    return end - timedelta(days=settings.window_days - 1), end


def annotated_iterations(store) -> set[int]:
    """Iterations whose mined samples the annotator has judged, whether or not any label was accepted."""
    name = table_name(AGENT_LABELS)
    return set(store.read_arrow(name, columns=["iteration"]).column("iteration").to_pylist()) \
        if store.exists(name) else set()


def next_iteration(store) -> int:
    """The iteration being mined: one after the newest annotated iteration."""
    return max(annotated_iterations(store), default=0) + 1


def reference_days(spark, store, window_start: date) -> list[date]:
    """The days the serving model's training data came from: the seed judgments' days, and the
    windows of the iterations mined before this one (their labels are in its training mix)."""
    judgments = store.read_spark(spark, table_name(BRONZE_JUDGMENTS)).where("split = 'seed' AND ts IS NOT NULL")
    days = {r["d"] for r in judgments.select(F.to_date("ts").alias("d")).distinct().collect()}
    if store.exists(table_name(MINED_SAMPLES)):
        windows = store.read_arrow(table_name(MINED_SAMPLES), columns=["window_start", "window_end"])
        for start, end in set(zip(*[windows.column(c).to_pylist() for c in ("window_start", "window_end")])):
            days |= {start + timedelta(days=i) for i in range((end - start).days + 1)}
    return sorted(d for d in days if d < window_start)


def window_logs(spark, store, start: date, end: date):
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    return store.read_spark(spark, table_name(BRONZE_QUERY_LOGS), where_in=("date", days))


@asset(
    key=DRIFT_REPORTS,
    deps=[BRONZE_QUERY_LOGS, BRONZE_JUDGMENTS],
    automation_condition=AFTER_INGESTION,
    group_name="drift",
    kinds={"spark", "pytorch", "delta"},
    owners=OWNERS,
    code_version="1",
    description="How far the iteration's window of the stream (the newest by default, see "
                "MiningSettings.window_end) is from the data the serving model was trained on: "
                "language mix and query length (PSI), term distribution (Jensen-Shannon distance), query "
                "embeddings (MMD permutation test on MiniLM embeddings), new terms and new documents; each with "
                "its threshold and verdict, and an overall verdict that tells an operator whether to iterate.",
)
def drift_reports(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource,
                  mining_settings: MiningSettings) -> MaterializeResult:
    session, store = spark.get_session(), lakehouse.store
    start, end = iteration_window(store, mining_settings)
    reference = reference_days(session, store, start)
    if not reference:
        raise ValueError(f"no reference days before the window {start}..{end}: the seed judgments carry no ts")
    report = drift_report(window_logs(session, store, reference[0], reference[-1])
                          .where(F.col("date").isin(reference)),
                          window_logs(session, store, start, end), settings=mining_settings.drift())
    rows = pd.DataFrame(report.rows).assign(window_start=start, window_end=end, reference_start=reference[0],
                                            reference_end=reference[-1], overall_drifted=report.overall_drifted,
                                            reason=report.reason)
    rows["detail"] = rows["detail"].astype(str)
    table = pa.Table.from_pandas(rows[["window_start", "window_end", "reference_start", "reference_end", "signal",
                                       "statistic", "value", "threshold", "drifted", "detail", "overall_drifted",
                                       "reason"]].astype({"value": float, "threshold": float}), preserve_index=False)
    return write_asset_table(
        context, store, DRIFT_REPORTS, table, partition_by=["window_end"], replace={"window_end": [end.isoformat()]},
        upstream={table_name(BRONZE_QUERY_LOGS): store.version(table_name(BRONZE_QUERY_LOGS))},
        lineage={"window": [start.isoformat(), end.isoformat()],
                 "new_terms": report.new_terms["term"].head(50).tolist() if len(report.new_terms) else []},
        metadata={"drifted": report.overall_drifted, "window": f"{start}..{end}",
                  "reference": f"{len(reference)} days {reference[0]}..{reference[-1]}",
                  "report": MetadataValue.md(report.to_markdown())},
    )


BEHAVIOUR = ["impressions", "clicks", "mean_position", "mean_dwell_ms", "attractiveness", "support"]


def pair_behaviour(session, store, start: date, end: date):
    """(query logs, fitted PBM, one row per logged pair with ``BEHAVIOUR``) for the days start..end."""
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    logs = window_logs(session, store, start, end)
    pbm = fit_pbm(position_counts(logs), PbmSettings())
    impressions = store.read_spark(session, table_name(SILVER_IMPRESSIONS), where_in=("date", days))
    pairs = window_pairs(impressions).join(pbm.attractiveness.select(*PAIR, "attractiveness", "support"), PAIR, "left")
    return logs, pbm, pairs


def score_with_model(scorer: Scorer, pairs: pd.DataFrame, passes: int, seed: int, top_layers: int = 0
                     ) -> pd.DataFrame:
    """The model agents' signals: score f, entropy of Pr(y|q,d), and the MC-dropout score gap."""
    probs, samples = scorer.judge(pairs["query"].tolist(), pairs["doc_text"].tolist(), k=passes, seed=seed,
                                  top_layers=top_layers or None, step="mining: the model agents")
    return pairs[PAIR].assign(score=probs @ [0.0, 1.0, 2.0, 3.0], uncertainty_score=entropy(probs),
                              disagreement_score=disagreement(samples))


@dataclass
class MiningOutcome:
    """What one mining pass found: the union of the agents, the pairs kept within budget, how many
    pairs each stage saw and how long it took (seconds)."""

    union: DataFrame
    selected: DataFrame
    counts: dict = field(default_factory=dict)
    flagged: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    examination: dict = field(default_factory=dict)


def mine_window(session, store, scorer: Scorer, settings: MinerSettings, start: date, end: date,
                new_terms: list[str] | None = None) -> MiningOutcome:
    """The multi-agent miner over the logs of ``start..end``: behavioural agents over every logged
    pair (Spark), model agents over their candidates plus a uniform sample (torch), the union and
    the budget. Each stage is timed, so the asset's metadata and the benchmark report the same
    figures."""
    seconds, clock = {}, time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage], clock = round(now - clock, 3), now

    logs, pbm, pairs = pair_behaviour(session, store, start, end)
    pairs = pairs.withColumn("score", F.lit(None).cast("double")).cache()
    counts = {"logged_rows": logs.count(), "logged_pairs": pairs.count()}
    candidates = behavioural_candidates(user_feedback_agent(pairs, settings), click_model_agent(pairs, settings=settings),
                                        limit=settings.max_candidates).localCheckpoint()
    sample = uniform_sample(pairs, candidates, settings.sample_rest, settings.seed).localCheckpoint()
    to_score = candidates.unionByName(sample)
    documents = document_texts(store.read_spark(session, table_name(BRONZE_CATALOG)))
    scored_input = to_score.join(documents.select("doc_id", "language", "doc_text"), ["doc_id", "language"]).toPandas()
    counts["behavioural_candidates"] = candidates.count()
    lap("behavioural_agents")

    signals = score_with_model(scorer, scored_input, settings.mc_passes, settings.seed, settings.mc_top_layers)
    counts["model_scored_pairs"] = len(signals)
    lap("model_agents")

    scored = pairs.drop("score").join(session.createDataFrame(signals), PAIR, "inner")
    tau_md, tau_mu = model_thresholds(scored, settings, sample)
    # the behavioural rules again, now with the model's score f for every pair it saw
    union = union_of_agents([user_feedback_agent(scored, settings), click_model_agent(scored, settings=settings),
                             model_agents(scored, tau_md, tau_mu, settings.mc_passes)])
    # what the annotator's behaviour agent reads, kept with each pair
    union = union.join(scored.select(*PAIR, F.col("score").alias("model_score"), *BEHAVIOUR), PAIR, "left") \
        .localCheckpoint()
    selected = select_within_budget(union, settings=settings, new_terms=new_terms).localCheckpoint()
    flagged = union.select([F.sum(F.col(f"{a}_flag").cast("int")).alias(a) for a in AGENTS]).collect()[0].asDict()
    counts.update(union=union.count(), selected=selected.count(), tau_md=round(tau_md, 4), tau_mu=round(tau_mu, 4))
    counts["fraction_scored_by_model"] = round(counts["model_scored_pairs"] / max(counts["logged_pairs"], 1), 4)
    lap("union_and_budget")
    pairs.unpersist()
    return MiningOutcome(union, selected, counts, {a: int(flagged[a] or 0) for a in AGENTS}, seconds,
                         {int(k): round(v, 3) for k, v in pbm.examination.items()})


@asset(
    key=MINED_SAMPLES,
    deps=[SILVER_IMPRESSIONS, BRONZE_QUERY_LOGS, BRONZE_CATALOG, DRIFT_REPORTS],
    group_name="mining",
    kinds={"spark", "pytorch", "delta"},
    owners=OWNERS,
    code_version="1",
    description="The multi-agent sample miner's output for the iteration's window (the newest by default): the "
                "union of the pairs flagged by the user-feedback and click-model agents (Spark, over every logged "
                "pair) and the disagreement and uncertainty agents (the serving model, over the behavioural "
                "candidates plus a uniform sample), one row per pair with each agent's score, kept within the "
                "iteration's budget. The serving model is the MLflow 'champion' (its version is in every row and in"
                " the lineage): the loop's feedback edge, not an asset dependency, since the model is itself "
                "downstream of these samples.",
)
def mined_samples(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource,
                  mlflow_resource: MlflowResource, model_settings: ModelSettings,
                  mining_settings: MiningSettings) -> MaterializeResult:
    session, store = spark.get_session(), lakehouse.store
    settings = mining_settings.miner()
    start, end = iteration_window(store, mining_settings)
    iteration = next_iteration(store)
    registry = mlflow_resource.registry(lakehouse.paths.home)
    champion = registry.alias_version(CHAMPION)
    if champion is None:
        raise ValueError("no champion model to mine with: materialize models/seed_model first")

    new_terms = store.lineage(table_name(DRIFT_REPORTS)).get("new_terms", []) \
        if store.exists(table_name(DRIFT_REPORTS)) else []
    scorer = model_settings.scorer(registry.model_dir(champion))
    with reporting_to(context.log.info):
        outcome = mine_window(session, store, scorer, settings, start, end, new_terms)
    result = (outcome.selected.withColumn("iteration", F.lit(iteration)).withColumn("window_start", F.lit(start))
              .withColumn("window_end", F.lit(end)).withColumn("model_version", F.lit(champion)))
    seen = {"user_feedback": outcome.counts["logged_pairs"], "click_model": outcome.counts["logged_pairs"],
            "disagreement": outcome.counts["model_scored_pairs"], "uncertainty": outcome.counts["model_scored_pairs"]}
    agents_table = pd.DataFrame({"agent": list(seen), "pairs_seen": list(seen.values()),
                                 "flagged": [outcome.flagged[a] for a in seen]})
    return write_asset_table(
        context, store, MINED_SAMPLES, result, partition_by=["iteration"], replace={"iteration": [iteration]},
        upstream={t: store.version(t) for t in (table_name(SILVER_IMPRESSIONS), table_name(BRONZE_CATALOG))},
        lineage={"iteration": iteration, "window": [start.isoformat(), end.isoformat()], "model_version": champion},
        metadata={"window": f"{start}..{end}", "iteration": iteration, "model_version": champion, **outcome.counts,
                  "agents": MetadataValue.md(agents_table.to_markdown(index=False)),
                  "stage_seconds": MetadataValue.json(outcome.seconds),
                  "examination_by_position": MetadataValue.json(outcome.examination)},
    )


mining_assets = [drift_reports, mined_samples]

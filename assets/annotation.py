"""Annotate stage: the multi-agent relevance annotator labels the mined pairs (two-level agreement).

Votes, per-agent labels and the accepted consensus are three Delta tables; the DuckDB analytics
over them are the analytics stage (assets/analytics.py).
"""


from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
from dagster import AssetCheckResult, AssetCheckSpec, AssetExecutionContext, AssetKey, AssetSpec, MetadataValue, multi_asset

from assets.ingest import BRONZE_CATALOG, BRONZE_GLOSSARY, BRONZE_JUDGMENTS, SILVER_IMPRESSIONS
from assets.mining import BEHAVIOUR, MINED_SAMPLES, pair_behaviour
from assets.training import AGENT_LABELS, CONSENSUS_LABELS
from models.agents import SqliteVoteCache, annotate, stable_hash
from models.agents.embedded import default_panel, normalize_query, pairs_to_judge, panel_calibration, panel_knowledge
from models.metrics import family_of
from models.progress import reporting_to
from serm_dagster.registry import CHAMPION
from serm_dagster.resources import (
    AnnotatorSettings,
    LakehouseResource,
    MlflowResource,
    ModelSettings,
    SparkResource,
)
from serm_dagster.tables import table_name, write_asset_table
from spark_jobs.mining import PAIR
from spark_jobs.training import document_texts

GROUP = "annotation"
OWNERS = ["team:serm"]
AGENT_VOTES = AssetKey(["gold", "agent_votes"])
SELF_TRAINING = "self_training"


def newest_mined_iteration(store) -> int:
    iterations = store.read_arrow(table_name(MINED_SAMPLES), columns=["iteration"]).column("iteration").to_pylist()
    if not iterations:
        raise ValueError("gold/mined_samples is empty: mine a window first")
    return max(iterations)


def seed_behaviour(session, store) -> pd.DataFrame:
    """Seed judgments with what users did with those pairs in the seed period (for calibration)."""
    seed = store.read_arrow(table_name(BRONZE_JUDGMENTS), filters=[("split", "=", "seed")]).to_pandas()
    seed["query"] = seed["query"].map(normalize_query)
    days = pd.to_datetime(seed["ts"].dropna()).dt.date
    if days.empty:
        return seed.assign(**{c: np.nan for c in BEHAVIOUR})
    _, _, pairs = pair_behaviour(session, store, days.min(), days.max())
    behaviour = pairs.toPandas()
    return seed.merge(behaviour, on=PAIR, how="left")


def embedded_panel(session, store, catalog: pd.DataFrame, settings: AnnotatorSettings, window_end,
                   targets: list | None = None) -> tuple[list, dict]:
    """The default judges, learnt on the seed judgments (with the seed period's behaviour), knowing what the
    glossary knew at the window's end (when there is one) and the clicks of ``click_history_days`` up to it (to
    learn what query words stand for), their gates calibrated for the label mix of ``targets`` (the pairs to
    judge); and their calibration (for lineage)."""
    glossary = store.read_arrow(table_name(BRONZE_GLOSSARY)).to_pandas() \
        if store.exists(table_name(BRONZE_GLOSSARY)) else None
    first_day = (pd.Timestamp(window_end) - pd.Timedelta(days=settings.click_history_days - 1)).date()
    impressions = store.read_arrow(table_name(SILVER_IMPRESSIONS), columns=["query", "language", "doc_id", "clicks"],
                                   filters=[("date", ">=", first_day),
                                            ("date", "<=", pd.Timestamp(window_end).date())]) \
        .to_pandas().groupby(["query", "language", "doc_id"], as_index=False)["clicks"].sum()
    agents = default_panel(catalog, glossary, seed_behaviour(session, store), as_of=window_end,
                           impressions=impressions, agents=settings.embedded_agents,
                           judge_options=settings.judge_options, targets=targets)
    return agents, panel_calibration(agents)


def with_retrieved_knowledge(pairs: list, knowledge) -> list:
    """The pairs with what the catalogue knowledge says of each (the retrieval step an LLM judge's prompt
    shows); unchanged where there is no knowledge."""
    if knowledge is None:
        return pairs
    return [replace(p, knowledge={**p.knowledge, **knowledge.facts(p)}) for p in pairs]


def self_training_labels(scorer, mined: pd.DataFrame, documents: pd.DataFrame) -> pd.DataFrame:
    """The baseline: the serving model's own most likely label for every mined pair, with its probability
    (``confidence``)."""
    frame = mined.merge(documents, on=["doc_id", "language"])
    probs = scorer.predict_proba(frame["query"].tolist(), frame["doc_text"].tolist(), "self-training labels")
    labels = probs.argmax(axis=1)
    return frame[PAIR].assign(
        pair_id=[stable_hash(list(k)) for k in frame[PAIR].itertuples(index=False)], label=labels.astype("int64"),
        agreeing_agents=[[SELF_TRAINING]] * len(frame), n_voters=1,
        rationale=[f"serving model: Pr(y={y}) = {p[y]:.2f}" for y, p in zip(labels, probs)],
        confidence=probs.max(axis=1))


def _with_iteration(frame: pd.DataFrame, iteration: int) -> pd.DataFrame:
    return frame.assign(iteration=iteration, language_family=frame["language"].map(family_of))


@multi_asset(
    name="annotate_mined_samples",
    specs=[
        AssetSpec(AGENT_VOTES, deps=[MINED_SAMPLES, BRONZE_CATALOG, BRONZE_GLOSSARY, BRONZE_JUDGMENTS],
                  group_name=GROUP, kinds={"pytorch", "delta"}, owners=OWNERS, code_version="1",
                  description="Every reasoning path of every agent on every mined pair: label (or abstention), "
                              "rationale, backend, model, prompt version, latency, tokens, status."),
        AssetSpec(AGENT_LABELS, deps=[MINED_SAMPLES], group_name=GROUP, kinds={"delta"}, owners=OWNERS,
                  code_version="1",
                  description="Level 1: each agent's majority label per pair over its paths (ties abstain)."),
        AssetSpec(CONSENSUS_LABELS, deps=[MINED_SAMPLES], group_name=GROUP, kinds={"delta"}, owners=OWNERS,
                  code_version="1",
                  description="Level 2: the pairs the voting agents agree on (unanimity by default), with the "
                              "label, the agreeing agents and their merged rationale. What retraining learns from."),
    ],
    check_specs=[AssetCheckSpec("labels_in_range", asset=CONSENSUS_LABELS,
                                description="every accepted label is 0-3 and backed by at least one agent")],
)
def annotate_mined_samples(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource,
                           mlflow_resource: MlflowResource, model_settings: ModelSettings,
                           annotator_settings: AnnotatorSettings):
    session, store = spark.get_session(), lakehouse.store
    iteration = newest_mined_iteration(store)
    mined = store.read_arrow(table_name(MINED_SAMPLES), filters=[("iteration", "=", iteration)]).to_pandas()
    window_end = mined["window_end"].max()
    upstream = {table_name(MINED_SAMPLES): store.version(table_name(MINED_SAMPLES))}

    if annotator_settings.strategy == "self-training":
        registry = mlflow_resource.registry(lakehouse.paths.home)
        scorer = model_settings.scorer(registry.model_dir(registry.alias_version(CHAMPION)))
        documents = document_texts(store.read_spark(session, table_name(BRONZE_CATALOG))) \
            .select("doc_id", "language", "doc_text").toPandas()
        with reporting_to(context.log.info):
            predicted = self_training_labels(scorer, mined, documents)
        # as in standard self-training, only the model's confident labels are trained on
        confident = predicted.pop("confidence") >= annotator_settings.self_training_min_confidence
        consensus = predicted[confident]
        votes = predicted.assign(agent=SELF_TRAINING, path=0, status="ok", backend="serving-model",
                                 model=registry.alias_version(CHAMPION), prompt_version="", config_key="",
                                 latency_ms=0.0, prompt_tokens=0, completion_tokens=0, error=None, cached=False)
        labels = predicted.assign(agent=SELF_TRAINING, status=confident.map({True: "decided", False: "abstained"}),
                                  paths_used=1, paths_agreeing=1, stopped_early=False)
        stats, panel = {"pairs": len(mined), "accepted": len(consensus), "new_calls": 0}, {SELF_TRAINING: "model"}
    else:
        catalog = store.read_arrow(table_name(BRONZE_CATALOG)).to_pandas()
        to_judge = pairs_to_judge(mined[[*PAIR, *BEHAVIOUR]], catalog, behaviour=mined[[*PAIR, *BEHAVIOUR]])
        agents, panel = embedded_panel(session, store, catalog, annotator_settings, window_end, targets=to_judge)
        llm_agents = annotator_settings.llm_panel()
        agents = [*agents, *llm_agents]
        panel = {"calibration": panel, "config_keys": {a.name: a.config_key() for a in agents}}
        if llm_agents:  # the embedded judges read the knowledge themselves; an LLM reads it in its prompt
            to_judge = with_retrieved_knowledge(to_judge, panel_knowledge(agents))
        cache = SqliteVoteCache(lakehouse.paths.state / "agent_cache.sqlite")
        with reporting_to(context.log.info):  # LLM judges can take hours: the run's log says how far they are
            result = annotate(to_judge, agents, annotator_settings.agreement(), cache=cache)
        votes, labels, consensus, stats = result.votes, result.agent_labels, result.consensus, result.stats()

    replace = {"iteration": [iteration]}
    lineage = {"iteration": iteration, "strategy": annotator_settings.strategy, "panel": panel}
    for key, frame in ((AGENT_VOTES, votes), (AGENT_LABELS, labels), (CONSENSUS_LABELS, consensus)):
        table = pa.Table.from_pandas(_with_iteration(frame, iteration), preserve_index=False)
        yield write_asset_table(context, store, key, table, partition_by=["iteration"], replace=replace,
                                upstream=upstream, lineage=lineage, metadata=_metadata(key, frame, stats))
    bad = consensus[~consensus["label"].between(0, 3) | (consensus["agreeing_agents"].map(len) == 0)] \
        if len(consensus) else consensus
    yield AssetCheckResult(asset_key=CONSENSUS_LABELS, check_name="labels_in_range", passed=len(bad) == 0,
                           metadata={"bad_rows": len(bad)})


def _metadata(key: AssetKey, frame: pd.DataFrame, stats: dict) -> dict:
    if key == CONSENSUS_LABELS:
        accepted = stats.get("accepted", len(frame))
        distribution = frame["label"].value_counts().reindex(range(4), fill_value=0) if len(frame) else None
        return {**{k: int(v) for k, v in stats.items()},
                "acceptance_rate": round(accepted / max(stats.get("pairs", 0), 1), 4),
                "label_distribution": MetadataValue.json({str(k): int(v) for k, v in distribution.items()}
                                                         if distribution is not None else {})}
    if key == AGENT_LABELS and len(frame):
        per_agent = frame.groupby("agent")["status"].value_counts().unstack(fill_value=0).reset_index()
        return {"per_agent": MetadataValue.md(per_agent.to_markdown(index=False))}
    return {}


annotation_assets = [annotate_mined_samples]

"""Evaluate stage: every model of interest on the validation and test parts of the static and evolving test
sets, as of the iteration's window end; promotion on the validation parts."""

import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
    multi_asset,
)

from assets.ingest import BRONZE_CATALOG, BRONZE_JUDGMENTS, BRONZE_QUERY_LOGS
from assets.mining import iteration_window
from assets.training import RELEVANCE_MODEL, SEED_ALIAS, SEED_MODEL
from models.evaluation import PROBABILITY_COLUMNS, markdown_table, metrics_by_set, promotion_decision, with_predictions
from models.inference import Scorer
from serm_dagster.registry import CHALLENGER, CHAMPION
from models.metrics import TEST
from models.progress import reporting_to
from serm_dagster.resources import (
    LakehouseResource,
    MiningSettings,
    MlflowResource,
    ModelSettings,
    SparkResource,
)
from serm_dagster.tables import table_name, write_asset_table
from spark_jobs.training import TestWindows, document_texts, labelled_pairs, split_test_sets

PROMOTION_CHECK = "challenger_beats_champion"
GROUP = "evaluation"
OWNERS = ["team:serm"]
EVALUATIONS = AssetKey(["gold", "evaluations"])
TEST_SCORES = AssetKey(["gold", "test_scores"])
PROMOTIONS = AssetKey(["gold", "promotions"])

EVALUATION_TYPES = pa.schema([
    ("model_version", pa.string()), ("aliases", pa.string()), ("test_set", pa.string()), ("part", pa.string()),
    ("slice_type", pa.string()), ("slice", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
    ("n_queries", pa.int64()), ("n_pairs", pa.int64()), ("dagster_run_id", pa.string()),
    ("judgments_version", pa.int64()), ("test_pairs_digest", pa.string()), ("as_of", pa.date32()),
    ("evaluated_at", pa.timestamp("us", tz="UTC")),
])


def test_windows(store, model_settings: ModelSettings, mining_settings: MiningSettings) -> TestWindows:
    """The test sets of the iteration at hand: the evolving set as of its window's end (``iteration_window``,
    the one place drift, mining and evaluation take the window from), cut into validation and test parts."""
    return TestWindows(model_settings.evolving_days, iteration_window(store, mining_settings)[1],
                       model_settings.validation_share)


_LAST_READ: dict[tuple, pd.DataFrame] = {}  # the newest test_pairs result, by what it is a function of


def test_pairs(spark, store, windows: TestWindows) -> pd.DataFrame:
    """Judged test pairs with document texts, ``test_set`` (static or evolving) and ``part``.

    They are a function of the judgments' and the catalogue's Delta versions and of ``windows``, so the newest
    read is kept: an iteration's evaluation, promotion check, promotion and record read the same pairs."""
    catalog, judgments = table_name(BRONZE_CATALOG), table_name(BRONZE_JUDGMENTS)
    key = (str(store.root), store.version(catalog), store.version(judgments), windows)
    if key not in _LAST_READ:
        documents = document_texts(store.read_spark(spark, catalog, key[1]))
        pairs = labelled_pairs(store.read_spark(spark, judgments, key[2]), documents)
        _LAST_READ.clear()
        _LAST_READ[key] = split_test_sets(pairs, windows).toPandas()
    return _LAST_READ[key].copy()


def current_digest(spark, store, model_settings: ModelSettings, mining_settings: MiningSettings) -> str:
    """The digest of the test pairs the iteration at hand is evaluated on: which stored rows to decide by."""
    return pairs_digest(test_pairs(spark, store, test_windows(store, model_settings, mining_settings)))


def models_of_interest(registry) -> dict[str, list[str]]:
    """version -> its aliases, for the champion, the challenger and the seed model."""
    versions: dict[str, list[str]] = {}
    for alias in (CHAMPION, CHALLENGER, SEED_ALIAS):
        version = registry.alias_version(alias)
        if version is not None:
            versions.setdefault(version, []).append(alias)
    return versions


@dataclass(frozen=True)
class TestPairs:
    """Test pairs with what every evaluation row on them records."""

    __test__ = False  # not a pytest class, despite its name

    pairs: pd.DataFrame
    as_of: date | None
    judgments_version: int | None
    digest: str

    @classmethod
    def read(cls, spark, store, windows: TestWindows) -> "TestPairs":
        pairs = test_pairs(spark, store, windows)
        return cls(pairs, windows.as_of, store.version(table_name(BRONZE_JUDGMENTS)), pairs_digest(pairs))


# A model's probabilities on each judged pair it was evaluated on, keyed by the pair and a digest of the document
# text it read (a changed text is scored anew). An iteration's evaluation then scores only what is new: the
# challenger, and the pairs judged since the champion and the seed model were last scored.
SCORE_KEY = ["query", "language", "doc_id", "doc_digest"]
TEST_SCORE_TYPES = pa.schema([
    ("model_version", pa.string()), ("query", pa.string()), ("language", pa.string()), ("doc_id", pa.string()),
    ("doc_digest", pa.string()), *[(column, pa.float64()) for column in PROBABILITY_COLUMNS],
    ("scored_at", pa.timestamp("us", tz="UTC")),
])


def doc_digests(texts: pd.Series) -> pd.Series:
    return texts.map(lambda text: hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16])


def stored_scores(store, versions: list[str]) -> pd.DataFrame:
    """The stored rows (``TEST_SCORE_TYPES``) of these model versions."""
    name = table_name(TEST_SCORES)
    rows = store.read_arrow(name, filters=[("model_version", "in", versions)]) if store.exists(name) else None
    if rows is None or set(rows.schema.names) != set(TEST_SCORE_TYPES.names):  # none yet, or an older layout
        return TEST_SCORE_TYPES.empty_table().to_pandas()
    return rows.to_pandas()


@dataclass(frozen=True)
class VersionScores:
    """One version's evaluation rows (``EVALUATION_TYPES``) and the pair scores computed for them now."""

    rows: pd.DataFrame
    new_scores: pd.DataFrame


def score_version(store, scorer_of: Callable[[], Scorer], tests: TestPairs, version: str, aliases: str,
                  run_id: str) -> VersionScores:
    """One version's evaluation on the test pairs: the pairs it scored before (same document text) read from
    gold/test_scores, the others scored now (``scorer_of`` loads the model only when there are any)."""
    pairs = tests.pairs.assign(doc_digest=doc_digests(tests.pairs["doc_text"]))
    stored = stored_scores(store, [version]).drop_duplicates(SCORE_KEY)
    probs = pairs[SCORE_KEY].merge(stored[[*SCORE_KEY, *PROBABILITY_COLUMNS]], on=SCORE_KEY, how="left")[
        PROBABILITY_COLUMNS].to_numpy(dtype=np.float64)
    missing = np.isnan(probs[:, 0])
    fresh = pairs[missing].drop_duplicates(SCORE_KEY)
    if len(fresh):
        with_new = scorer_of().predict_proba(fresh["query"].tolist(), fresh["doc_text"].tolist(),
                                             f"evaluating version {version}")
        fresh = fresh[SCORE_KEY].assign(**{c: with_new[:, i].astype(np.float64)
                                           for i, c in enumerate(PROBABILITY_COLUMNS)})
        probs[missing] = pairs.loc[missing, SCORE_KEY].merge(fresh, on=SCORE_KEY, how="left")[
            PROBABILITY_COLUMNS].to_numpy(dtype=np.float64)
    rows = metrics_by_set(with_predictions(tests.pairs, probs)).assign(
        model_version=version, aliases=aliases, dagster_run_id=run_id, judgments_version=tests.judgments_version,
        test_pairs_digest=tests.digest, as_of=tests.as_of, evaluated_at=pd.Timestamp.now(tz="UTC"))
    return VersionScores(rows, fresh.assign(model_version=version, scored_at=pd.Timestamp.now(tz="UTC")))


def score_table(store, scored: list[VersionScores]) -> tuple[pa.Table, dict]:
    """What gold/test_scores gets from these evaluations: each version's stored rows plus its new ones, and
    the ``replace`` that rewrites only those versions' partitions."""
    versions = sorted({v.rows["model_version"].iat[0] for v in scored})
    frames = [stored_scores(store, versions), *[v.new_scores for v in scored]]
    table = pa.Table.from_pandas(pd.concat(frames, ignore_index=True)[TEST_SCORE_TYPES.names],
                                 schema=TEST_SCORE_TYPES, preserve_index=False)
    return table, {"model_version": versions}


def evaluation_table(rows: list[pd.DataFrame]) -> pa.Table:
    return pa.Table.from_pandas(pd.concat(rows, ignore_index=True)[EVALUATION_TYPES.names], schema=EVALUATION_TYPES,
                                preserve_index=False)


def evaluation_replace(store, versions: list[str], digest: str) -> dict | None:
    """What a write of new evaluation rows replaces: those versions' rows on these test pairs (their rows on
    other pairs stay), or the whole table when it predates the current columns."""
    name = table_name(EVALUATIONS)
    if store.exists(name) and set(store.read_arrow(name).schema.names) != set(EVALUATION_TYPES.names):
        return None
    return {"model_version": sorted(versions), "test_pairs_digest": [digest]}


@multi_asset(
    name="evaluate_models",
    specs=[
        AssetSpec(EVALUATIONS, deps=[RELEVANCE_MODEL, SEED_MODEL, BRONZE_JUDGMENTS, BRONZE_CATALOG, BRONZE_QUERY_LOGS],
                  group_name=GROUP, kinds={"pytorch", "mlflow", "delta"}, owners=OWNERS, code_version="2",
                  description="NDCG@1, NDCG@4 and label accuracy of the champion, challenger and seed models on the "
                              "static test set (seen in the seed period) and the evolving one (the evolving_days "
                              "days ending at the iteration's as-of day, its window's end), each cut by query into "
                              "a validation part (promotion decides on it) and a test part (reports show it); "
                              "overall, per language family, per language and per query: one row per model "
                              "version x test pairs x set x part x slice x metric."),
        AssetSpec(TEST_SCORES, deps=[RELEVANCE_MODEL, SEED_MODEL, BRONZE_JUDGMENTS, BRONZE_CATALOG],
                  group_name=GROUP, kinds={"pytorch", "delta"}, owners=OWNERS, code_version="1",
                  description="Each evaluated model version's probabilities p0..p3 on every judged test pair it "
                              "was scored on (keyed by the pair and a digest of the document text): an evaluation "
                              "scores only the pairs a version has not scored before."),
    ],
)
def evaluations(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource,
                mlflow_resource: MlflowResource, model_settings: ModelSettings, mining_settings: MiningSettings):
    store = lakehouse.store
    registry = mlflow_resource.registry(lakehouse.paths.home)
    tests = TestPairs.read(spark.get_session(), store, test_windows(store, model_settings, mining_settings))
    interest = models_of_interest(registry)
    # a version already evaluated on these very test pairs keeps its rows: a model's scores do not change
    stored = {v: evaluation_on(store, v, tests.digest) for v in interest}
    stale = {v: a for v, a in interest.items() if stored[v] is None}
    scored = []
    for version, aliases in stale.items():
        with reporting_to(context.log.info):
            scored.append(score_version(store, lambda v=version: model_settings.scorer(registry.model_dir(v)),
                                        tests, version, ",".join(aliases), context.run_id))
        log_headlines(registry, version, scored[-1].rows)
    current = pd.concat([*[v.rows for v in scored], *[stored[v].assign(aliases=",".join(a))
                                                       for v, a in interest.items() if v not in stale]],
                        ignore_index=True)
    shown = current.assign(model=current["model_version"] + " (" + current["aliases"] + ")")
    sizes = tests.pairs.groupby(["test_set", "part"]).size()
    new_scores = sum(len(v.new_scores) for v in scored)
    metadata = {"test_pairs": MetadataValue.json({f"{t} {p}": int(n) for (t, p), n in sizes.items()}),
                "as_of": str(tests.as_of), "test_pairs_digest": tests.digest,
                "evaluated": MetadataValue.json(sorted(stale)), "pairs_scored_now": new_scores,
                "evaluation": MetadataValue.md(markdown_table(shown))}
    upstream = {table_name(BRONZE_JUDGMENTS): tests.judgments_version,
                table_name(BRONZE_CATALOG): store.version(table_name(BRONZE_CATALOG))}
    if not scored:
        for key in (EVALUATIONS, TEST_SCORES):
            yield MaterializeResult(asset_key=key, metadata={**metadata, "delta_version": store.version(table_name(key))})
        return
    yield write_asset_table(context, store, EVALUATIONS, evaluation_table([v.rows for v in scored]),
                            partition_by=["model_version"],
                            replace=evaluation_replace(store, list(stale), tests.digest), upstream=upstream,
                            metadata=metadata)
    scores, replace = score_table(store, scored)
    yield write_asset_table(context, store, TEST_SCORES, scores, partition_by=["model_version"], replace=replace,
                            upstream=upstream, metadata={"pairs_scored_now": new_scores})


def log_headlines(registry, version: str, table: pd.DataFrame) -> None:
    """The overall metrics of each test set's test part, on the version's MLflow run."""
    for row in table[(table.slice_type == "overall") & (table.part == TEST)].itertuples():
        registry.client().log_metric(registry.version_tags(version)["mlflow_run_id"],
                                     f"{row.test_set}_{row.metric.replace('@', '_at_')}", row.value)


def pairs_digest(pairs: pd.DataFrame) -> str:
    """A fingerprint of the test pairs, their parts and their labels (order-free)."""
    columns = ["test_set", "part", "query", "language", "doc_id"]
    key = pairs[[*columns, "label"]].astype(str).sort_values(columns).reset_index(drop=True)
    return hashlib.sha1(pd.util.hash_pandas_object(key, index=False).values.tobytes()).hexdigest()[:16]


def evaluation_on(store, version: str | None, digest: str) -> pd.DataFrame | None:
    """A version's stored evaluation rows on the test pairs with this digest; None when it has none."""
    if version is None or not store.exists(table_name(EVALUATIONS)):
        return None
    rows = store.read_arrow(table_name(EVALUATIONS), filters=[("model_version", "=", version)]).to_pandas()
    if "test_pairs_digest" not in rows or "part" not in rows:
        return None
    rows = rows[rows["test_pairs_digest"] == digest]
    return rows.reset_index(drop=True) if len(rows) else None


def decide_promotion(store, registry, challenger: str, champion: str | None, static_margin: float, digest: str):
    """The promotion rule on the stored evaluations of the challenger, the champion and the seed model on the
    current test pairs (``digest``), validation parts only (the blocking check and gold/promotions must decide
    alike)."""
    return promotion_decision(evaluation_on(store, challenger, digest), evaluation_on(store, champion, digest),
                              static_margin, evaluation_on(store, registry.alias_version(SEED_ALIAS), digest))


@asset_check(asset=EVALUATIONS, name=PROMOTION_CHECK, blocking=True,
             description="On the validation parts of the test sets as of the iteration's window end: the challenger "
                         "is promoted only if evolving-set NDCG@1 improves on the champion's and static-set NDCG@1 "
                         "stays within the configured margin of the seed model's; blocks gold/promotions otherwise.")
def challenger_beats_champion(context: AssetCheckExecutionContext, spark: SparkResource, lakehouse: LakehouseResource,
                              mlflow_resource: MlflowResource, model_settings: ModelSettings,
                              mining_settings: MiningSettings) -> AssetCheckResult:
    registry = mlflow_resource.registry(lakehouse.paths.home)
    challenger, champion = registry.alias_version(CHALLENGER), registry.alias_version(CHAMPION)
    if challenger is None or challenger == champion:
        return AssetCheckResult(passed=True, metadata={"decision": "nothing to promote", "champion": str(champion)})
    store = lakehouse.store
    digest = current_digest(spark.get_session(), store, model_settings, mining_settings)
    decision = decide_promotion(store, registry, challenger, champion, model_settings.static_margin, digest)
    registry.tag_version(challenger, {"promotion_decision": "promote" if decision.promote else "reject",
                                      "promotion_reason": decision.reason, "compared_with": str(champion)})
    return AssetCheckResult(passed=decision.promote, metadata={
        "challenger": challenger, "champion": str(champion), "decision": "promote" if decision.promote else "reject",
        **{k: v for k, v in decision.as_dict().items() if v is not None and k != "promote"}})


PROMOTION_TYPES = pa.schema([
    ("decided_at", pa.timestamp("us", tz="UTC")), ("dagster_run_id", pa.string()), ("challenger", pa.string()),
    ("previous_champion", pa.string()), ("champion", pa.string()), ("promoted", pa.bool_()), ("reason", pa.string()),
    ("challenger_evolving_ndcg1", pa.float64()), ("champion_evolving_ndcg1", pa.float64()),
    ("challenger_static_ndcg1", pa.float64()), ("champion_static_ndcg1", pa.float64()), ("static_margin", pa.float64()),
])


@asset(
    key=PROMOTIONS,
    deps=[EVALUATIONS],
    group_name=GROUP,
    kinds={"mlflow", "delta"},
    owners=OWNERS,
    code_version="1",
    description="Moves the 'champion' alias to the challenger once the blocking promotion check has passed, and "
                "records each decision with its numbers (validation parts; one row per decision; rejections are "
                "also tagged on the MLflow version by the check).",
)
def promotions(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource,
               mlflow_resource: MlflowResource, model_settings: ModelSettings,
               mining_settings: MiningSettings) -> MaterializeResult:
    store = lakehouse.store
    registry = mlflow_resource.registry(lakehouse.paths.home)
    challenger, champion = registry.alias_version(CHALLENGER), registry.alias_version(CHAMPION)
    if challenger is None or challenger == champion:
        decision = None
        reason = "no challenger: the champion is the newest model"
    else:
        digest = current_digest(spark.get_session(), store, model_settings, mining_settings)
        decision = decide_promotion(store, registry, challenger, champion, model_settings.static_margin, digest)
        reason = decision.reason
    promoted = bool(decision and decision.promote)
    if promoted:
        registry.set_alias(CHAMPION, challenger)
        registry.tag_version(challenger, {"promotion": f"champion after {champion}"})
    numbers = decision.as_dict() if decision else {}
    row = pa.Table.from_pylist([{
        "decided_at": pd.Timestamp.now(tz="UTC"), "dagster_run_id": context.run_id, "challenger": challenger,
        "previous_champion": champion, "champion": challenger if promoted else champion, "promoted": promoted,
        "reason": reason, "challenger_evolving_ndcg1": numbers.get("challenger_evolving"),
        "champion_evolving_ndcg1": numbers.get("champion_evolving"),
        "challenger_static_ndcg1": numbers.get("challenger_static"),
        "champion_static_ndcg1": numbers.get("champion_static"), "static_margin": model_settings.static_margin,
    }], schema=PROMOTION_TYPES)
    history = store.read_arrow(table_name(PROMOTIONS)) if store.exists(table_name(PROMOTIONS)) else \
        PROMOTION_TYPES.empty_table()
    return write_asset_table(context, store, PROMOTIONS, pa.concat_tables([history.select(PROMOTION_TYPES.names)
                                                                           .cast(PROMOTION_TYPES), row]),
                             upstream={table_name(EVALUATIONS): store.version(table_name(EVALUATIONS))},
                             metadata={"promoted": promoted, "champion": str(row["champion"][0]), "reason": reason})


evaluation_assets = [evaluations, promotions]
evaluation_checks = [challenger_beats_champion]

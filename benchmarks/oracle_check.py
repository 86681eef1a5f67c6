"""Does a stream leave room for SERM? The ceiling check behind the comparison's target.

Retrains a home's seed model window by window with the simulator's TRUE labels, using an iteration's
recipe (``ModelSettings.training_config(warm_start=True)``: seed set + every window's labels so far), and
prints evolving and static NDCG@1 after each window. If even true labels cannot lift the seed model by
the comparison's target (3 points of evolving NDCG@1), no annotator or miner can: the comparison then
measures the stream, not SERM. It also prints the seed model's evolving NDCG@1 per kind of drift term
in the query (from the simulator's manifest), which shows whether drift costs the model anything.

Needs a simulated home whose seed model is trained (``make demo`` or ``serm evolve`` made one):

    SERM_HOME=.serm .venv/bin/python benchmarks/oracle_check.py [--pairs 650] [--mined] [--accepted] [--control]

``--mined``: true labels on the pairs each iteration mined (``gold/mined_samples``) instead of random
pairs of the window: every mined pair, whenever it was first shown and whether or not a test set judges it,
since that is what perfect annotators would give SERM (on a replay of a small judged set such as ESCI's most
mined pairs belong to test queries), and again with only the mined pairs no test set judges (what perfect
labels teach beyond the judged queries); random pairs leave every test pair out. ``--accepted``: where
the shortfall of a SERM arm's labels comes from: retrain on the pairs its panel accepted
(``gold/consensus_labels``, those no test set judges) with their true labels, then with the panel's
labels. True labels there against true labels on every mined pair is what the pairs left out cost;
the panel's labels against true ones on the same pairs is what its wrong labels cost. ``--control``: also
retrain on the seed set alone, to see what more training gives;
``--set FIELD=VALUE`` (repeatable): another retraining recipe, e.g. ``--set retrain_frozen_layers=0``.
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
from pyspark.sql import functions as F

from assets.evaluation import test_pairs
from assets.ingest import BRONZE_CATALOG
from assets.mining import MINED_SAMPLES
from assets.training import CONSENSUS_LABELS, SEED_ALIAS, TRAINING_SETS
from models.evaluation import evaluate_on_test_sets, headline, score_pairs
from models.inference import Scorer
from models.metrics import evaluate
from models.relevance import RelevanceModel
from models.training import train
from serm_dagster.evolution import plan_windows
from serm_dagster.runner import landing_days
from serm_dagster.registry import Registry
from serm_dagster.resources import ModelSettings, SparkResource
from serm_dagster.settings import SermPaths
from serm_dagster.storage import DeltaStore
from serm_dagster.tables import table_name
from spark_jobs.training import TestWindows, document_texts, labelled_pairs

KEY = ["query", "language", "doc_id"]


def drift_kinds(manifest: dict, query: str) -> str:
    """The kinds of drift terms ("new_brand", "new_type", "slang") a query contains, or "none"."""
    text = query.lower()
    kinds = {event["kind"] for event in manifest["drift_events"] if event["term"].lower() in text}
    return "+".join(sorted(kinds)) or "none"


def ndcg1_by_drift(scorer: Scorer, evolving: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    scored = score_pairs(scorer, evolving).assign(drift=lambda f: f["query"].map(lambda q: drift_kinds(manifest, q)))
    table = evaluate(scored, slices=("drift",))
    return table[table["metric"] == "ndcg@1"].set_index("slice")[["value", "n_queries"]].round(1)


def truth_pairs(spark, paths: SermPaths, store: DeltaStore) -> pd.DataFrame:
    """Every logged pair with its true label and document text, the query normalised as ingestion does."""
    truth = spark.read.parquet(str(paths.home / "simulator" / "truth" / "truth.parquet")) \
        .withColumn("split", F.lit("oracle")).withColumn("ts", F.to_timestamp("first_seen"))
    documents = document_texts(store.read_spark(spark, table_name(BRONZE_CATALOG)))
    return labelled_pairs(truth, documents).withColumn("day", F.to_date("ts").cast("string")).toPandas()


def true_labels(mined, number: int, days: list, truth, unjudged, held_out: set, arm: str, pairs: int) -> pd.DataFrame:
    """Window ``number``'s true-labelled pairs: the mined ones (every one, or ``arm`` "... off the test sets": those
    no test set judges), or ``pairs`` random ones of the window that no test set judges."""
    if mined is None:
        window = unjudged[unjudged["day"].isin(days)]
        return window.sample(min(pairs, len(window)), random_state=number)[[*KEY, "doc_text", "label"]]
    picked = mined.loc[mined["iteration"] == number, KEY].merge(truth.drop_duplicates(KEY), on=KEY)
    tested = [tuple(k) in held_out for k in picked[KEY].to_numpy()]
    if arm.endswith("off the test sets"):
        picked = picked[[not t for t in tested]]
    else:
        print(f"window {number}: {len(picked)} mined pairs with a true label, {sum(tested)} of them test pairs")
    return picked[[*KEY, "doc_text", "label"]]


def accepted_labels(consensus: pd.DataFrame, number: int, truth, held_out: set, arm: str) -> pd.DataFrame:
    """Window ``number``'s accepted pairs no test set judges, with their true labels or (``arm`` "... panel labels")
    the panel's."""
    accepted = consensus.loc[consensus["iteration"] == number, [*KEY, "label"]].rename(columns={"label": "panel"})
    accepted = accepted[[tuple(k) not in held_out for k in accepted[KEY].to_numpy()]]
    picked = accepted.merge(truth.drop_duplicates(KEY)[[*KEY, "doc_text", "label"]], on=KEY)
    if arm.endswith("panel labels"):
        picked["label"] = picked["panel"].astype(int)
    else:
        print(f"window {number}: {len(picked)} accepted pairs, {(picked['panel'] == picked['label']).mean():.1%} "
              "of the panel's labels right")
    return picked[[*KEY, "doc_text", "label"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=650, help="true-labelled pairs added per window")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--window-days", type=int, default=3)
    parser.add_argument("--mined", action="store_true", help="label the mined pairs instead of random ones")
    parser.add_argument("--accepted", action="store_true",
                        help="also retrain on the accepted pairs, with true and with the panel's labels")
    parser.add_argument("--control", action="store_true", help="also retrain on the seed set alone")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a ModelSettings field for the retraining recipe, e.g. retrain_frozen_layers=0")
    args = parser.parse_args()

    paths = SermPaths.from_env()
    overrides = dict(item.split("=", 1) for item in args.set)
    store, registry, settings = DeltaStore(paths.lakehouse), Registry.under(paths.home), ModelSettings(**overrides)
    seed_version = registry.alias_version(SEED_ALIAS)
    if seed_version is None:
        raise SystemExit(f"no seed model in {paths.home}: run `make demo` or `serm evolve` first")
    manifest = json.loads((paths.home / "simulator" / "manifest.json").read_text())
    spark = SparkResource().get_session()
    tests = test_pairs(spark, store, TestWindows(settings.evolving_days))
    held_out = set(map(tuple, tests[KEY].to_numpy()))
    truth = truth_pairs(spark, paths, store)
    unjudged = truth[[tuple(k) not in held_out for k in truth[KEY].to_numpy()]]
    training_sets = store.read_arrow(table_name(TRAINING_SETS)).to_pandas()
    seed_set = training_sets[training_sets["source"] == "seed"].drop_duplicates(KEY)[[*KEY, "doc_text", "label"]]
    windows = plan_windows(landing_days(paths), args.iterations, args.window_days).windows
    mined = store.read_arrow(table_name(MINED_SAMPLES)).to_pandas() if args.mined else None
    consensus = store.read_arrow(table_name(CONSENSUS_LABELS)).to_pandas() if args.accepted else None

    def evaluated(model, tokenizer) -> str:
        table = evaluate_on_test_sets(Scorer(model, tokenizer, **settings.scorer_options()), tests)
        return f"evolving NDCG@1 {headline(table, 'evolving'):.2f}, static {headline(table, 'static'):.2f}"

    model, tokenizer = RelevanceModel.load(registry.model_dir(seed_version))
    print(f"seed model v{seed_version}: {evaluated(model, tokenizer)}")
    print("evolving NDCG@1 per kind of drift term in the query:")
    print(ndcg1_by_drift(Scorer(model, tokenizer, **settings.scorer_options()),
                         tests[tests["test_set"] == "evolving"], manifest).to_string())

    config = settings.training_config(progress=False, warm_start=True)
    arms = ["true labels"] + (["true labels off the test sets"] if mined is not None else []) + \
        (["accepted pairs, true labels", "accepted pairs, panel labels"] if consensus is not None else []) + \
        (["seed set alone"] if args.control else [])
    for arm in arms:
        model, tokenizer = RelevanceModel.load(registry.model_dir(seed_version))
        added = []
        for number, days in enumerate(windows, start=1):
            if arm.startswith("true labels"):
                added.append(true_labels(mined, number, days, truth, unjudged, held_out, arm, args.pairs))
            elif arm.startswith("accepted pairs"):
                added.append(accepted_labels(consensus, number, truth, held_out, arm))
            started = time.perf_counter()
            train(model, tokenizer, pd.concat([seed_set, *added], ignore_index=True), config)
            print(f"{arm}, window {number} ({days[0]}..{days[-1]}, {sum(map(len, added))} labels): "
                  f"{evaluated(model, tokenizer)} ({time.perf_counter() - started:.0f}s)", flush=True)


if __name__ == "__main__":
    main()

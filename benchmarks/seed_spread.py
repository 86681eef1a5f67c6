"""How far does training noise move a stream's test parts? The seed model, trained again from the backbone.

Trains the seed model's recipe (``ModelSettings.training_config()``) on a home's seed judgments once per epoch
count and training seed, and prints NDCG@1 on the validation and test parts of both test sets. When one training
seed moves a part by more than the gap a comparison reports, that comparison cannot be read on this stream, and
no recipe change will make it readable: the test sets are too small.

    SERM_HOME=.serm .venv/bin/python benchmarks/seed_spread.py [--epochs 4,8] [--seeds 13,14]

Needs a home whose training sets hold the seed judgments (``serm evolve`` or ``make demo`` made one).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from assets.evaluation import test_pairs
from assets.training import TRAINING_SETS
from models.evaluation import evaluate_on_test_sets, headline
from models.inference import Scorer
from models.relevance import RelevanceModel
from models.training import train
from serm_dagster.cli import quiet_libraries
from serm_dagster.resources import ModelSettings, SparkResource
from serm_dagster.settings import SermPaths
from serm_dagster.storage import DeltaStore
from serm_dagster.tables import table_name
from spark_jobs.training import TestWindows

KEY = ["query", "language", "doc_id"]
PARTS = [(test_set, part) for test_set in ("static", "evolving") for part in ("validation", "test")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", default="4,8", help="epoch counts, comma-separated")
    parser.add_argument("--seeds", default="13,14", help="training seeds, comma-separated")
    args = parser.parse_args()
    quiet_libraries()
    paths, settings = SermPaths.from_env(), ModelSettings()
    store = DeltaStore(paths.lakehouse)
    tests = test_pairs(SparkResource().get_session(), store, TestWindows(settings.evolving_days))
    sets = store.read_arrow(table_name(TRAINING_SETS)).to_pandas()
    seed_set = sets[sets["source"] == "seed"].drop_duplicates(KEY)[[*KEY, "doc_text", "label"]]
    print(f"{len(seed_set)} seed pairs, {len(tests)} test pairs; NDCG@1 per part:")
    print(f"{'epochs':>6} {'seed':>5} " + " ".join(f"{f'{s} {p}':>19}" for s, p in PARTS) + "  seconds")
    for epochs in map(int, args.epochs.split(",")):
        for seed in map(int, args.seeds.split(",")):
            started = time.perf_counter()
            model, tokenizer = RelevanceModel.from_backbone(settings.backbone, dropout=settings.dropout,
                                                            max_length=settings.max_length)
            train(model, tokenizer, seed_set, replace(settings.training_config(progress=False), epochs=epochs, seed=seed))
            table = evaluate_on_test_sets(Scorer(model, tokenizer, **settings.scorer_options()), tests)
            print(f"{epochs:6d} {seed:5d} " + " ".join(f"{headline(table, s, part=p):19.2f}" for s, p in PARTS)
                  + f"  {time.perf_counter() - started:7.0f}", flush=True)


if __name__ == "__main__":
    main()

"""The multi-agent sample miner at stream scale (a benchmark, not a test).

    .venv/bin/python benchmarks/bench_miner.py [--window-rows 1000000] [--home DIR] [--keep]

Simulates a stream whose newest window holds about ``--window-rows`` logged rows (one row per query
and shown document), ingests it through the real pipeline (landing files -> validated bronze Delta
tables), trains a seed model on the seed judgments through the ``seed_model`` asset, then runs the
miner over the window exactly as the ``gold/mined_samples`` asset does (``assets.mining.mine_window``)
and prints, per stage, seconds and logged rows per second: the behavioural agents in Spark (PBM click
model by EM, user feedback, click model), the model agents (the serving model's MC-dropout and
entropy over the candidates plus a uniform sample) and the union with the budget; the fraction of
logged pairs the model had to score; and, with the simulator's hidden truth (read only here), the
serving model's error rate on the mined pairs against random pairs of the window, per agent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import simulate_window, use_home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window-rows", type=int, default=1_000_000, help="logged rows in the mined window")
    parser.add_argument("--window-days", type=int, default=3)
    parser.add_argument("--seed-days", type=int, default=2)
    parser.add_argument("--seed-judgments", type=int, default=1500)
    parser.add_argument("--home", type=Path, default=None, help="SERM_HOME to use (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary SERM_HOME")
    args = parser.parse_args()

    home = use_home(args.home, prefix="serm-bench-miner-")
    from assets.mining import iteration_window, mine_window
    from models.inference import Scorer
    from serm_dagster.registry import CHAMPION, Registry
    from serm_dagster.resources import LakehouseResource, MiningSettings, SparkResource
    from serm_dagster.settings import SermPaths

    paths = SermPaths.from_env(home).ensure()
    figures: list[tuple[str, float, int | None]] = []

    registry = Registry.under(home)
    reuse = args.home is not None and registry.alias_version(CHAMPION) is not None
    if reuse:  # a home from an earlier run: mine it again, without simulating, ingesting and training
        print(f"reusing {home}: its stream, lakehouse and seed model")
        store = LakehouseResource(home=str(home)).store
    else:
        store = prepare(home, paths, args, figures)
    scorer = Scorer.from_folder(registry.model_dir(registry.alias_version(CHAMPION)), batch_size=64)
    mining = MiningSettings()
    start, end = iteration_window(store, mining)
    session = SparkResource().get_session()
    outcome = mine_window(session, store, scorer, mining.miner(), start, end)
    counts, seconds = outcome.counts, outcome.seconds

    print(f"\nSERM_HOME {home}; machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"window {start}..{end}: {counts['logged_rows']:,} logged rows, {counts['logged_pairs']:,} distinct pairs\n")
    print(f"{'stage':42} {'seconds':>8} {'rows/s':>10}")
    for name, took, rows in figures:
        print(f"{name:42} {took:8.1f} {(f'{rows / took:,.0f}' if rows else ''):>10}")
    for stage, label in (("behavioural_agents", "behavioural agents (Spark: PBM EM + rules)"),
                         ("model_agents", "model agents (MC dropout + entropy)"),
                         ("union_and_budget", "union + budget (Spark)")):
        print(f"{label:42} {seconds[stage]:8.1f} {counts['logged_rows'] / seconds[stage]:10,.0f}")
    mining_seconds = sum(seconds.values())
    print(f"{'miner, all stages':42} {mining_seconds:8.1f} {counts['logged_rows'] / mining_seconds:10,.0f}")
    print(f"\nbehavioural candidates {counts['behavioural_candidates']:,}; model scored {counts['model_scored_pairs']:,} "
          f"pairs = {counts['fraction_scored_by_model']:.1%} of logged pairs "
          f"({counts['model_scored_pairs'] / seconds['model_agents']:.0f} pairs/s with {mining.mc_passes} MC passes)")
    print(f"union {counts['union']:,} pairs, selected {counts['selected']:,} (budget {mining.budget}); "
          f"flagged per agent {outcome.flagged}")

    enrichment(home, store, scorer, outcome.selected.toPandas(), start)
    if args.home is None and not args.keep:
        shutil.rmtree(home, ignore_errors=True)


def prepare(home: Path, paths, args, figures: list):
    """Simulate the stream, ingest it and train the seed model, timing each step into ``figures``."""
    from assets.training import SEED_MODEL, TRAINING_SETS
    from serm_dagster.definitions import default_resources
    from serm_dagster.runner import ingest_landing, materialize_assets
    from serm_dagster.resources import LakehouseResource, ModelSettings

    started = time.perf_counter()
    simulate_window(home, args.window_rows, args.window_days, args.seed_days, args.seed_judgments)
    figures.append(("simulate", time.perf_counter() - started, None))
    print(f"simulated in {figures[-1][1]:.0f}s", flush=True)

    started = time.perf_counter()
    ingest_landing(paths, echo=lambda *_: None)
    store = LakehouseResource(home=str(home)).store
    total_rows = store.count_rows("bronze/query_logs")
    figures.append(("ingest (landing -> bronze + silver)", time.perf_counter() - started, total_rows))
    print(f"ingested {total_rows:,} rows in {figures[-1][1]:.0f}s", flush=True)

    started = time.perf_counter()
    resources = {**default_resources(), "lakehouse": LakehouseResource(home=str(home)),
                 "model_settings": ModelSettings(epochs=2, max_length=48, encoder_lr=1e-4)}
    # the seed model alone (seed_model_job would evaluate it too, which is not what this figure measures)
    result = materialize_assets([TRAINING_SETS, SEED_MODEL], resources, {"serm/reason": "bench_miner: seed model"})
    assert result.success, f"the seed model's run {result.run_id} failed"
    figures.append(("seed model (2 epochs)", time.perf_counter() - started, None))
    print(f"seed model trained in {figures[-1][1]:.0f}s", flush=True)

    return store


def enrichment(home: Path, store, scorer, mined: pd.DataFrame, window_start) -> None:
    """The serving model's error rate (|f - true label| >= 1) on mined pairs against random window pairs."""
    truth = pd.read_parquet(home / "simulator" / "truth" / "truth.parquet")
    truth["query"] = truth["query"].map(lambda q: " ".join(q.lower().split()))
    truth = truth.drop_duplicates(["query", "language", "doc_id"])[["query", "language", "doc_id", "label"]]
    catalog = store.read_arrow("bronze/catalog").to_pandas()
    catalog["doc_text"] = catalog["title"] + ". " + catalog["description"].fillna("")
    window = store.read_arrow("silver/impressions", filters=[("date", ">=", window_start)],
                              columns=["query", "language", "doc_id"]).to_pandas().drop_duplicates()

    def wrong(pairs: pd.DataFrame) -> pd.DataFrame:
        frame = pairs.merge(catalog[["doc_id", "doc_text"]], on="doc_id").merge(truth, on=["query", "language", "doc_id"])
        scores = scorer.score(frame["query"].tolist(), frame["doc_text"].tolist())
        return frame.assign(wrong=np.abs(scores - frame["label"].to_numpy()) >= 1.0)

    random_pairs = wrong(window.sample(min(2000, len(window)), random_state=0))
    mined_pairs = wrong(mined[["query", "language", "doc_id", "agents"]])
    base = random_pairs["wrong"].mean()
    print(f"\nserving model error rate: random window pairs {base:.3f} (n={len(random_pairs)}), "
          f"mined {mined_pairs['wrong'].mean():.3f} (n={len(mined_pairs)}), "
          f"enrichment {mined_pairs['wrong'].mean() / base:.2f}")
    for agent in ("user_feedback", "click_model", "disagreement", "uncertainty"):
        flagged = mined_pairs[mined_pairs["agents"].map(lambda names: agent in names)]
        if len(flagged):
            print(f"  {agent:14} n={len(flagged):5d} error {flagged['wrong'].mean():.3f} "
                  f"enrichment {flagged['wrong'].mean() / base:.2f}")


if __name__ == "__main__":
    main()

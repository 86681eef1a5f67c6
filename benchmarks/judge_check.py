"""The embedded panel on a stream's window, against the stream's hidden truth: per judge coverage and
accuracy, and what the two-level agreement accepts.

    python benchmarks/judge_check.py --home .serm [--window-days 3] [--sample 1500] [--set features.min_accuracy=0.85]

Reads an ingested SERM_HOME (``serm simulate ...`` then ``serm ingest``; any stream with
``simulator/truth/truth.parquet``). The panel is built as the annotation asset builds it (seed
judgments with the seed period's behaviour, the window's clicks, the glossary as of the window's end)
and judges ``--sample`` logged pairs of the newest window: a random sample by default, or
``--mined`` the newest iteration's mined pairs when the home has them (``--iteration N``: iteration N's, as of
its window's end). Truth is read here only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from assets.annotation import embedded_panel
from assets.ingest import BRONZE_CATALOG
from assets.mining import BEHAVIOUR, MINED_SAMPLES, iteration_window, pair_behaviour
from models.agents import annotate
from models.agents.embedded import normalize_query, pairs_to_judge
from serm_dagster.resources import AnnotatorSettings, MiningSettings, build_spark_session
from serm_dagster.settings import SermPaths
from serm_dagster.storage import DeltaStore
from serm_dagster.tables import table_name
from spark_jobs.mining import PAIR


def truth(home: Path) -> pd.DataFrame:
    frame = pd.read_parquet(home / "simulator" / "truth" / "truth.parquet")
    frame["query"] = frame["query"].map(normalize_query)
    return frame.drop_duplicates(PAIR)[[*PAIR, "label"]].rename(columns={"label": "true_label"})


def judged_pairs(session, store, window_days: int, sample: int, mined: bool, seed: int,
                 iteration: int | None = None) -> tuple[pd.DataFrame, tuple]:
    if mined and store.exists(table_name(MINED_SAMPLES)):
        frame = store.read_arrow(table_name(MINED_SAMPLES)).to_pandas()
        frame = frame[frame["iteration"] == (frame["iteration"].max() if iteration is None else iteration)]
        if frame.empty:
            raise SystemExit(f"no mined pairs of iteration {iteration} in {store.root}")
        return frame, (frame["window_start"].min(), frame["window_end"].max())
    start, end = iteration_window(store, MiningSettings(window_days=window_days))
    _, _, pairs = pair_behaviour(session, store, start, end)
    frame = pairs.toPandas()
    return frame.sample(min(sample, len(frame)), random_state=seed), (start, end)


def options(pairs: list[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for item in pairs:
        key, _, value = item.partition("=")
        judge, _, option = key.partition(".")
        out.setdefault(judge, {})[option] = float(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--window-days", type=int, default=3)
    parser.add_argument("--sample", type=int, default=1500)
    parser.add_argument("--mined", action="store_true")
    parser.add_argument("--iteration", type=int, default=None, help="with --mined: this iteration (default: the newest)")
    parser.add_argument("--set", action="append", default=[], help="JUDGE.OPTION=VALUE, e.g. features.min_accuracy=0.85")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = SermPaths.from_env(args.home)
    store = DeltaStore(paths.lakehouse)
    session = build_spark_session("local[2]", app_name="judge-check")
    started = time.perf_counter()
    frame, (start, end) = judged_pairs(session, store, args.window_days, args.sample, args.mined, args.seed, args.iteration)
    catalog = store.read_arrow(table_name(BRONZE_CATALOG)).to_pandas()
    settings = AnnotatorSettings(judge_options=options(args.set))
    frame["query"] = frame["query"].map(normalize_query)
    to_judge = pairs_to_judge(frame[[*PAIR, *BEHAVIOUR]], catalog, behaviour=frame[[*PAIR, *BEHAVIOUR]])
    agents, calibration = embedded_panel(session, store, catalog, settings, end, targets=to_judge)
    built = time.perf_counter() - started
    result = annotate(to_judge, agents, settings.agreement())
    known = truth(paths.home)
    labels = result.agent_labels.merge(known, on=PAIR, how="left")
    consensus = result.consensus.merge(known, on=PAIR, how="left")
    print(f"window {start}..{end}: {len(frame)} pairs; panel built in {built:.0f}s, judged in "
          f"{time.perf_counter() - started - built:.0f}s")
    for name, cal in calibration.items():
        if name != "catalogue_knowledge":
            print(f"  {name}: gate {cal['thresholds']} out-of-fold accuracy {cal['oof_accuracy']} coverage "
                  f"{cal['oof_coverage']}, for the estimated label mix {cal['target_prior']}")
    print(f"  knowledge: {calibration.get('catalogue_knowledge', {}).get('vocabulary_keys')}")
    print(f"{'judge':<10} {'coverage':>9} {'accuracy':>9}")
    for agent, part in labels.groupby("agent"):
        voted = part.dropna(subset=["label"])
        accuracy = (voted["label"] == voted["true_label"]).mean() if len(voted) else float("nan")
        print(f"{agent:<10} {len(voted) / len(frame):>9.1%} {accuracy:>9.1%}")
    right = (consensus["label"] == consensus["true_label"]).mean() if len(consensus) else float("nan")
    alone = consensus[consensus["n_voters"] == 1]
    alone_right = (alone["label"] == alone["true_label"]).mean() if len(alone) else float("nan")
    print(f"consensus: accepted {len(consensus) / len(frame):.1%} of pairs, right {right:.1%} (one judge alone: "
          f"{len(alone) / len(frame):.1%}, right {alone_right:.1%}); "
          f"truth label mix {known.merge(frame[PAIR], on=PAIR)['true_label'].value_counts(normalize=True).round(2).to_dict()}")
    session.stop()


if __name__ == "__main__":
    main()

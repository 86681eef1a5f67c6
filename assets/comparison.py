"""The paper's comparison on one stream: every arm's served models on one held-out set, SERM minus
self-training and minus the seed model with paired bootstrap intervals, the table and the chart.

``serm evolve --compare`` (``serm_dagster.evolution.compare``) runs the arms, each in its own data folder
(``arm_paths``); ``gold/evolution_report`` reads them back here. Plain functions over the arms' Delta
tables and registries, and the asset that writes their result.
"""

import base64
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from assets.evaluation import (EVALUATIONS, TEST_SCORES, TestPairs, evaluation_on, evaluation_replace, evaluation_table,
                               score_table, score_version)
from assets.iterations import ITERATIONS
from models.evaluation import QUERY_SLICE
from models.metrics import TEST, paired_bootstrap
from serm_dagster.registry import Registry
from serm_dagster.resources import LakehouseResource, ModelSettings, SparkResource
from serm_dagster.settings import SermPaths
from serm_dagster.storage import DeltaStore
from serm_dagster.tables import table_name, write_asset_table
from spark_jobs.training import TestWindows

ARMS = ("seed", "self-training", "serm")
EVOLUTION_REPORT = AssetKey(["gold", "evolution_report"])


def arm_paths(paths: SermPaths, arm: str, seed: int, seeds: tuple[int, ...]) -> SermPaths:
    """An arm's data folder. The SERM arm of the first seed is the main folder itself (what `dagster dev`
    shows); every other arm gets ``compare/seed<k>/<arm>``, reading the main folder's landing files through
    a link: the same stream."""
    if arm == "serm" and seed == seeds[0]:
        return paths
    home = paths.home / "compare" / f"seed{seed}" / arm
    home.mkdir(parents=True, exist_ok=True)
    link = home / "landing"
    if not link.exists():
        link.symlink_to(paths.landing.resolve(), target_is_directory=True)
    return SermPaths.from_env(home).ensure()


def compared_seeds(paths: SermPaths) -> tuple[int, ...]:
    """The training seeds of the last ``compare``, in its order (the first one's SERM arm is the main folder)."""
    seeds_file = paths.home / "compare" / "seeds.json"
    return tuple(json.loads(seeds_file.read_text())) if seeds_file.exists() else ()


@dataclass(frozen=True)
class ArmRun:
    """One arm of one training seed: its data folder and the version serving after each iteration (0 = the
    seed model)."""

    seed: int
    arm: str
    paths: SermPaths
    served: list[tuple[int, str]]
    last_window_end: date


def arm_runs(paths: SermPaths, seeds: tuple[int, ...]) -> list[ArmRun]:
    """The evolving arms run so far (those with a ``gold/iterations`` record)."""
    runs = []
    for seed in seeds:
        for arm in ("serm", "self-training"):
            home = arm_paths(paths, arm, seed, seeds)
            store = DeltaStore(home.lakehouse)
            if not store.exists(table_name(ITERATIONS)):
                continue
            history = store.read_arrow(table_name(ITERATIONS)).to_pandas().sort_values("iteration")
            served = [(0, str(history["model_before"].iat[0]))] + \
                [(int(r.iteration), str(r.model_after)) for r in history.itertuples()]
            runs.append(ArmRun(seed, arm, home, served, history["window_end"].max()))
    return runs


def final_evaluations(run: ArmRun, windows: TestWindows, session, model_settings, run_id: str) -> dict:
    """version -> its evaluation rows on this home's test pairs as of ``windows.as_of``: stored rows where the
    version was scored on these very pairs (a version's scores on given pairs never change), else evaluated now
    (scoring only the pairs it has not scored before) and stored in the home's gold/evaluations and
    gold/test_scores like any other evaluation."""
    store, registry = DeltaStore(run.paths.lakehouse), Registry.under(run.paths.home)
    tests = TestPairs.read(session, store, windows)
    found, scored = {}, []
    for version in dict.fromkeys(v for _, v in run.served):
        found[version] = evaluation_on(store, version, tests.digest)
        if found[version] is None:
            scored.append(score_version(store, lambda v=version: model_settings.scorer(registry.model_dir(v)),
                                        tests, version, "", run_id))
            found[version] = scored[-1].rows
    if scored:
        lineage = {"dagster_run_id": run_id, "written_by": table_name(EVOLUTION_REPORT),
                   "test_pairs_digest": tests.digest}
        store.write(table_name(EVALUATIONS), evaluation_table([v.rows for v in scored]), partition_by=["model_version"],
                    replace=evaluation_replace(store, [v.rows["model_version"].iat[0] for v in scored], tests.digest),
                    lineage={**lineage, "asset_key": table_name(EVALUATIONS)})
        scores, replace = score_table(store, scored)
        store.write(table_name(TEST_SCORES), scores, partition_by=["model_version"], replace=replace,
                    lineage={**lineage, "asset_key": table_name(TEST_SCORES)})
    return found


REPORT_COLUMNS = ["seed", "arm", "iteration", "model_version", "test_set", "part", "slice_type", "slice", "metric",
                  "value", "n_queries", "as_of", "test_pairs_digest"]


def comparison_rows(paths: SermPaths, seeds: tuple[int, ...], session, model_settings,
                    run_id: str = "comparison") -> pd.DataFrame:
    """Per seed, arm, iteration (0 = the seed model), test set and slice (overall, family, language, query):
    NDCG@1, NDCG@4 and accuracy of the model serving after that iteration, all on ONE held-out set: the test
    parts as of the stream's last window end. Earlier champions, evaluated as of their own windows, are
    scored on it here (see ``final_evaluations``)."""
    runs = arm_runs(paths, seeds)
    if not runs:
        return pd.DataFrame(columns=REPORT_COLUMNS)
    windows = TestWindows(model_settings.evolving_days, max(r.last_window_end for r in runs),
                          model_settings.validation_share)
    rows = []
    for run in runs:
        evaluated = final_evaluations(run, windows, session, model_settings, run_id)
        shown = [(run.arm, i, v) for i, v in run.served]
        if run.arm == "serm":  # the frozen seed model serves at every iteration of its arm
            shown += [("seed", i, run.served[0][1]) for i, _ in run.served]
        for arm, iteration, version in shown:
            table = evaluated[version]
            rows.append(table[table["part"] == TEST].assign(seed=run.seed, arm=arm, iteration=iteration))
    return pd.concat(rows, ignore_index=True)[REPORT_COLUMNS]


BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 2000, 0
CONTRASTS = (("serm", "self-training"), ("serm", "seed"))
DIFFERENCE_COLUMNS = ["contrast", "mean", "low", "high", "n_queries", "seeds"]


def paired_differences(rows: pd.DataFrame) -> pd.DataFrame:
    """SERM minus self-training and SERM minus the seed model, NDCG@1 on the evolving test part after the last
    iteration: the mean over training seeds, with a paired bootstrap 95% interval over queries (per query the
    difference averaged over seeds; queries resampled with replacement, 2,000 times, a fixed rng seed)."""
    last = rows[(rows["slice_type"] == QUERY_SLICE) & (rows["test_set"] == "evolving") & (rows["metric"] == "ndcg@1")
                & (rows["iteration"] == rows["iteration"].max())]
    by_arm = last.pivot_table(index=["seed", "slice"], columns="arm", values="value", aggfunc="first")
    out = []
    for arm, baseline in CONTRASTS:
        if arm not in by_arm or baseline not in by_arm:
            continue
        per_query = (by_arm[arm] - by_arm[baseline]).dropna().groupby(level="slice").mean()
        stats = paired_bootstrap(per_query, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
        out.append({"contrast": f"{arm} - {baseline}", **stats,
                    "seeds": int(by_arm[[arm, baseline]].dropna().index.get_level_values("seed").nunique())})
    return pd.DataFrame(out, columns=DIFFERENCE_COLUMNS)


def pooled_reports(reports: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Several replays' report rows (per replay name, its ``comparison_rows``) as one, for ``paired_differences``
    over all their evolving test queries: each query slice is named by its replay, so a (replay, query) is one
    unit. Replays of one small judged set under other replay seeds score other queries (benchmarks/pool_compare.py)."""
    iterations = {name: int(rows["iteration"].max()) for name, rows in reports.items()}
    if len(set(iterations.values())) > 1:
        raise ValueError(f"the replays ran different numbers of iterations: {iterations}")
    frames = []
    for name, rows in reports.items():
        queries = rows["slice_type"] == QUERY_SLICE
        frames.append(rows.assign(slice=rows["slice"].astype(str).where(~queries, f"{name}: " + rows["slice"].astype(str))))
    return pd.concat(frames, ignore_index=True)


def differences_text(differences: pd.DataFrame) -> str:
    """One line per contrast, as `serm report` prints it."""
    return "\n".join(f"{r.contrast}: {r.mean:+.2f} NDCG@1 points (95% CI {r.low:+.2f} .. {r.high:+.2f}; "
                     f"{r.n_queries} queries, {r.seeds} seeds; evolving test part, last iteration)"
                     for r in differences.itertuples()) or "no paired difference: an arm is missing"


def summary_table(rows: pd.DataFrame, slice_type: str = "overall") -> pd.DataFrame:
    """The paper's layout: one row per arm and iteration; columns test set x metric, mean ± std over seeds."""
    part = rows[rows["slice_type"] == slice_type]
    stats = part.groupby(["arm", "iteration", "slice", "test_set", "metric"])["value"].agg(["mean", "std", "count"])
    stats = stats.reset_index()
    stats["cell"] = [f"{m:.1f}" + (f" ± {s:.1f}" if n > 1 and pd.notna(s) else "")
                     for m, s, n in zip(stats["mean"], stats["std"], stats["count"])]
    table = stats.pivot_table(index=["arm", "iteration", "slice"], columns=["test_set", "metric"], values="cell",
                              aggfunc="first")
    table.columns = [f"{t} {m}" for t, m in table.columns]
    order = {arm: i for i, arm in enumerate(ARMS)}
    table = table.reset_index().sort_values(["slice", "iteration", "arm"], key=lambda c: c.map(order)
                                             if c.name == "arm" else c)
    return table.reset_index(drop=True)


def chart(rows: pd.DataFrame, path: Path, test_set: str = "evolving") -> Path:
    """PNG: NDCG@1 per iteration per arm on ``test_set`` (mean over seeds, band = min..max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = rows[(rows["slice_type"] == "overall") & (rows["metric"] == "ndcg@1") & (rows["test_set"] == test_set)]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for arm in ARMS:
        mine = part[part["arm"] == arm].groupby("iteration")["value"].agg(["mean", "min", "max"])
        if mine.empty:
            continue
        ax.plot(mine.index, mine["mean"], marker="o", label=arm)
        ax.fill_between(mine.index, mine["min"], mine["max"], alpha=0.15)
    ax.set_xlabel("iteration (0 = seed model)")
    ax.set_ylabel(f"NDCG@1, {test_set} test set")
    ax.set_xticks(sorted(part["iteration"].unique()))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


@asset(
    key=EVOLUTION_REPORT,
    group_name="evaluation",
    kinds={"delta", "pandas"},
    owners=["team:serm"],
    code_version="2",
    description="The paper's comparison on this stream: the frozen seed model, iterative self-training and SERM, "
                "run by `serm evolve --compare` over the same windows with the same budget and training recipe "
                "(each arm in SERM_HOME/compare/seed<k>/<arm>). NDCG@1, NDCG@4 and accuracy of the model serving "
                "after each iteration, all on one held-out set: the test parts of the static and evolving test sets "
                "as of the stream's last window end (earlier champions are scored on it here, once); overall, per "
                "language family and per query, mean ± std over training seeds; SERM minus self-training and minus "
                "the seed model with paired bootstrap intervals over queries; a chart of evolving-set NDCG@1.",
)
def evolution_report(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource,
                     model_settings: ModelSettings) -> MaterializeResult:
    paths, store = lakehouse.paths, lakehouse.store
    seeds = compared_seeds(paths)
    rows = comparison_rows(paths, seeds, spark.get_session(), model_settings, context.run_id)
    if rows.empty:
        raise ValueError(f"no comparison under {paths.home}: run `serm evolve --compare` first")
    png = chart(rows, paths.home / "reports" / "evolution_ndcg1.png")
    differences = paired_differences(rows)
    overall = summary_table(rows)
    by_family = summary_table(rows, "family")
    return write_asset_table(context, store, EVOLUTION_REPORT, pa.Table.from_pandas(rows, preserve_index=False),
                             lineage={"seeds": list(seeds), "as_of": str(rows["as_of"].max()),
                                      "paired_differences": differences.to_dict(orient="records")}, metadata={
                                 "seeds": MetadataValue.json(list(seeds)), "chart": MetadataValue.path(str(png)),
                                 # inline, so the asset page shows the chart itself
                                 "chart_preview": MetadataValue.md(
                                     f"![evolving NDCG@1](data:image/png;base64,"
                                     f"{base64.b64encode(png.read_bytes()).decode()})"),
                                 "as_of": str(rows["as_of"].max()),
                                 "paired_differences": MetadataValue.md(differences.round(3).to_markdown(index=False)),
                                 "paired_differences_text": differences_text(differences),
                                 "overall": MetadataValue.md(overall.to_markdown(index=False)),
                                 "per_language_family": MetadataValue.md(by_family.to_markdown(index=False))})


comparison_assets = [evolution_report]

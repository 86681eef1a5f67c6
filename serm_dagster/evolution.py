"""The self-evolution loop over successive windows of the stream, and the comparison of arms.

An iteration is ``iteration_job``'s assets materialized after the window's days are ingested: drift
report, mining, annotation, training-set assembly, retraining, evaluation, promotion and the
``gold/iterations`` record. ``evolve`` plays the stream forward window by window, so each iteration
mines the newest window as it would in production. ``compare`` runs the same stream through the
arms of the paper's comparison, each in its own data folder under ``SERM_HOME/compare/``:

- ``seed``: the seed model, frozen (its evaluation, no iterations);
- ``self-training``: the annotator replaced by the serving model's own predicted labels;
- ``serm``: the multi-agent annotator.

Same windows, same budget and the same training recipe for both evolving arms: only the labels differ.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

import pandas as pd

from assets.evaluation import (
    EVALUATIONS,
    TestPairs,
    evaluation_on,
    evaluation_replace,
    evaluation_table,
    score_version,
)
from assets.iterations import EVOLUTION_REPORT, ITERATIONS
from models.evaluation import QUERY_SLICE
from models.metrics import TEST, paired_bootstrap
from serm_dagster.panel import Panel, choose_panel, panel_tags
from serm_dagster.registry import Registry
from serm_dagster.settings import SermPaths
from serm_dagster.storage import DeltaStore
from serm_dagster.tables import table_name
from spark_jobs.training import TestWindows

ARMS = ("seed", "self-training", "serm")
STRATEGY_OF_ARM = {"self-training": "self-training", "serm": "agents"}


@dataclass(frozen=True)
class EvolutionPlan:
    """Which landing days are ingested before the first iteration, and each iteration's window."""

    before: list[str]
    windows: list[list[str]]


def plan_windows(days: list[str], iterations: int, window_days: int) -> EvolutionPlan:
    """The newest ``iterations * window_days`` days, cut into consecutive windows; the days before them
    are the history the seed model and the first drift report see."""
    days = sorted(set(days))
    needed = iterations * window_days
    if iterations < 1 or window_days < 1:
        raise ValueError("iterations and window_days must be at least 1")
    if len(days) <= needed:
        raise ValueError(f"{iterations} iterations of {window_days} days need more than {needed} days of logs in "
                         f"landing/; found {len(days)}")
    first = len(days) - needed
    return EvolutionPlan(days[:first], [days[first + i * window_days: first + (i + 1) * window_days]
                                        for i in range(iterations)])


def landing_days(paths: SermPaths) -> list[str]:
    from spark_jobs.ingest import home_day, landing_index

    index = landing_index(paths.landing, paths.state / "landing_index.json")
    return sorted({d for path, entry in index.items() for d in [*entry["days"], home_day(path, entry)]})


def resources_for(paths: SermPaths, strategy: str = "agents", panel: Panel | None = None, **overrides) -> dict:
    """The Definitions' resources pointed at ``paths``, with the judge panel (default: the one
    ``choose_panel`` finds for ``paths``), the annotator strategy and any overrides."""
    from serm_dagster.definitions import default_resources

    return {**default_resources(paths.home, panel, strategy), **overrides}


def _materialize(selection, resources: dict, tags: dict, after_rejection: list[str] | None = None):
    """Materialize in process. A challenger the blocking promotion check rejects is an outcome, not an error:
    it stops the run before gold/promotions, so ``after_rejection`` (the iteration's record) is materialized by
    a run of its own."""
    from dagster import DagsterInstance, materialize

    from serm_dagster.definitions import all_assets, all_checks
    from assets.evaluation import PROMOTION_CHECK
    from serm_dagster.sensors import rejected_only

    def run(chosen):
        return materialize([*all_assets, *all_checks], selection=chosen, resources=resources,
                           instance=DagsterInstance.get(), tags=tags, raise_on_error=False,
                           run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})

    result = run(selection)
    if result.success:
        return result
    failed_steps = {event.step_key for event in result.get_step_failure_events()}
    rejected = any(c.check_name == PROMOTION_CHECK and not c.passed for c in result.get_asset_check_evaluations())
    if rejected and rejected_only(sorted(failed_steps)):
        return run(after_rejection) if after_rejection else result
    errors = "; ".join(f"{e.step_key}: {e.step_failure_data.error.message.strip()}"
                       for e in result.get_step_failure_events() if e.step_failure_data.error)
    raise RuntimeError(f"run {result.run_id} failed in {sorted(failed_steps)} ({errors}); see the Dagster UI "
                       f"or its event log")


def completed_iterations(paths: SermPaths) -> int:
    store = DeltaStore(paths.lakehouse)
    if not store.exists("gold/iterations"):
        return 0
    return int(store.read_arrow("gold/iterations", columns=["iteration"]).column("iteration").to_pandas().max())


def prepare(paths: SermPaths, iterations: int = 3, strategy: str = "agents", window_days: int = 3,
            echo: Callable[[str], None] = print, panel: Panel | None = None,
            **resource_overrides) -> tuple[EvolutionPlan, dict, dict]:
    """The windows, resources and run tags of an evolution in ``paths``, with its seed model trained (or
    adopted, see ``ModelSettings.seed_model_from``) on the history before the first window if it has none.
    The panel (default: ``choose_panel`` for ``paths``) is in the run tags, its file kept under state/."""
    from serm_dagster.cli import ingest_landing
    from serm_dagster.jobs import seed_model_job
    from serm_dagster.registry import CHAMPION
    from serm_dagster.resources import MiningSettings

    mining = resource_overrides.pop("mining_settings", None) or MiningSettings(window_days=window_days)
    if mining.window_days != window_days:
        raise ValueError(f"mining_settings.window_days={mining.window_days} but the windows are {window_days} days")
    plan = plan_windows(landing_days(paths), iterations, window_days)
    panel = panel or choose_panel(home=paths.home)
    resources = resources_for(paths, strategy, panel, mining_settings=mining, **resource_overrides)
    tags = {"serm/strategy": strategy, "serm/trigger": "serm evolve", **panel_tags(panel, strategy, paths)}
    if Registry.under(paths.home).alias_version(CHAMPION) is None:
        started = time.perf_counter()
        ingest_landing(paths, plan.before, echo=lambda *_: None)
        # as of the history's last day, even when later days are ingested already
        _materialize(seed_model_job.selection, as_of(resources, plan.before[-1]), {**tags, "serm/reason": "seed model"})
        how = "adopted" if resources["model_settings"].seed_model_from else "trained on the seed judgments"
        echo(f"seed model {how} ({time.perf_counter() - started:.0f}s; "
             f"history {plan.before[0]}..{plan.before[-1]})")
    return plan, resources, tags


def as_of(resources: dict, day: str) -> dict:
    """``resources`` with the iteration's window ending at ``day`` (``MiningSettings.window_end``): drift, mining
    and evaluation read nothing dated after it, whatever later days are ingested already."""
    return {**resources, "mining_settings": _with(resources["mining_settings"], window_end=day)}


def evolve(paths: SermPaths, iterations: int = 3, strategy: str = "agents", window_days: int = 3,
           echo: Callable[[str], None] = print, panel: Panel | None = None, **resource_overrides) -> pd.DataFrame:
    """Run (or resume) ``iterations`` SERM iterations over the newest windows of ``landing/``, each as of its
    window's end (so days ingested ahead of the replay are not read).

    Idempotent: days already ingested are replaced by the same rows, the seed model is trained once,
    and iterations already recorded in ``gold/iterations`` are not run again. Returns that table.
    """
    from serm_dagster.cli import ingest_landing
    from serm_dagster.jobs import iteration_job

    plan, resources, tags = prepare(paths, iterations, strategy, window_days, echo, panel, **resource_overrides)
    done = completed_iterations(paths)
    for number, window in enumerate(plan.windows, start=1):
        if number <= done:
            continue
        started = time.perf_counter()
        ingest_landing(paths, window, echo=lambda *_: None, reference_if_changed=True)
        _materialize(iteration_job.selection, as_of(resources, window[-1]),
                     {**tags, "serm/reason": f"iteration {number} over {window[0]}..{window[-1]}"},
                     after_rejection=["gold/iterations"])
        row = DeltaStore(paths.lakehouse).read_arrow("gold/iterations").to_pandas().set_index("iteration").loc[number]
        # the window the iteration mined, as gold/iterations recorded it from gold/mined_samples
        echo(f"iteration {number} [{strategy}] {row['window_start']}..{row['window_end']}: mined {row['mined']}, "
             f"accepted {row['accepted']}, model v{row['model_before']} -> v{row['model_after']} "
             f"({'promoted' if row['promoted'] else 'challenger rejected'}), test part: evolving NDCG@1 "
             f"{row['evolving_ndcg1']:.1f}, static {row['static_ndcg1']:.1f} ({time.perf_counter() - started:.0f}s)")
    return DeltaStore(paths.lakehouse).read_arrow("gold/iterations").to_pandas().sort_values("iteration") \
        .reset_index(drop=True)


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


def compare(paths: SermPaths, iterations: int = 3, seeds: tuple[int, ...] = (13,), window_days: int = 3,
            echo: Callable[[str], None] = print, workers: int = 1, panel: Panel | None = None,
            **resource_overrides) -> pd.DataFrame:
    """Run the evolving arms for each training seed (resuming arms already run); returns every arm's
    champion metrics per iteration (the rows of ``gold/evolution_report``).

    Both arms of a seed start from one seed model: the SERM arm trains it, the self-training arm adopts
    it. ``workers > 1`` then runs that many arms at once, each in its own process with its share of the
    CPU threads (the arms write to separate folders; their Dagster runs share one instance). ``panel``
    (default: ``choose_panel`` for ``paths``) is the SERM arm's; the self-training arm has no judges."""
    from assets.training import SEED_ALIAS
    from serm_dagster.resources import ModelSettings, SparkResource

    seeds_file = paths.home / "compare" / "seeds.json"
    seeds_file.parent.mkdir(parents=True, exist_ok=True)
    seeds_file.write_text(json.dumps(list(seeds)))
    base = resource_overrides.pop("model_settings", None) or ModelSettings()
    panel = panel or choose_panel(home=paths.home)
    arms = []
    for seed in seeds:
        serm_home = arm_paths(paths, "serm", seed, seeds)
        trained = _with(base, seed=seed)
        prepare(serm_home, iterations, STRATEGY_OF_ARM["serm"], window_days,
                lambda message, seed=seed: echo(f"[seed {seed}] {message}"), panel,
                **{**resource_overrides, "model_settings": trained})
        registry = Registry.under(serm_home.home)
        adopted = _with(trained, seed_model_from=str(registry.model_dir(registry.alias_version(SEED_ALIAS))))
        arms += [(seed, "serm", serm_home, trained), (seed, "self-training",
                                                     arm_paths(paths, "self-training", seed, seeds), adopted)]
    # resources travel to an arm's process as (class, fields): Dagster resources do not pickle
    jobs = [(f"[seed {seed} {arm}]", str(home.home), iterations, STRATEGY_OF_ARM[arm], window_days, panel,
             {name: (type(r), r.model_dump()) for name, r in {**resource_overrides, "model_settings": settings}.items()})
            for seed, arm, home, settings in arms]
    if workers <= 1:
        for prefix, *job in jobs:
            _run_arm(prefix, *job, echo=echo)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from models.inference import available_cores

        threads = max(1, available_cores() // workers)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_arm_process, initargs=(threads,)) as pool:
            for future in [pool.submit(_run_arm, *job) for job in jobs]:
                future.result()  # an arm's failure is raised here
    return comparison_rows(paths, seeds, SparkResource().get_session(), base)


def _with(settings, **changes):
    """A copy of a settings resource with some fields changed."""
    return type(settings)(**{**settings.model_dump(), **changes})


def _say(message: str) -> None:
    print(message, flush=True)  # an arm's process shares the terminal: its lines must not wait in a buffer


def _arm_process(threads: int) -> None:
    import os

    os.environ["SERM_TORCH_THREADS"] = str(threads)  # more threads than cores slows every operator down


def _run_arm(prefix: str, home: str, iterations: int, strategy: str, window_days: int, panel: Panel,
             resources: dict, echo: Callable[[str], None] = _say) -> None:
    evolve(SermPaths.from_env(Path(home)).ensure(), iterations, strategy, window_days,
           lambda message: echo(f"{prefix} {message}"), panel,
           **{name: cls(**fields) for name, (cls, fields) in resources.items()})


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
    version was scored on these very pairs (a version's scores on given pairs never change), else scored now,
    once, and stored in the home's gold/evaluations like any other evaluation."""
    store, registry = DeltaStore(run.paths.lakehouse), Registry.under(run.paths.home)
    tests = TestPairs.read(session, store, windows)
    found, scored = {}, []
    for version in dict.fromkeys(v for _, v in run.served):
        found[version] = evaluation_on(store, version, tests.digest)
        if found[version] is None:
            found[version] = score_version(model_settings.scorer(registry.model_dir(version)), tests, version,
                                           "", run_id)
            scored.append(found[version])
    if scored:
        store.write(table_name(EVALUATIONS), evaluation_table(scored), partition_by=["model_version"],
                    replace=evaluation_replace(store, [t["model_version"].iat[0] for t in scored], tests.digest),
                    lineage={"dagster_run_id": run_id, "asset_key": table_name(EVALUATIONS),
                             "written_by": table_name(EVOLUTION_REPORT), "test_pairs_digest": tests.digest})
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

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
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from assets.comparison import arm_paths, comparison_rows
from assets.training import SEED_ALIAS
from models import progress
from models.inference import available_cores
from serm_dagster.definitions import default_resources
from serm_dagster.jobs import iteration_job, seed_model_job
from serm_dagster.panel import Panel, choose_panel, panel_tags
from serm_dagster.registry import CHAMPION
from serm_dagster.resources import MiningSettings, ModelSettings, SparkResource
from serm_dagster.runner import SILENT, ingest_landing, landing_days, run_job
from serm_dagster.settings import SermPaths
from serm_dagster.storage import DeltaStore
from spark_jobs.ingest import collect_judgments

STRATEGY_OF_ARM = {"self-training": "self-training", "serm": "agents"}


@dataclass(frozen=True)
class EvolutionPlan:
    """Which landing days are ingested before the first iteration, and each iteration's window."""

    before: list[str]
    windows: list[list[str]]


class MissingInput(ValueError):
    """What the landing folder lacks for an evolution, found before any work is done."""


def plan_windows(days: list[str], iterations: int, window_days: int) -> EvolutionPlan:
    """The newest ``iterations * window_days`` days, cut into consecutive windows; the days before them
    are the history the seed model and the first drift report see."""
    days = sorted(set(days))
    needed = iterations * window_days
    if iterations < 1 or window_days < 1:
        raise ValueError("iterations and window_days must be at least 1")
    if len(days) <= needed:
        raise MissingInput(f"{iterations} iterations of {window_days} days need more than {needed} days of logs in "
                           f"landing/logs/ (the days before the windows are the seed model's history); found "
                           f"{len(days)}. Add days of logs, or run fewer or shorter windows (--iterations, "
                           f"--window-days)")
    first = len(days) - needed
    return EvolutionPlan(days[:first], [days[first + i * window_days: first + (i + 1) * window_days]
                                        for i in range(iterations)])


def resources_for(paths: SermPaths, strategy: str = "agents", panel: Panel | None = None, **overrides) -> dict:
    """The Definitions' resources pointed at ``paths``, with the judge panel (default: the one
    ``choose_panel`` finds for ``paths``), the annotator strategy and any overrides."""
    return {**default_resources(paths.home, panel, strategy), **overrides}


def completed_iterations(paths: SermPaths) -> int:
    store = DeltaStore(paths.lakehouse)
    if not store.exists("gold/iterations"):
        return 0
    return int(store.read_arrow("gold/iterations", columns=["iteration"]).column("iteration").to_pandas().max())


def judgment_gaps(judgments: pd.DataFrame, plan: EvolutionPlan) -> list[str]:
    """Why the validated judgments cannot carry these windows: each problem with what to add."""
    seed, test = judgments[judgments["split"] == "seed"], judgments[judgments["split"] == "test"]
    contract = "(query, doc_id, language, label 0-3, split, ts)"
    gaps = []
    if seed.empty:
        gaps.append(f"no seed judgments: the seed model trains on them. Add judged pairs {contract} with "
                    f"split=seed to landing/judgments/ (a few thousand; labels from people, or from an LLM panel)")
    if test.empty:
        gaps.append(f"no test judgments: promotion decides on them and every report shows them. Add judged "
                    f"pairs {contract} with split=test to landing/judgments/, dated by ts")
    elif test["ts"].isna().all():
        gaps.append("the test judgments have no ts: an iteration's gate reads the judgments dated up to its "
                    "window's end, so none could ever be promoted. Give each test judgment the day it was judged")
    elif (test["ts"].dropna().dt.strftime("%Y-%m-%d") > plan.windows[-1][-1]).all():
        gaps.append(f"every test judgment is dated after the last window ({plan.windows[-1][-1]}): no iteration "
                    f"has one to decide on. Add test judgments dated within the windows")
    return gaps


def require_inputs(paths: SermPaths, plan: EvolutionPlan) -> None:
    """Stop with every gap of landing/judgments/ (``judgment_gaps``), before anything is ingested or trained."""
    gaps = judgment_gaps(collect_judgments(paths.landing_judgments).kept.to_pandas(), plan)
    if gaps:
        raise MissingInput(f"{paths.landing_judgments}:\n" + "\n".join(f"- {gap}" for gap in gaps))


def prepare(paths: SermPaths, iterations: int = 3, strategy: str = "agents", window_days: int = 3,
            echo: Callable[[str], None] = print, panel: Panel | None = None, trigger: str = "serm evolve",
            **resource_overrides) -> tuple[EvolutionPlan, dict, dict]:
    """The windows, resources and run tags of an evolution in ``paths``, with its seed model trained (or
    adopted, see ``ModelSettings.seed_model_from``) on the history before the first window if it has none.
    The panel (default: ``choose_panel`` for ``paths``) is in the run tags, its file kept under state/;
    ``trigger`` is the runs' ``serm/trigger`` tag."""
    mining = resource_overrides.pop("mining_settings", None) or MiningSettings(window_days=window_days)
    if mining.window_days != window_days:
        raise ValueError(f"mining_settings.window_days={mining.window_days} but the windows are {window_days} days")
    plan = plan_windows(landing_days(paths), iterations, window_days)
    require_inputs(paths, plan)
    panel = panel or choose_panel(home=paths.home)
    resources = resources_for(paths, strategy, panel, mining_settings=mining, **resource_overrides)
    tags = {"serm/strategy": strategy, "serm/trigger": trigger, **panel_tags(panel, strategy, paths)}
    if resources["mlflow_resource"].registry(paths.home).alias_version(CHAMPION) is None:
        started = time.perf_counter()
        ingest_landing(paths, plan.before, echo=lambda *_: None)
        # as of the history's last day, even when later days are ingested already
        run_job(seed_model_job, as_of(resources, plan.before[-1]), {**tags, "serm/reason": "seed model"},
                run_config=SILENT)
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
    plan, resources, tags = prepare(paths, iterations, strategy, window_days, echo, panel, **resource_overrides)
    done = completed_iterations(paths)
    for number, window in enumerate(plan.windows, start=1):
        if number <= done:
            continue
        started = time.perf_counter()
        ingest_landing(paths, window, echo=lambda *_: None, reference_if_changed=True)
        run_job(iteration_job, as_of(resources, window[-1]),
                {**tags, "serm/reason": f"iteration {number} over {window[0]}..{window[-1]}"},
                after_rejection=True, run_config=SILENT)
        row = DeltaStore(paths.lakehouse).read_arrow("gold/iterations").to_pandas().set_index("iteration").loc[number]
        echo(describe_iteration(number, row, strategy, time.perf_counter() - started))
    return DeltaStore(paths.lakehouse).read_arrow("gold/iterations").to_pandas().sort_values("iteration") \
        .reset_index(drop=True)


def describe_iteration(number: int, row: pd.Series, strategy: str, seconds: float) -> str:
    """One line of an iteration's ``gold/iterations`` row: the window it mined (as recorded from
    gold/mined_samples), what it mined and accepted, the models before and after, the test part's NDCG@1."""
    return (f"iteration {number} [{strategy}] {row['window_start']}..{row['window_end']}: mined {row['mined']}, "
            f"accepted {row['accepted']}, model v{row['model_before']} -> v{row['model_after']} "
            f"({'promoted' if row['promoted'] else 'challenger rejected'}), test part: evolving NDCG@1 "
            f"{row['evolving_ndcg1']:.1f}, static {row['static_ndcg1']:.1f} ({seconds:.0f}s)")


def run_now(paths: SermPaths, strategy: str = "agents", window_days: int = 3, echo: Callable[[str], None] = print,
            panel: Panel | None = None, **resource_overrides) -> pd.Series:
    """One iteration over the newest window of ``landing/``, now (``serm run``): the checks and the cold start
    of ``prepare`` (a seed model trained first if there is no champion), then what is new in landing/ is
    ingested and ``iteration_job`` runs as of the newest day, through the runner; a challenger the promotion
    check rejects is recorded as such (``record_iteration_job``). Returns the iteration's gold/iterations row."""
    plan, resources, tags = prepare(paths, 1, strategy, window_days, echo, panel, trigger="serm run",
                                    **resource_overrides)
    window = plan.windows[-1]
    started = time.perf_counter()
    ingested = ingest_landing(paths, echo=lambda *_: None, reference_if_changed=True, only_new=True)
    if ingested["days"]:
        echo(f"ingested {len(ingested['days'])} new days ({ingested['days'][0]}..{ingested['days'][-1]})")
    run_job(iteration_job, as_of(resources, window[-1]),
            {**tags, "serm/reason": f"serm run: one iteration over the newest window {window[0]}..{window[-1]}"},
            after_rejection=True, run_config=SILENT)
    history = DeltaStore(paths.lakehouse).read_arrow("gold/iterations").to_pandas().set_index("iteration")
    number = int(history.index.max())
    echo(describe_iteration(number, history.loc[number], strategy, time.perf_counter() - started))
    return history.loc[number]


def compare(paths: SermPaths, iterations: int = 3, seeds: tuple[int, ...] = (13,), window_days: int = 3,
            echo: Callable[[str], None] = print, workers: int = 1, panel: Panel | None = None,
            **resource_overrides) -> pd.DataFrame:
    """Run the evolving arms for each training seed (resuming arms already run); returns every arm's
    champion metrics per iteration (the rows of ``gold/evolution_report``).

    Both arms of a seed start from one seed model: the SERM arm trains it, the self-training arm adopts
    it. ``workers > 1`` then runs that many arms at once, each in its own process with its share of the
    CPU threads (the arms write to separate folders; their Dagster runs share one instance). ``panel``
    (default: ``choose_panel`` for ``paths``) is the SERM arm's; the self-training arm has no judges."""
    seeds_file = paths.home / "compare" / "seeds.json"
    seeds_file.parent.mkdir(parents=True, exist_ok=True)
    seeds_file.write_text(json.dumps(list(seeds)))
    base = resource_overrides.pop("model_settings", None) or ModelSettings()
    panel = panel or choose_panel(home=paths.home)
    arms = []
    for seed in seeds:
        serm_home = arm_paths(paths, "serm", seed, seeds)
        trained = _with(base, seed=seed)
        _, resources, _ = prepare(serm_home, iterations, STRATEGY_OF_ARM["serm"], window_days,
                                  lambda message, seed=seed: echo(f"[seed {seed}] {message}"), panel,
                                  **{**resource_overrides, "model_settings": trained})
        registry = resources["mlflow_resource"].registry(serm_home.home)
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
    # an arm's process shares the terminal: its lines must not wait in a buffer, nor follow the other arm's progress
    progress.say(message)


def _arm_process(threads: int) -> None:
    os.environ["SERM_TORCH_THREADS"] = str(threads)  # more threads than cores slows every operator down


def _run_arm(prefix: str, home: str, iterations: int, strategy: str, window_days: int, panel: Panel,
             resources: dict, echo: Callable[[str], None] = _say) -> None:
    progress.set_label(prefix)  # the arms' progress lines share the terminal too
    try:
        evolve(SermPaths.from_env(Path(home)).ensure(), iterations, strategy, window_days,
               lambda message: echo(f"{prefix} {message}"), panel,
               **{name: cls(**fields) for name, (cls, fields) in resources.items()})
    finally:
        progress.set_label("")



"""The ``serm`` command line: simulate a stream, ingest it, look at the tables."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import duckdb
import pandas as pd
import typer

from assets.comparison import DIFFERENCE_COLUMNS, differences_text, summary_table
from models.evaluation import markdown_table
from models.metrics import TEST
from serm_dagster.analytics import connect, list_analytics, run_analytic, run_query
from serm_dagster.bootstrap import BootstrapError, BootstrapSettings, bootstrap_seed_judgments
from serm_dagster.definitions import all_assets, asset_keys, default_resources
from serm_dagster.evolution import STRATEGY_OF_ARM, MissingInput, compare, run_now
from serm_dagster.evolution import evolve as run_evolution
from serm_dagster.jobs import comparison_report_job, relevance_model_job, seed_model_job
from serm_dagster.panel import Panel, PanelError, choose_panel
from serm_dagster.registry import Registry
from serm_dagster.runner import RunFailed, ingest_landing, run_job
from serm_dagster.serving import ServingError, export_onnx, score_file
from serm_dagster.settings import SermPaths
from serm_dagster.simulator import SCENARIOS, SimulationConfig
from serm_dagster.simulator import simulate as run_simulation
from serm_dagster.simulator.judged import load_judged_set
from serm_dagster.simulator.replay import ReplayConfig, replay
from serm_dagster.storage import DeltaStore
from serm_dagster.tables import table_name

app = typer.Typer(help="SERM Lakehouse: a self-evolving relevance model on Dagster, Spark and Delta.",
                  no_args_is_help=True, add_completion=False)


@app.callback()
def quiet_libraries():
    """Progress lines are ours: MLflow's INFO logging and artifact download bars, and Hugging Face's
    weight-loading bars stay out of them (environment variables, so the comparison's arm processes inherit
    them). MLflow reads its variable when it is imported, which this module's imports already did, so its
    logger is set here too: otherwise creating a new home's tracking database prints INFO lines."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"])
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per model version fetched
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _paths() -> SermPaths:
    paths = SermPaths.from_env().ensure()
    os.environ.setdefault("DAGSTER_HOME", str(paths.dagster_home))  # runs show up in `dagster dev`
    return paths


@app.command()
def simulate(
    days: Optional[int] = typer.Option(None, help="days of stream to write [default: 14]"),
    queries_per_day: Optional[int] = typer.Option(None, help="queries issued per day [default: 2000; a replay 300]"),
    seed: Optional[int] = typer.Option(None, help="random seed (the stream is deterministic for a seed) [default: 7]"),
    start_date: Optional[str] = typer.Option(None, help="first day (ISO date) [default: 2026-01-01]"),
    evolving_days: Optional[int] = typer.Option(None, help="the evolving test set's last days, the comparison's "
                                                "windows [default: 9]; --days must hold the seed period and them"),
    drift_strength: Optional[float] = typer.Option(None, help="0 = stationary, 1 = default drift, 2 = strong"),
    scenario: Optional[str] = typer.Option(None, help="drift scenario and catalogue style: default, none, sudden, "
                                           "no-category (no category attribute, other attribute names, no glossary)"),
    seed_judgments: Optional[int] = typer.Option(None, help="judged pairs in the seed (SFT) set [default: 3000]"),
    test_judgments: Optional[int] = typer.Option(None, help="judged pairs in each test set [default: 1500]"),
    evolving_test_judgments: Optional[int] = typer.Option(None, help="judged pairs in the evolving test set "
                                                          "[default: --test-judgments]"),
    from_judgments: Optional[Path] = typer.Option(None, "--from-judgments", help="replay this judged set instead: "
                                                  "an ESCI folder, or judgments files (query, doc_id, language, "
                                                  "label) with --catalog"),
    catalog: Optional[Path] = typer.Option(None, help="the catalogue (file or folder) of --from-judgments"),
):
    """Write a drifting product-search stream into SERM_HOME/landing/: the embedded simulator's, or a replay of a
    judged set (--from-judgments) as a drifting stream."""
    given = {"days": days, "queries_per_day": queries_per_day, "seed": seed, "start_date": start_date,
             "evolving_window_days": evolving_days}
    simulator_only = {"drift_strength": drift_strength, "scenario": scenario, "seed_judgments": seed_judgments,
                      "test_judgments": test_judgments, "evolving_test_judgments": evolving_test_judgments}
    if from_judgments is not None:
        unused = [f"--{k.replace('_', '-')}" for k, v in simulator_only.items() if v is not None]
        if unused:
            raise typer.BadParameter(f"{', '.join(unused)} do not apply to a replay (--from-judgments)")
        summary = replay_stream(_paths(), from_judgments, catalog, {k: v for k, v in given.items() if v is not None})
    else:
        if catalog is not None:
            raise typer.BadParameter("--catalog goes with --from-judgments")
        options = {k: v for k, v in {**given, **simulator_only}.items() if v is not None}
        summary = simulate_stream(_paths(), options)
    report_stream(summary)


def simulate_stream(paths: SermPaths, options: dict) -> dict:
    """The embedded simulator's stream into ``paths.home``; ``options``: SimulationConfig fields."""
    if options.get("scenario", "default") not in SCENARIOS:
        raise typer.BadParameter(f"unknown scenario {options['scenario']!r}; known: {', '.join(sorted(SCENARIOS))}")
    return run_simulation(paths.home, SimulationConfig(**options))


def replay_stream(paths: SermPaths, judgments: Path, catalog: Optional[Path], options: dict) -> dict:
    """A judged set replayed as a drifting stream into ``paths.home``; ``options``: ReplayConfig fields."""
    try:
        judged = load_judged_set(judgments, catalog)
        config = ReplayConfig(**options).validate()
    except ValueError as exc:  # a judged set that breaks the contract, or a config that cannot work
        raise typer.BadParameter(str(exc)) from exc
    return replay(paths.home, judged, config)


def report_stream(summary: dict, echo=typer.echo) -> None:
    rows, counts = summary["counts"]["rows"], summary["counts"]
    echo(f"wrote {len(summary['days'])} days, {counts['queries']} queries into {Path(summary['home']) / 'landing'} "
         f"in {summary['elapsed_s']:.1f}s")
    echo(f"  log rows {sum(rows['logs'].values())}, catalogue {rows['catalog']}, "
         f"judgments seed {rows['seed_judgments']} / test {rows['test_judgments']}, glossary {rows['glossary']}")
    if "judgment_queries" in counts:
        echo("  judged queries " + ", ".join(f"{k} {v}" for k, v in counts["judgment_queries"].items())
             + "; pairs " + ", ".join(f"{k} {v}" for k, v in counts["judgments"].items()))
    echo(f"  seed period {'..'.join(summary['seed_period'])}, evolving window {'..'.join(summary['evolving_window'])}")


@contextmanager
def stopping_on(*errors: type[Exception]):
    """A command stops on these errors with their message (what is missing and what to add), no traceback."""
    try:
        yield
    except errors as exc:
        typer.echo(f"stopped: {exc}", err=True)
        raise typer.Exit(2) from exc


def run_named(paths: SermPaths, job, reason: str) -> None:
    """``run_job`` of a named job for a command, in ``paths``' data folder: a failed run (a challenger the
    promotion check rejected included) ends it with the run's message."""
    try:
        run_job(job, default_resources(paths.home), {"serm/reason": reason, "serm/trigger": "serm command line"})
    except RunFailed as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc


@app.command()
def ingest(day: Optional[list[str]] = typer.Option(None, help="only these days (ISO dates); default all")):
    """Ingest whatever is in SERM_HOME/landing/ (all days it finds), in process."""
    started = time.perf_counter()
    try:
        outcome = ingest_landing(_paths(), day or None, echo=typer.echo)
    except ValueError as exc:  # days the daily partitions do not hold
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"{len(outcome['days'])} days ingested in {time.perf_counter() - started:.1f}s")


def print_evaluation(paths: SermPaths, echo=typer.echo) -> None:
    store = DeltaStore(paths.lakehouse)
    if not store.exists("gold/evaluations"):
        echo("no evaluations yet")
        return
    registry = Registry.under(paths.home)
    versions = {v for v in (registry.alias_version(a) for a in ("champion", "challenger", "seed")) if v}
    table = store.read_arrow("gold/evaluations").to_pandas()
    if "part" not in table:
        echo("the evaluations predate the validation / test parts: run `serm train` again")
        return
    table = table[table["model_version"].isin(versions) & (table["part"] == TEST)]
    # each version's newest evaluation (a version keeps one per set of test pairs it was scored on)
    newest = table.groupby("model_version")["evaluated_at"].transform("max")
    table = table[table["evaluated_at"] == newest]
    table = table.assign(model="v" + table["model_version"] + " " + table["aliases"])
    echo(f"test parts (promotion decides on the validation parts), as of {table['as_of'].max()}:")
    echo(markdown_table(table[table["slice_type"] != "language"]))


@app.command()
def train(seed: bool = typer.Option(True, "--seed/--retrain",
                                    help="train the seed model (default) or retrain on the mixed training set")):
    """Train (seed model, or the relevance model on the mix), evaluate and promote if better."""
    paths = _paths()
    model = "models/seed_model" if seed else "models/relevance_model"
    started = time.perf_counter()
    run_named(paths, seed_model_job if seed else relevance_model_job, f"serm train: {model}")
    typer.echo(f"trained {model} in {time.perf_counter() - started:.0f}s\n")
    print_evaluation(paths)


@app.command()
def evaluation():
    """The evaluation table of the champion, challenger and seed models."""
    print_evaluation(_paths())


@app.command()
def tables():
    """Every Delta table: version, rows and the lineage of its latest commit."""
    paths = _paths()
    store = DeltaStore(paths.lakehouse)
    typer.echo(f"{'table':28} {'version':>7} {'rows':>9}  last written by")
    # every table is an asset's: asked by name, so a lakehouse on object storage needs no listing
    for name in sorted({table_name(key) for key in asset_keys(all_assets)}):
        if not store.exists(name):
            continue
        lineage = store.lineage(name)
        keys = lineage.get("partition_keys") or []
        span = f" days {keys[0]}..{keys[-1]}" if keys else ""
        typer.echo(f"{name:28} {store.version(name):>7} {store.count_rows(name):>9}  "
                   f"run {str(lineage.get('dagster_run_id'))[:8]}{span}")


PANEL_HELP = ("the judge panel file (YAML; see README, 'Configuring the judge panel'); default: SERM_PANEL, "
              "else SERM_HOME/panel.yaml if it exists, else the built-in panel")


def choose_judges(panel: str | None, paths: SermPaths) -> Panel:
    """The panel ``--panel`` names (or SERM_PANEL's, or SERM_HOME/panel.yaml), said on the terminal; a file
    that cannot be used is a bad ``--panel`` with every problem listed."""
    try:
        chosen = choose_panel(panel, paths.home)
    except PanelError as exc:
        raise typer.BadParameter(str(exc), param_hint="--panel") from exc
    typer.echo(f"judge panel: {chosen.path or 'built-in defaults'}")
    return chosen


@app.command()
def evolve(
    iterations: int = typer.Option(3, help="iterations, one per window, over the newest windows of landing/"),
    strategy: str = typer.Option("serm", help="'serm' (the multi-agent annotator) or 'self-training' (baseline)"),
    window_days: int = typer.Option(3, help="days per window"),
    compare_arms: bool = typer.Option(False, "--compare", help="run the seed / self-training / SERM comparison, "
                                      "each arm in SERM_HOME/compare/, and materialize gold/evolution_report"),
    seeds: str = typer.Option("13", help="comma-separated training seeds for --compare (the spread)"),
    workers: int = typer.Option(2, help="arms of --compare run at once, each in its own process"),
    panel: Optional[str] = typer.Option(None, help=PANEL_HELP),
):
    """Run the self-evolution loop (resuming where it stopped), or the comparison of arms."""
    if strategy not in STRATEGY_OF_ARM:
        raise typer.BadParameter(f"strategy must be one of {sorted(STRATEGY_OF_ARM)}")
    paths = _paths()
    chosen = choose_judges(panel, paths)
    started = time.perf_counter()
    with stopping_on(MissingInput):
        if compare_arms:
            compare(paths, iterations, tuple(int(s) for s in seeds.split(",") if s.strip()), window_days,
                    typer.echo, workers=workers, panel=chosen)
        else:
            run_evolution(paths, iterations, STRATEGY_OF_ARM[strategy], window_days, typer.echo, chosen)
    if compare_arms:
        run_named(paths, comparison_report_job, "serm evolve --compare: the comparison report")
        report()
    typer.echo(f"\nevolved in {time.perf_counter() - started:.0f}s")


@app.command(name="run")
def run_iteration(
    strategy: str = typer.Option("serm", help="'serm' (the multi-agent annotator) or 'self-training' (baseline)"),
    window_days: int = typer.Option(3, help="days in the window, the newest of landing/"),
    panel: Optional[str] = typer.Option(None, help=PANEL_HELP),
):
    """One iteration over the newest window, now: ingest what is new in landing/, then iteration_job as of the
    newest day (a seed model first if there is none). What the sensors do unattended, forced; `serm evolve` is
    the replay."""
    if strategy not in STRATEGY_OF_ARM:
        raise typer.BadParameter(f"strategy must be one of {sorted(STRATEGY_OF_ARM)}")
    paths = _paths()
    chosen = choose_judges(panel, paths)
    started = time.perf_counter()
    with stopping_on(MissingInput, RunFailed):
        run_now(paths, STRATEGY_OF_ARM[strategy], window_days, typer.echo, chosen)
    typer.echo(f"done in {time.perf_counter() - started:.0f}s; `serm evaluation` for the table, the Dagster UI "
               "for the runs (tag serm/trigger=serm run)")


@app.command()
def report(family: bool = typer.Option(False, "--family", help="per language family instead of overall")):
    """The comparison table (arms x iterations x test sets) and where its chart is."""
    paths = _paths()
    store = DeltaStore(paths.lakehouse)
    if not store.exists("gold/evolution_report"):
        typer.echo("no comparison yet: run `serm evolve --compare`")
        raise typer.Exit(1)
    rows = store.read_arrow("gold/evolution_report").to_pandas()
    lineage = store.lineage("gold/evolution_report")
    typer.echo(f"test parts as of {lineage.get('as_of')} (every arm's served models on the same held-out pairs)")
    typer.echo(summary_table(rows, "family" if family else "overall").to_markdown(index=False))
    differences = pd.DataFrame(lineage.get("paired_differences") or [], columns=DIFFERENCE_COLUMNS)
    typer.echo("\n" + differences_text(differences))
    typer.echo(f"\nseeds {sorted(rows['seed'].unique().tolist())}; chart {paths.home / 'reports' / 'evolution_ndcg1.png'}")


@app.command()
def sql(query: str = typer.Argument(..., help="an analytic's name (a file in sql/) or any SELECT statement"),
        limit: int = typer.Option(50, help="rows to print at most")):
    """Run one agreement analytic by name, or any SELECT over agent_votes, agent_labels, consensus_labels and
    judgments (the Delta tables, registered by name in DuckDB)."""
    con = connect(DeltaStore(_paths().lakehouse))
    try:
        name = query.strip()
        frame = run_analytic(con, name) if name in list_analytics() else run_query(con, query)
    except (KeyError, ValueError, duckdb.Error) as exc:
        raise typer.BadParameter(f"{exc}; analytics: {', '.join(list_analytics())}") from exc
    finally:
        con.close()
    typer.echo(frame.head(limit).to_markdown(index=False) if len(frame) else "(no rows)")
    if len(frame) > limit:
        typer.echo(f"... {len(frame) - limit} more rows (--limit)")


@app.command()
def score(
    file: Path = typer.Argument(..., help="pairs: CSV, Parquet or JSON Lines (.jsonl) with query, and doc_id (looked "
                                "up in the ingested catalogue) or text (the document)"),
    output: Optional[Path] = typer.Option(None, "--output", help="write the scored pairs here (.csv, .parquet, "
                                          ".jsonl) instead of printing them"),
    alias: str = typer.Option("champion", help="the registered model's alias to score with (e.g. seed, challenger)"),
    limit: int = typer.Option(50, help="rows to print at most"),
):
    """Score (query, doc_id | text) pairs with the champion: each pair's score (the expected label, 0-3) and the
    label distribution p0..p3."""
    with stopping_on(ServingError):
        scored = score_file(file, _paths(), alias, output)
    if output is not None:
        typer.echo(f"scored {len(scored)} pairs with {alias} into {output}")
        return
    typer.echo(scored.head(limit).round(4).to_markdown(index=False) if len(scored) else "(no pairs)")
    if len(scored) > limit:
        typer.echo(f"... {len(scored) - limit} more pairs (--limit, or --output FILE for all)")


@app.command()
def export(
    onnx: Path = typer.Option(..., "--onnx", help="folder to write model.onnx, the tokenizer and serm_onnx.json into"),
    alias: str = typer.Option("champion", help="the registered model's alias to export"),
):
    """Export the champion relevance model to ONNX (dynamic batch and sequence axes; outputs probabilities and
    score) with its tokenizer, for serving without this project."""
    with stopping_on(ServingError):
        written = export_onnx(_paths(), onnx, alias)
    typer.echo(f"exported {alias} (version {written['version']}) to {written['path']}; "
               f"files: {', '.join(written['files'])}")


@app.command()
def bootstrap(
    pairs: int = typer.Option(2000, help="shown pairs to label at most"),
    per_query: int = typer.Option(8, help="documents per sampled query at most (the best-placed first)"),
    until: Optional[str] = typer.Option(None, help="only pairs shown up to this day (ISO date): the seed period's "
                                        "end [default: every ingested day]"),
    replace: bool = typer.Option(False, "--replace", help="label a new sample over an earlier bootstrap file"),
    panel: Optional[str] = typer.Option(None, help=PANEL_HELP),
):
    """Seed judgments from the panel's LLM judges: label a sample of the pairs users were shown (ingested logs and
    catalogue) and write the agreed labels to landing/judgments/bootstrap_seed.csv (split=seed)."""
    paths = _paths()
    chosen = choose_judges(panel, paths)
    with stopping_on(BootstrapError):
        done = bootstrap_seed_judgments(paths, chosen, BootstrapSettings(pairs, per_query, until or "", 7, replace),
                                        echo=typer.echo)
    stats = done["stats"]
    typer.echo(f"{done['accepted']} of {done['sampled']} pairs labelled (labels {done['labels']}; days "
               f"{'..'.join(done['days'])}; {stats['new_calls']} new calls, {stats['failed_paths']} failed) into "
               f"{done['file']}\nnext: `serm ingest` reads them; then `serm train` trains the seed model")


# The demo's stream, sized so the whole comparison (seed model, 3 iterations of SERM and 3 of self-training)
# runs in under 15 minutes on 2 CPU cores; `serm simulate` writes the full-size default stream.
DEMO_STREAM = {"days": 14, "queries_per_day": 1000, "seed_judgments": 1500, "test_judgments": 1500,
               "evolving_test_judgments": 3000}


@app.command()
def demo(
    seed: int = typer.Option(7, help="simulator seed"),
    iterations: int = typer.Option(3, help="iterations per arm (one per 3-day window)"),
    training_seed: int = typer.Option(13, help="training seed of both arms (`serm evolve --compare --seeds` for "
                                      "the spread over several)"),
    panel: Optional[str] = typer.Option(None, help=PANEL_HELP),
):
    """The main job on the embedded default data: simulate a drifting stream, run SERM iterations over its
    newest windows and the comparison with the frozen seed model and self-training, print the report."""
    started = time.perf_counter()
    paths = _paths()
    chosen = choose_judges(panel, paths)
    report_stream(simulate_stream(paths, {"seed": seed, "start_date": "2026-01-01", "drift_strength": 1.0, **DEMO_STREAM}))
    typer.echo("\nthe comparison: the seed model first, then the SERM arm (here) and the self-training arm "
               "(in SERM_HOME/compare/) side by side ...")
    with stopping_on(MissingInput):
        compare(paths, iterations, (training_seed,), 3, typer.echo, workers=2, panel=chosen)
    run_named(paths, comparison_report_job, "serm demo: the comparison report")
    typer.echo("")
    report(family=False)
    served = paths.tracking_uri.startswith(("http://", "https://"))  # MLFLOW_TRACKING_URI: a tracking server
    mlflow_ui = paths.tracking_uri if served else f".venv/bin/mlflow ui --backend-store-uri {paths.tracking_uri}"
    typer.echo(f"\ndone in {time.perf_counter() - started:.0f}s. Everything is under {paths.home}.\n"
               f"  Dagster UI: make dagster  (DAGSTER_HOME={paths.dagster_home}), then http://127.0.0.1:3000\n"
               f"  MLflow UI:  {mlflow_ui}\n"
               f"  DuckDB:     duckdb {paths.analytics_db}   (or: serm sql pairwise_kappa)\n"
               f"  Tables:     serm tables; serm report --family\n"
               f"To run it unattended on your own data: put your logs, catalogue and judgments into "
               f"SERM_HOME/landing/ and start `make dagster`; its sensors are on (new files are ingested, drift "
               f"reports follow, an iteration runs when the stream drifts or every two weeks). `serm run` forces "
               f"one iteration now. See README, 'Running it on your own data'.")

"""One whole SERM iteration at stream scale (a benchmark, not a test).

    .venv/bin/python benchmarks/bench_iteration.py [--rows 250000,500000,1000000] [--home DIR] [--keep]
                                                   [--backbone NAME | --tiny] [--set FIELD=VALUE ...]
    .venv/bin/python benchmarks/bench_iteration.py --rows 20000,40000 --tiny      # a quick check

For each size N, in its own data folder ``rows-N/`` under ``--home`` (default: a temporary folder, removed after
unless ``--keep``), it simulates 2 days of history and a 3-day window holding about N logged rows, trains the seed
model on the history (``evolution.prepare``, the cold start of ``serm run``; setup, not timed as the iteration),
then runs one whole iteration as ``serm run`` does (``evolution.run_now``): the window's days through
``ingest_daily_job``, then ``iteration_job`` (drift, mining, annotation, training set, retraining, evaluation,
promotion, the gold/iterations record). ``--backbone`` picks the encoder (default ``ModelSettings``', the packaged
MiniLM), ``--tiny`` a tiny random one (``models.backbone.tiny_backbone``), ``--set`` any ModelSettings field, e.g.
``--set retrain_epochs=2``.

It prints, per size, each stage's seconds (its Dagster steps, asset checks included, from the STEP_START and
STEP_SUCCESS / STEP_FAILURE events of the iteration's runs in the instance's event log), the window's logged rows
per second, and the peak RSS of the Python driver and of the Spark JVM while the stage ran (psutil, sampled every
half second over the driver's process tree); the iteration's wall time, and the part of it outside any step (run
start-up, the landing scan); beside them the ingest anchor: DuckDB reading the window's landing files (Parquet,
as the simulator writes them) and validating them with ingest's rules (nulls, blanks, language, position >= 1,
dwell >= 0, timestamps between 2000-01-01 and tomorrow, duplicate (request_id, doc_id) keys), with its kept rows
against ingest's. Last, every stage's seconds at each size and the scaling exponent log(t2/t1) / log(n2/n1)
between consecutive sizes (1 = linear). Before each iteration, in the same JVM (as warm as ingest finds it), the bare
Spark floor: Spark reading the window's files, aggregating them per pair and day and writing Parquet; ingest's two
steps are given as a multiple of it.

The sizes run in one process, smallest first, sharing one Spark JVM and one Dagster instance (under ``--home``):
a JVM's heap seldom shrinks, so its RSS at a size is at least what the size before left. Each size needs a new
folder: a ``--home`` that already holds ``rows-N/`` is refused.
"""

from __future__ import annotations

import argparse
import math
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import psutil

from common import simulate_window, use_home

WINDOW_DAYS, SEED_DAYS = 3, 2
MB = 1 << 20
# the stage of a Dagster step (an asset's op, or one of its checks): the one with the longest prefix of its key
STAGES = {
    "ingest: bronze": ("ingest_query_logs", "bronze__", "quarantine__"),
    "ingest: silver impressions": ("silver__impressions",),
    "drift": ("gold__drift_reports",),
    "mining": ("gold__mined_samples",),
    "annotation": ("annotate_mined_samples", "gold__agent_votes", "gold__agent_labels", "gold__consensus_labels"),
    "agreement analytics": ("analytics__agent_agreement",),
    "training set": ("gold__training_sets",),
    "retraining": ("models__relevance_model",),
    "evaluation": ("evaluate_models", "gold__evaluations", "gold__test_scores"),
    "promotion (gate + alias)": ("gold__evaluations_challenger_beats_champion", "gold__promotions"),
    "record": ("gold__iterations",),
}
ANCHOR, WALL, OUTSIDE = "DuckDB anchor (read + validate)", "iteration (wall)", "outside steps"
FLOOR, INGEST = "bare Spark floor", ("ingest: bronze", "ingest: silver impressions")


class MemorySampler(threading.Thread):
    """RSS of the driver, of its Spark JVM (the ``java`` processes among its descendants) and of its whole process
    tree, every ``interval`` seconds, as (time, driver, jvm, tree) samples."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval, self.samples, self.done = interval, [], threading.Event()

    def run(self) -> None:
        driver = psutil.Process()
        while True:
            self.samples.append((time.time(), *tree_rss(driver)))
            if self.done.wait(self.interval):
                return

    def peak(self, spans: list[tuple[float, float]]) -> tuple[int, int, int]:
        """The highest driver, JVM and tree RSS sampled within ``spans`` (each widened by one interval)."""
        inside = [s[1:] for s in self.samples if any(a <= s[0] <= b + self.interval for a, b in spans)]
        return tuple(max(column) for column in zip(*inside)) if inside else (0, 0, 0)


def tree_rss(driver: psutil.Process) -> tuple[int, int, int]:
    own = driver.memory_info().rss
    jvm = tree = 0
    for child in driver.children(recursive=True):
        try:
            rss, java = child.memory_info().rss, child.name() == "java"
        except psutil.Error:  # gone between listing and reading
            continue
        tree, jvm = tree + rss, jvm + (rss if java else 0)
    return own, jvm, own + tree


def stage_of(step_key: str) -> str:
    matches = [(len(prefix), stage) for stage, prefixes in STAGES.items() for prefix in prefixes
               if step_key.startswith(prefix)]
    return max(matches)[1] if matches else step_key


def stage_spans(since: datetime) -> dict[str, list[tuple[float, float]]]:
    """Every stage's step (start, end) times in the runs created since ``since``, from the event log."""
    from dagster import DagsterEventType, DagsterInstance, RunsFilter

    instance, start = DagsterInstance.get(), DagsterEventType.STEP_START
    spans: dict[str, list] = {}
    for run in instance.get_runs(RunsFilter(created_after=since)):
        started = {}
        for entry in instance.all_logs(run.run_id, of_type={start, DagsterEventType.STEP_SUCCESS,
                                                            DagsterEventType.STEP_FAILURE}):
            if entry.dagster_event_type == start:
                started[entry.step_key] = entry.timestamp
            else:
                spans.setdefault(stage_of(entry.step_key), []).append((started[entry.step_key], entry.timestamp))
    return dict(sorted(spans.items(), key=lambda item: min(a for a, _ in item[1])))


def timestamp_sql(connection, files: list[str]) -> str:
    """``ts`` as a naive UTC timestamp: epoch milliseconds when a number, else ISO text (naive = UTC), as ingest."""
    kind = connection.execute("SELECT typeof(ts) FROM read_parquet($files) LIMIT 1", {"files": files}).fetchone()[0]
    if kind in ("BIGINT", "INTEGER", "DOUBLE"):
        return "epoch_ms(ts::BIGINT)"
    if kind.startswith("TIMESTAMP"):
        return "ts::TIMESTAMPTZ AT TIME ZONE 'UTC'"
    return "try_cast(ts AS TIMESTAMPTZ) AT TIME ZONE 'UTC'"


def duckdb_anchor(files: list[str]) -> dict:
    """Read the landing files and validate them with ingest's rules in DuckDB: rows in, kept, invalid, duplicate."""
    from spark_jobs.schemas import EARLIEST_TS, LANGUAGE_PATTERN

    started = time.perf_counter()
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    checks = " AND ".join([
        *(f"length({c}) >= 1" for c in ("request_id", "session_id", "doc_id")),
        "length(trim(query)) > 0", "regexp_full_match(language, $language)", "position >= 1",
        "clicked IS NOT NULL", "coalesce(dwell_ms >= 0, true)", "ts_utc BETWEEN $earliest AND $latest"])
    counts = connection.execute(f"""
        WITH raw AS (SELECT *, {timestamp_sql(connection, files)} AS ts_utc
                     FROM read_parquet($files, filename = true, file_row_number = true)),
        checked AS (SELECT request_id, doc_id, filename, file_row_number, coalesce({checks}, false) AS valid FROM raw),
        ranked AS (SELECT valid, row_number() OVER (PARTITION BY valid, request_id, doc_id
                                                    ORDER BY filename, file_row_number) AS rank FROM checked)
        SELECT count(*), count(*) FILTER (valid AND rank = 1), count(*) FILTER (NOT valid),
               count(*) FILTER (valid AND rank > 1) FROM ranked""",
        {"files": files, "language": LANGUAGE_PATTERN, "earliest": EARLIEST_TS.tz_localize(None).to_pydatetime(),
         "latest": datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(days=1)}).fetchone()
    return dict(zip(("rows", "kept", "invalid", "duplicate"), counts), seconds=time.perf_counter() - started)


def spark_floor(files: list[str], folder: Path) -> float:
    """Seconds for Spark to read the window's landing files, aggregate them per pair and day (impressions, clicks,
    mean position, as silver does) and write Parquet: what ingest cannot beat, in the same JVM."""
    from pyspark.sql import functions as F

    from serm_dagster.resources import SparkResource

    started = time.perf_counter()
    logs = SparkResource().get_session().read.parquet(*files)
    ts = F.timestamp_millis("ts") if dict(logs.dtypes)["ts"] in ("bigint", "int") else F.to_timestamp("ts")
    (logs.withColumn("date", F.to_date(ts)).groupBy("date", "query", "language", "doc_id")
     .agg(F.count(F.lit(1)).alias("impressions"), F.sum(F.col("clicked").cast("long")).alias("clicks"),
          F.avg("position").alias("mean_position"))
     .write.mode("overwrite").parquet(str(folder)))
    return time.perf_counter() - started


@dataclass
class SizeFigures:
    """One size's iteration: logged rows in the window, seconds and peak RSS (driver, JVM, tree) per stage."""

    rows: int
    seconds: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, tuple[int, int, int]] = field(default_factory=dict)


def window_files(paths, window: list[str]) -> list[str]:
    """The window's landing log files (an index of their own: ingest's cache stays as it was, unread)."""
    from spark_jobs.ingest import landing_index

    index = landing_index(paths.landing, paths.home / "bench" / "landing_index.json")
    return sorted(path for path, entry in index.items() if entry["source"] == "logs" and set(entry["days"]) & set(window))


def window_counts(paths, window: list[str]) -> tuple[int, int]:
    """The rows ingest kept in bronze and quarantined for the window's days."""
    from serm_dagster.storage import DeltaStore

    store, days = DeltaStore(paths.lakehouse), [datetime.fromisoformat(day).date() for day in window]

    def rows_of(table: str) -> int:
        return int(store.read_arrow(table, columns=["date"]).to_pandas()["date"].isin(days).sum()) \
            if store.exists(table) else 0
    return rows_of("bronze/query_logs"), rows_of("quarantine/query_logs")


def bench_size(root: Path, rows: int, settings, sampler: MemorySampler) -> SizeFigures:
    """Simulate, train the seed model, then one iteration through ``run_now``; its figures and the anchor's."""
    from serm_dagster.evolution import plan_windows, prepare, run_now
    from serm_dagster.runner import landing_days
    from serm_dagster.settings import SermPaths

    if (root / f"rows-{rows}").exists():
        raise SystemExit(f"{root / f'rows-{rows}'} exists already (an earlier run): give another --home")
    paths = SermPaths.from_env(root / f"rows-{rows}").ensure()
    started = time.perf_counter()
    simulate_window(paths.home, rows, WINDOW_DAYS, SEED_DAYS)
    prepare(paths, 1, window_days=WINDOW_DAYS, echo=say, model_settings=settings)
    say(f"setup (simulate, ingest the history, seed model) {time.perf_counter() - started:.0f}s")

    window = plan_windows(landing_days(paths), 1, WINDOW_DAYS).windows[0]
    files = window_files(paths, window)
    floor = spark_floor(files, paths.home / "bench" / "spark-floor")  # the JVM as warm as ingest finds it
    since, began = datetime.now(timezone.utc), time.time()
    run_now(paths, window_days=WINDOW_DAYS, echo=say, model_settings=settings)
    ended = time.time()
    spans = stage_spans(since)
    kept, quarantined = window_counts(paths, window)
    anchor = duckdb_anchor(files)
    say(f"window {window[0]}..{window[-1]}: {anchor['rows']:,} logged rows; ingest kept {kept:,}, quarantined "
        f"{quarantined:,}; DuckDB kept {anchor['kept']:,}, invalid {anchor['invalid']:,}, duplicate "
        f"{anchor['duplicate']:,}{'' if anchor['kept'] == kept else '  <- DISAGREE'}")

    figures = SizeFigures(anchor["rows"])
    for stage, stage_times in spans.items():
        figures.seconds[stage] = sum(b - a for a, b in stage_times)
        figures.peaks[stage] = sampler.peak(stage_times)
    figures.seconds[OUTSIDE] = (ended - began) - sum(figures.seconds.values())
    figures.seconds[WALL], figures.peaks[WALL] = ended - began, sampler.peak([(began, ended)])
    figures.seconds[ANCHOR] = anchor["seconds"]
    figures.seconds[FLOOR] = floor
    return figures


def print_size(figures: SizeFigures) -> None:
    print(f"\n{'stage':32} {'seconds':>8} {'rows/s':>10} {'driver MB':>10} {'JVM MB':>8} {'tree MB':>8}")
    for stage, seconds in figures.seconds.items():
        rate = f"{figures.rows / seconds:,.0f}" if seconds > 0 and stage != OUTSIDE else ""
        peak = "".join(f" {value / MB:{width},.0f}" for value, width in zip(figures.peaks[stage], (10, 8, 8))) \
            if stage in figures.peaks else ""
        print(f"{stage:32} {seconds:8.1f} {rate:>10}{peak}".rstrip())
    ingest = sum(figures.seconds.get(stage, 0.0) for stage in INGEST)
    print(f"ingest (bronze + silver) {ingest:.1f}s = {ingest / figures.seconds[FLOOR]:.2f}x the bare Spark floor",
          flush=True)


def print_scaling(results: list[SizeFigures]) -> None:
    """Seconds per stage at each size, and log(t2/t1) / log(n2/n1) between consecutive sizes."""
    pairs = list(zip(results, results[1:]))
    print(f"{'stage':32}" + "".join(f" {r.rows:>10,}" for r in results)
          + "".join(f" {f'{a.rows // 1000}K->{b.rows // 1000}K':>12}" for a, b in pairs))
    for stage in dict.fromkeys(s for r in results for s in r.seconds):
        times = [r.seconds.get(stage) for r in results]
        exponents = [math.log(b.seconds[stage] / a.seconds[stage]) / math.log(b.rows / a.rows)
                     if min(a.seconds.get(stage, 0), b.seconds.get(stage, 0)) > 0 else None for a, b in pairs]
        print(f"{stage:32}" + "".join(f" {t:10.1f}" if t is not None else f" {'':>10}" for t in times)
              + "".join(f" {e:12.2f}" if e is not None else f" {'':>12}" for e in exponents))


def say(message: str) -> None:
    print(message, flush=True)


def model_settings(args, home: Path):
    """ModelSettings with ``--backbone`` or ``--tiny`` and every ``--set FIELD=VALUE``."""
    from models.backbone import tiny_backbone
    from serm_dagster.resources import ModelSettings

    fields = dict(item.split("=", 1) for item in args.set)
    if args.tiny:
        fields["backbone"] = tiny_backbone(home / "tiny-backbone")
    elif args.backbone:
        fields["backbone"] = args.backbone
    return ModelSettings(**fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="250000,500000,1000000", help="logged rows in the window, per size")
    parser.add_argument("--home", type=Path, default=None, help="SERM_HOME to use (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary SERM_HOME")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--backbone", help="the encoder: a Hugging Face id or a local folder (default: MiniLM)")
    model.add_argument("--tiny", action="store_true", help="a tiny random encoder, for a quick check")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a ModelSettings field, e.g. retrain_epochs=2")
    args = parser.parse_args()

    home = use_home(args.home, prefix="serm-bench-iteration-")
    settings = model_settings(args, home)
    say(f"SERM_HOME {home}; {psutil.cpu_count()} cores; backbone {settings.backbone}, epochs {settings.epochs}, "
        f"retrain_epochs {settings.retrain_epochs}")
    sampler = MemorySampler()
    sampler.start()
    results = []
    for rows in sorted(int(size) for size in args.rows.split(",")):
        say(f"\n== about {rows:,} logged rows in the window (load {psutil.getloadavg()[0]:.1f})")
        results.append(bench_size(home, rows, settings, sampler))
        print_size(results[-1])
    sampler.done.set()
    if len(results) > 1:
        print_scaling(results)
    if args.home is None and not args.keep:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The loop unattended: from an empty SERM_HOME, the sensors and the automation alone carry a day of logs dropped
into landing/ through ingestion, the drift report and an iteration to a new champion. The rejected-challenger path
(the run-failure sensor records it) is what the cold start's first iteration takes: it has no evolving test set to
compare on yet.

What the Dagster daemon does is done here in process with Dagster's test helpers: each tick evaluates every
sensor (``build_sensor_context``, ``evaluate_tick``) and the automation conditions
(``evaluate_automation_conditions``), then runs what they requested on the same instance through
``serm_dagster/runner.py``. Real Spark, Delta, MLflow and Dagster runs; a small backbone that knows words (the packaged MiniLM's bottom two
layers), since a randomly initialised encoder learns nothing on a day of logs and its gate decisions are noise.
"""

import shutil

from dagster import DagsterEventType, DagsterInstance, build_run_status_sensor_context, build_sensor_context
from dagster import evaluate_automation_conditions

from models.backbone import truncated_backbone
from serm_dagster.definitions import defs
from serm_dagster.evolution import resources_for
from serm_dagster.jobs import all_jobs
from serm_dagster.registry import CHAMPION, Registry
from serm_dagster.resources import MiningSettings, ModelSettings
from serm_dagster.runner import RunFailed, materialize_assets, run_job
from serm_dagster.sensors import (
    automation_condition_sensor,
    drift_sensor,
    landing_sensor,
    rejected_challenger_sensor,
    retraining_sensor,
    seed_model_sensor,
)
from serm_dagster.settings import SermPaths
from serm_dagster.simulator import SimulationConfig, simulate
from serm_dagster.storage import DeltaStore

SENSORS = [landing_sensor, seed_model_sensor, drift_sensor, retraining_sensor]
JOBS = {job.name: job for job in all_jobs}


class InProcessDaemon:
    """Sensor ticks and automation evaluations, and the runs they request executed one after another."""

    def __init__(self, resources: dict):
        self.resources, self.instance = resources, DagsterInstance.get()
        self.cursors: dict = {}
        self.run_keys: set = set()
        self.automation_cursor = None
        self.runs: list[tuple[str, dict]] = []  # (job or assets, tags) of every run, in order

    def tick(self) -> int:
        requests = []
        for sensor in SENSORS:
            context = build_sensor_context(instance=self.instance, cursor=self.cursors.get(sensor.name), definitions=defs,
                                           resources={k: self.resources[k] for k in ("lakehouse", "mlflow_resource")})
            data = sensor.evaluate_tick(context)
            self.cursors[sensor.name] = data.cursor
            for request in data.run_requests:
                if (sensor.name, request.run_key) in self.run_keys:  # the daemon launches a run key once
                    continue
                self.run_keys.add((sensor.name, request.run_key))
                requests.append((JOBS[request.job_name or sensor.job_name], request))
        automation = evaluate_automation_conditions(defs=defs, instance=self.instance, cursor=self.automation_cursor)
        self.automation_cursor = automation.cursor
        requested = sorted((r.key for r in automation.results if r.true_subset.size), key=str)
        for job, request in requests:
            self.execute(job, dict(request.tags), request.partition_key)
        if requested:
            tags = dict(automation_condition_sensor.run_tags)
            result = materialize_assets(requested, self.resources, tags)
            assert result.success
            self.runs.append((",".join(k.to_user_string() for k in requested), tags))
        return len(requests) + bool(requested)

    def execute(self, job, tags: dict, partition_key=None) -> None:
        self.runs.append((job.name, tags))
        try:
            run_job(job, self.resources, tags, partition_key=partition_key)
        except RunFailed:  # what the run-failure sensor sees
            run = self.instance.get_runs(limit=1)[0]
            failure = next(iter(self.instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)))
            context = build_run_status_sensor_context(
                sensor_name=rejected_challenger_sensor.name, dagster_instance=self.instance, dagster_run=run,
                dagster_event=failure.dagster_event).for_run_failure()
            request = rejected_challenger_sensor(context)
            assert request.__class__.__name__ == "RunRequest", request
            self.execute(JOBS[rejected_challenger_sensor.job_name], dict(request.tags))

    def until_quiet(self, limit: int = 8) -> None:
        for _ in range(limit):
            if not self.tick():
                return
        raise AssertionError(f"still requesting runs after {limit} ticks: {self.runs}")


def test_a_day_of_logs_dropped_into_landing_is_carried_to_a_new_champion(home, tmp_path):
    stream = tmp_path / "stream"
    # days 1-3 the seed period, day 4 drifted (and the evolving test judgments dated days 4-5)
    simulate(stream, SimulationConfig(days=5, queries_per_day=80, seed=3, seed_days=3, evolving_window_days=2,
                                      seed_judgments=600, test_judgments=600, drift_strength=2.0))
    landing = SermPaths.from_env(home).ensure().landing
    for source in ("catalog", "judgments", "knowledge"):
        shutil.copytree(stream / "landing" / source, landing / source, dirs_exist_ok=True)
    (landing / "logs").mkdir(parents=True, exist_ok=True)
    for day in ("2026-01-01", "2026-01-02", "2026-01-03"):
        shutil.copy(stream / "landing" / "logs" / f"logs-{day}.parquet", landing / "logs")

    paths = SermPaths.from_env(home)
    # the seed model barely moves its encoder (one epoch at a learning rate of 1e-7: little more than its head
    # learns), and retraining fine-tunes the whole encoder on the mix, so the challenger has something real to gain
    model = ModelSettings(backbone=truncated_backbone(tmp_path / "small", 2), epochs=1, encoder_lr=1e-7,
                          retrain_epochs=6, retrain_encoder_lr=3e-4, max_length=32, batch_size=16)
    resources = resources_for(paths, model_settings=model,
                              mining_settings=MiningSettings(window_days=1, budget=80, sample_rest=100, mc_passes=3,
                                                             embedding_sample_size=60))
    daemon = InProcessDaemon(resources)
    registry, store = Registry.under(home), DeltaStore(paths.lakehouse)

    # cold start: the history is ingested, the seed model becomes the first champion, the drift report of the
    # newest day against the seed period is made
    daemon.until_quiet()
    before = registry.alias_version(CHAMPION)
    cold = [job for job, _ in daemon.runs]
    assert cold[:6] == ["ingest_daily_job"] * 3 + ["ingest_reference_job", "seed_model_job", "gold/drift_reports"]
    # the first report compares day 3 with days 1-2 and says drifted: an iteration runs over day 3, whose gate has
    # no evolving judgments dated up to its window's end, so the challenger is rejected and the run-failure sensor
    # records the iteration
    assert cold[6:] == ["iteration_job", "record_iteration_job"]
    assert daemon.runs[-1][1]["serm/reason"].startswith("challenger rejected in run")
    first = store.read_arrow("gold/iterations").to_pandas().iloc[0]
    assert (first["promoted"], first["promotion_reason"]) == (False, "no evolving test set to compare on")

    # a new day of logs: ingested, its drift report says it drifted, the iteration that follows trains a
    # challenger, and the gate (evolving validation judgments dated up to 2026-01-04) promotes it
    daemon.runs.clear()
    shutil.copy(stream / "landing" / "logs" / "logs-2026-01-04.parquet", landing / "logs")
    daemon.until_quiet()
    jobs = [job for job, _ in daemon.runs]
    assert jobs[:3] == ["ingest_daily_job", "gold/drift_reports", "iteration_job"]
    tags = dict(daemon.runs)
    assert tags["ingest_daily_job"]["serm/reason"] == "new landing files for 2026-01-04"
    assert tags["gold/drift_reports"]["serm/trigger"] == "automation"
    assert tags["iteration_job"]["serm/trigger"] == "sensor"
    assert tags["iteration_job"]["serm/reason"].startswith("drift in 2026-01-04..2026-01-04")
    iteration = store.read_arrow("gold/iterations").to_pandas().sort_values("iteration").iloc[-1]
    assert str(iteration["window_end"]) == "2026-01-04" and iteration["model_before"] == before
    assert iteration["promoted"], iteration["promotion_reason"]
    assert jobs[3:] == [] and registry.alias_version(CHAMPION) == iteration["challenger"] != before
    # the runs are in the instance, with their reasons, as the UI shows them
    recorded = {r.job_name: r.tags for r in reversed(DagsterInstance.get().get_runs())}  # the newest of each job
    assert recorded["iteration_job"]["serm/reason"] == tags["iteration_job"]["serm/reason"]

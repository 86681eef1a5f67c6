"""Dagster resources: one SparkSession and the Delta lakehouse, both configured with defaults."""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from enum import Enum
from pathlib import Path

from dagster import Config, ConfigurableResource
from pydantic import ConfigDict, Field, PrivateAttr, create_model

from models.agents import AgreementSettings, OpenAIChatAgent
from models.agents.embedded import DEFAULT_AGENTS
from models.mixing import MixWeights
from models.training_config import TrainingConfig, WarmStart
from serm_dagster.registry import Registry
from serm_dagster.settings import SermPaths
from serm_dagster.storage import DeltaStore
from spark_jobs.drift import DriftSettings
from spark_jobs.landing import LandingLimits
from spark_jobs.mining import MinerSettings


LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


class Choice(str, Enum):
    """A setting with named values: a typo is an error, not the other branch; it prints as its value."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Strategy(Choice):
    AGENTS = "agents"  # the multi-agent annotator
    SELF_TRAINING = "self-training"  # the serving model's own predicted labels (the paper's baseline)


class RetrainFrom(Choice):
    CHAMPION = "champion"  # fine-tune the serving model on the mix
    BACKBONE = "backbone"  # train from the pretrained encoder


class Settings(ConfigurableResource):
    """Our resources: a field name that is not theirs (a misspelt setting) is an error, never dropped."""

    model_config = ConfigDict(extra="forbid")


# Dagster's config has no tuples: a tuple of (name, value) pairs (MinerSettings.score_weights) is a dict there
_PAIRS = tuple[tuple[str, float], ...]


def shared_fields(name: str, *sources) -> type[Settings]:
    """A ``Settings`` base class whose fields are those of plain settings dataclasses: each field's type, default
    and description (``models.about``) are defined once, in the dataclass that ``spark_jobs`` or ``models`` take,
    and the resource derived from it shows them in Dagster's config schema. A source is a dataclass (all its
    fields) or ``(dataclass, [names])``; a name two sources share comes from the first."""
    fields: dict = {}
    for source in sources:
        cls, names = source if isinstance(source, tuple) else (source, None)
        hints = typing.get_type_hints(cls)
        for spec in dataclasses.fields(cls):
            if (names is not None and spec.name not in names) or spec.name in fields:
                continue
            kind, default = hints[spec.name], spec.default
            if kind == _PAIRS:
                kind, default = dict[str, float], dict(default)
            fields[spec.name] = (kind, Field(default=default, description=spec.metadata.get("description")))
    return create_model(name, __base__=Settings, __module__=__name__, **fields)


def as_dataclass(cls, settings: Settings, **values):
    """The dataclass ``cls`` with the fields ``settings`` shares with it (``values`` override)."""
    hints = typing.get_type_hints(cls)
    shared = {f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)
              if f.name in type(settings).model_fields}
    shared = {k: tuple(v.items()) if hints[k] == _PAIRS else v for k, v in shared.items()}
    return cls(**{**shared, **values})


def build_spark_session(
    master: str = "local[2]",
    app_name: str = "serm-lakehouse",
    ui_enabled: bool = False,
    shuffle_partitions: int = 4,
    log_level: str = "ERROR",
    conf: dict[str, str] | None = None,
    driver_memory: str | None = None,
):
    """A SparkSession for a local master, a cluster master, or a Spark Connect URL (``sc://``)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    builder = builder.remote(master) if master.startswith("sc://") else builder.master(master)
    settings = {
        "spark.ui.enabled": str(ui_enabled).lower(),
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
        # staged Parquet (see DeltaStore.write) keeps microsecond UTC timestamps, as Arrow has them
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        # quiet start-up: no progress bars, no console log4j chatter below the chosen level
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        # local mode runs the executors in the driver's JVM. A whole iteration over a million-row window ran in 2g
        # (benchmarks/bench_iteration.py: JVM peak 2.7 GB, the process tree 5.0 GB; 4g let the JVM grow to 4.8 GB);
        # read when the JVM starts, i.e. by the process's first session
        "spark.driver.memory": driver_memory or os.environ.get("SERM_SPARK_DRIVER_MEMORY", "2g"),
    }
    if master.startswith("local"):
        # local executors are this machine's processes: their Python workers run this interpreter (and its
        # packages), not the first python3 on the PATH; PySpark reads it when the SparkContext starts. A
        # cluster's executors bring their own (PYSPARK_PYTHON there).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings.update(conf or {})
    if master.startswith("sc://"):
        settings = {k: v for k, v in settings.items() if not k.startswith(("spark.ui", "spark.driver"))}
    for key, value in settings.items():
        builder = builder.config(key, value)
    if not master.startswith("sc://"):
        start_jvm({**settings, "spark.master": master, "spark.app.name": app_name})
    session = builder.getOrCreate()
    if not master.startswith("sc://"):
        session.sparkContext.setLogLevel(log_level)
    return session


def spark_log(home: Path | None = None) -> Path:
    """Where the local Spark JVM's console output goes: ``SERM_HOME/logs/spark.log``."""
    return (home or SermPaths.from_env().home) / "logs" / "spark.log"


def start_jvm(settings: dict[str, str], log_file: Path | None = None) -> None:
    """Start this process's Spark JVM with ``settings`` and its console (the JDK's start-up warnings, Spark's
    "Setting default log level" notice, log4j's errors) appended to ``log_file`` (``spark_log()``), so the
    terminal holds only our lines; Python still gets every Spark error as an exception. Nothing happens when
    the JVM is up already (its settings hold) or PySpark was handed one (``PYSPARK_GATEWAY_PORT``)."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    if SparkContext._gateway is not None or "PYSPARK_GATEWAY_PORT" in os.environ:
        return
    log_file = log_file or spark_log()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as console:  # the JVM keeps its own handle
        gateway = launch_gateway(SparkConf(loadDefaults=False).setAll(list(settings.items())),
                                 popen_kwargs={"stderr": console})
    SparkContext._ensure_initialized(gateway=gateway)


class SparkResource(Settings):
    """One SparkSession per process: ``local[2]`` by default, any master or ``sc://`` URL otherwise."""

    master: str = Field(default_factory=lambda: os.environ.get("SERM_SPARK_MASTER", "local[2]"))
    app_name: str = "serm-lakehouse"
    ui_enabled: bool = False
    shuffle_partitions: int = 4
    log_level: str = "ERROR"
    conf: dict[str, str] = Field(default_factory=dict)

    def get_session(self):
        return build_spark_session(self.master, self.app_name, self.ui_enabled, self.shuffle_partitions,
                                   self.log_level, self.conf)


class LakehouseResource(Settings):
    """The data folder (``SERM_HOME``), its Delta tables (under it, or at ``SERM_LAKEHOUSE`` on object storage: see
    ``SermPaths``), and the limits on what one landing record may hold (``spark_jobs.landing.LandingLimits``; a
    value over its limit quarantines its row)."""

    home: str = Field(default_factory=lambda: str(SermPaths.from_env().home))
    hard_max_chars: int = Field(default=LandingLimits.hard_max_chars, description="the longest line of a "
                                "CSV or JSON Lines landing file, and the longest CSV field, that is read at all "
                                "(csv.field_size_limit while reading): the memory one record may take; a longer "
                                "one is skipped and its record quarantined")
    max_id_chars: int = Field(default=LandingLimits.max_id_chars, description="the longest id (request_id, "
                              "session_id, doc_id, language, concept, split ...) or number, boolean or timestamp")
    max_query_chars: int = Field(default=LandingLimits.max_query_chars, description="the longest query "
                                 "(query, term, UBI user_query)")
    max_title_chars: int = Field(default=LandingLimits.max_title_chars, description="the longest catalogue title")
    max_text_chars: int = Field(default=LandingLimits.max_text_chars, description="the longest free text "
                                "(description, attributes JSON, UBI document); the only values that may hold tab "
                                "and line breaks")
    max_quarantine_value_chars: int = Field(default=LandingLimits.max_quarantine_value_chars, description="a "
                                            "quarantined record stores each value cut to this many characters "
                                            "(the cut ones listed under _truncated)")
    batch_rows: int = Field(default=LandingLimits.batch_rows, description="records of a landing file read, "
                            "validated and turned into Arrow at a time: the driver holds one batch of Python values, "
                            "however large the file")
    _paths: SermPaths | None = PrivateAttr(default=None)

    def landing_limits(self) -> LandingLimits:
        """These settings as the ``LandingLimits`` the ingest functions take."""
        return LandingLimits(**{name: getattr(self, name) for name in LandingLimits.__dataclass_fields__})

    @property
    def paths(self) -> SermPaths:
        if self._paths is None:
            self._paths = SermPaths.from_env(self.home).ensure()
        return self._paths

    @property
    def store(self) -> DeltaStore:
        return DeltaStore(self.paths.lakehouse)


class MlflowResource(Settings):
    """MLflow tracking + registry, as ``Registry.under`` decides: ``MLFLOW_TRACKING_URI`` (a tracking server) or
    SQLite and artifacts under SERM_HOME, unless a URI is given here."""

    tracking_uri: str = Field(default="", description="'' = MLFLOW_TRACKING_URI, else SQLite under SERM_HOME")
    artifact_root: str = Field(default="", description="'' = the tracking server's artifact store, or "
                               "SERM_HOME/mlartifacts with SQLite")
    experiment: str = "serm"

    def registry(self, home: str | os.PathLike) -> Registry:
        return Registry.under(Path(home), self.experiment, self.tracking_uri, self.artifact_root)


# the training recipe a user sets; the others keep TrainingConfig's defaults (progress is the caller's)
TRAINING_FIELDS = ("epochs", "batch_size", "encoder_lr", "head_lr", "weight_decay", "warmup_ratio", "max_grad_norm",
                   "max_length", "seed", "mixed_precision")


class ModelSettings(shared_fields("TrainingFields", (TrainingConfig, TRAINING_FIELDS), WarmStart)):
    """How the relevance model is built, trained, evaluated and promoted. The training recipe's fields are
    ``models.training_config``'s: ``TrainingConfig`` (the seed model, from the backbone) and ``WarmStart`` (how
    retraining from the champion differs)."""

    backbone: str = Field(default_factory=lambda: os.environ.get("SERM_BACKBONE", "all-MiniLM-L6-v2"),
                          description="'all-MiniLM-L6-v2' (packaged), a Hugging Face id, or a local folder")
    device: str = Field(default="auto", description="'auto' uses the GPU when there is one")
    retrain_from: RetrainFrom = Field(default=RetrainFrom.CHAMPION, description="'champion': retraining fine-tunes the serving "
                              "model on the mix (fast, keeps what it knows); 'backbone': from the pretrained encoder")
    dropout: float = 0.1
    eval_batch_size: int = 64
    seed_weight: float = Field(default=1.0, description="training weight of the seed (SFT) pairs")
    earlier_weight: float = Field(default=1.0, description="training weight of earlier iterations' labels")
    current_weight: float = Field(default=1.0, description="training weight of this iteration's labels")
    evolving_days: int = Field(default=9, description="the evolving test set: the test judgments of the N days "
                               "ending at the iteration's window end (never later). 9: the three 3-day windows of a "
                               "comparison, so iteration k's gate sees the judgments of windows 1..k and the report "
                               "all of them")
    validation_share: float = Field(default=0.5, description="share of test queries (by a stable hash of the "
                                    "normalised query) in the validation part promotion decides on; the rest is "
                                    "the test part reports show")
    static_margin: float = Field(default=0.5, description="NDCG@1 points the static set may lose at promotion, "
                                 "against the seed model (so losses do not add up over iterations; see "
                                 "models.evaluation.promotion_decision)")
    seed_model_from: str = Field(default="", description="a model folder (RelevanceModel.save's layout, e.g. "
                                 "another home's registered seed model) to adopt as the seed model instead of "
                                 "training one; '' trains it on the seed judgments")

    def training_config(self, progress: bool = True, warm_start: bool = False) -> TrainingConfig:
        """The recipe of the seed model, or with ``warm_start`` of retraining from the champion (``WarmStart``)."""
        recipe = as_dataclass(TrainingConfig, self, progress=progress)
        return recipe.warm_started(as_dataclass(WarmStart, self)) if warm_start else recipe

    def scorer_options(self) -> dict:
        """The Scorer arguments these settings decide (device, batch size, precision)."""
        return {"device": self.device, "batch_size": self.eval_batch_size, "mixed_precision": self.mixed_precision}

    def scorer(self, model_dir):
        """A Scorer for a saved model with these settings."""
        from models.inference import Scorer  # torch loads when a model scores, not with the resource

        return Scorer.from_folder(model_dir, **self.scorer_options())

    def mix_weights(self):
        return MixWeights(seed=self.seed_weight, earlier=self.earlier_weight, current=self.current_weight)


class MiningSettings(shared_fields("MinerFields", MinerSettings, (DriftSettings, ["embedding_sample_size"]))):
    """The iteration's window, the drift report's sample and the miner's thresholds: every field of
    ``spark_jobs.mining.MinerSettings`` (see spark_jobs/mining.py), defined there once."""

    window_days: int = Field(default=3, description="days in the window of the stream an iteration mines")
    window_end: str = Field(default="", description="the window's last day (ISO date), the iteration's as-of day: "
                            "drift, mining and evaluation read nothing dated after it; '' = the newest ingested "
                            "day of query logs. `serm evolve` sets it per replayed iteration")

    def miner(self) -> MinerSettings:
        return as_dataclass(MinerSettings, self)

    def drift(self) -> DriftSettings:
        return as_dataclass(DriftSettings, self)


class LlmAgentConfig(Config):
    """One LLM judge behind an OpenAI-compatible chat API (vLLM, Ollama, llama.cpp server, hosted)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    base_url: str = Field(description="e.g. http://localhost:8000/v1 (vLLM) or http://localhost:11434/v1 (Ollama)")
    model: str
    api_key_env: str | None = Field(default="OPENAI_API_KEY", description="environment variable holding the key")
    temperature: float = 0.7
    max_concurrency: int = 4
    timeout_s: float = 30.0
    max_retries: int = 4


# min_backends depends on the panel here (backends_needed); progress is the caller's
AGREEMENT_FIELDS = [f.name for f in dataclasses.fields(AgreementSettings) if f.name not in ("min_backends", "progress")]


class AnnotatorSettings(shared_fields("AgreementFields", (AgreementSettings, AGREEMENT_FIELDS))):
    """Who labels the mined pairs and how they must agree: the agreement's fields are
    ``models.agents.AgreementSettings``' (see models/agents/agreement.py), defined there once."""

    strategy: Strategy = Field(default=Strategy.AGENTS, description="'agents': the multi-agent annotator; 'self-training': "
                          "the serving model's own predicted labels (the paper's baseline)")
    self_training_min_confidence: float = Field(default=0.5, description="self-training keeps a predicted label "
                                                "only where the model gives it at least this probability (0 keeps "
                                                "all); on the demo stream 0.5 keeps 60% of them, 47% right against 42% for all")
    embedded_agents: list[str] = Field(default=list(DEFAULT_AGENTS),
                                       description="the embedded judges on the panel (no LLM needed)")
    judge_options: dict[str, dict[str, float]] = Field(
        default={}, description="per embedded judge, its numeric options (models/agents/embedded.py JUDGE_OPTIONS): "
                                "min_accuracy (the out-of-fold accuracy a vote needs: knowledge and features 0.6, behaviour 0.8), "
                                "solo_accuracy (the one at which a vote may stand alone: 0.9), folds (fold "
                                "models = reasoning paths, default 3), min_support (behaviour judge)")
    click_history_days: int = Field(default=28, ge=1, description="the embedded judges learn what query words "
                                    "stand for from the clicks of this many days up to the window's end")
    llm_agents: list[LlmAgentConfig] = Field(default=[], description="LLM judges added to the panel")
    min_backends: int | None = Field(default=None, description="a label needs agreeing judges of at least this "
                                     "many different backends (embedded, openai-chat...), so that judges fooled "
                                     "by the same injected text cannot label alone; unset: 2 when LLM judges are "
                                     "on the panel, else 1")

    def backends_needed(self) -> int:
        if self.min_backends is not None:
            return self.min_backends
        return 2 if self.llm_agents else 1

    def agreement(self) -> AgreementSettings:
        return as_dataclass(AgreementSettings, self, min_backends=self.backends_needed())

    def llm_panel(self) -> list:
        return [OpenAIChatAgent(a.name, a.base_url, a.model, api_key_env=a.api_key_env, temperature=a.temperature,
                                max_concurrency=a.max_concurrency, timeout_s=a.timeout_s, max_retries=a.max_retries)
                for a in self.llm_agents]

"""Cold start: seed judgments from the judge panel's LLM judges, for logs and a catalogue without judgments.

``bootstrap_seed_judgments`` samples pairs users were shown (``silver/impressions``, the ingested logs), has the
panel's LLM judges label them under the panel's agreement rule (the annotator's two levels,
``models.agents.annotate``, with its vote cache, so a second run asks only what the first did not get), and
writes the accepted labels as seed judgments (``split=seed``, ``ts`` the last day the pair was shown) to
``landing/judgments/bootstrap_seed.csv``; ``serm ingest`` reads them like any other judgments file.

Only the LLM judges vote: the embedded judges learn from seed judgments, so they cannot make them. The rule then
asks for the one backend they run on and at most as many voters as there are LLM judges.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import Callable

import numpy as np
import pandas as pd

from assets.ingest import BRONZE_CATALOG, SILVER_IMPRESSIONS
from models.agents import SqliteVoteCache, annotate
from models.agents.embedded import pairs_to_judge
from serm_dagster.panel import Panel
from serm_dagster.settings import SermPaths
from serm_dagster.storage import DeltaStore
from serm_dagster.tables import table_name

BOOTSTRAP_FILE = "bootstrap_seed.csv"
PAIR = ["query", "language", "doc_id"]
JUDGMENT_COLUMNS = ["query", "doc_id", "language", "label", "split", "ts"]


class BootstrapError(ValueError):
    """What bootstrapping lacks (LLM judges, ingested logs or catalogue), and what to add."""


@dataclass(frozen=True)
class BootstrapSettings:
    pairs: int = 2000  # pairs sent to the judges at most
    per_query: int = 8  # a sampled query's shown documents at most, the best-placed first
    until: str = ""  # only pairs shown up to this day (ISO date; '' = every ingested day): the seed period's end
    seed: int = 7  # which queries are sampled
    replace: bool = False  # overwrite an earlier bootstrap file

    def __post_init__(self) -> None:
        if self.pairs < 1 or self.per_query < 1:
            raise BootstrapError("--pairs and --per-query must be at least 1")
        try:
            date.fromisoformat(self.until) if self.until else None
        except ValueError as exc:
            raise BootstrapError(f"--until {self.until!r} is not an ISO date (e.g. 2026-01-31)") from exc


def sample_shown_pairs(impressions: pd.DataFrame, settings: BootstrapSettings) -> pd.DataFrame:
    """``query, language, doc_id, ts``: queries drawn at random (seeded), each with up to ``per_query`` of the
    documents it was shown with (best mean position first), until ``pairs``; ``ts`` is the pair's last day."""
    if impressions.empty:
        return pd.DataFrame(columns=[*PAIR, "ts"])
    shown = impressions.groupby(PAIR, as_index=False).agg(ts=("date", "max"), position=("mean_position", "mean"))
    shown = shown.sort_values([*PAIR[:2], "position", "doc_id"]).groupby(PAIR[:2]).head(settings.per_query)
    queries = shown[PAIR[:2]].drop_duplicates().sort_values(PAIR[:2]).reset_index(drop=True)
    order = np.random.default_rng(settings.seed).permutation(len(queries))
    ranked = queries.iloc[order].assign(rank=range(len(queries)))
    sampled = shown.merge(ranked, on=PAIR[:2]).sort_values(["rank", "position", "doc_id"])
    return sampled.head(settings.pairs)[[*PAIR, "ts"]].reset_index(drop=True)


def llm_judging(panel: Panel) -> tuple[list, object]:
    """The panel's LLM judges and the agreement rule they can meet on their own."""
    settings = panel.settings()
    judges = settings.llm_panel()
    if not judges:
        raise BootstrapError(f"the judge panel ({panel.path or 'built-in defaults'}) has no LLM judges: seed labels "
                             "need them, as the embedded judges learn from seed judgments. Add `- name: ..., "
                             "base_url: ..., model: ...` judges to a panel file (README, 'Configuring the judge "
                             "panel') and pass it with --panel, or add seed judgments to landing/judgments/")
    rule = replace(settings.agreement(), min_backends=1, min_voters=min(settings.min_voters, len(judges)))
    return judges, rule


def _ingested(store: DeltaStore, key, what: str, folder) -> pd.DataFrame:
    if not store.exists(table_name(key)):
        raise BootstrapError(f"no {what} ingested yet ({table_name(key)}): put {what} into {folder} and run "
                             "`serm ingest`")
    return store.read_arrow(table_name(key)).to_pandas()


def bootstrap_seed_judgments(paths: SermPaths, panel: Panel, settings: BootstrapSettings = BootstrapSettings(),
                             echo: Callable[[str], None] = print) -> dict:
    """Label a sample of shown pairs with the panel's LLM judges and write the accepted ones as seed judgments;
    returns what was sampled, judged, accepted and written where."""
    judges, rule = llm_judging(panel)
    target = paths.landing_judgments / BOOTSTRAP_FILE
    if target.exists() and not settings.replace:
        raise BootstrapError(f"{target} exists (an earlier bootstrap): pass --replace to label a new sample "
                             "(the judges' answers are cached, so pairs already asked are not asked again)")
    store = DeltaStore(paths.lakehouse)
    impressions = _ingested(store, SILVER_IMPRESSIONS, "logs", paths.landing_logs)
    catalog = _ingested(store, BRONZE_CATALOG, "a catalogue", paths.landing_catalog)
    if settings.until:
        impressions = impressions[pd.to_datetime(impressions["date"]) <= pd.Timestamp(settings.until)]
    known = impressions["doc_id"].isin(catalog["doc_id"])  # a document without text: the judges would abstain
    sample = sample_shown_pairs(impressions[known], settings)
    if sample.empty:
        raise BootstrapError(f"no shown pair{' up to ' + settings.until if settings.until else ''} has its "
                             "document in the catalogue: ingest more logs, or the catalogue of their documents")
    echo(f"bootstrap: {len(sample)} shown pairs ({sample['query'].nunique()} queries) to "
         f"{', '.join(j.name for j in judges)}; a label needs {rule.min_voters} agreeing voter(s), quorum "
         f"{rule.quorum}")
    result = annotate(pairs_to_judge(sample[PAIR], catalog), judges, rule,
                      cache=SqliteVoteCache(paths.state / "agent_cache.sqlite"))
    stats = result.stats()
    if result.consensus.empty:
        raise BootstrapError(f"the judges agreed on none of the {len(sample)} pairs ({stats['failed_paths']} of "
                             f"{stats['paths']} answers failed): check that each judge answers (its base_url, "
                             "model and key), or loosen the panel's agreement rule")
    days = sample.assign(ts=pd.to_datetime(sample["ts"]).dt.strftime("%Y-%m-%d"))
    judgments = result.consensus[PAIR + ["label"]].merge(days, on=PAIR).assign(split="seed")[JUDGMENT_COLUMNS]
    target.parent.mkdir(parents=True, exist_ok=True)
    judgments.to_csv(target, index=False)
    return {"file": target, "sampled": len(sample), "accepted": len(judgments), "stats": stats,
            "labels": {int(k): int(v) for k, v in judgments["label"].value_counts().sort_index().items()},
            "days": (judgments["ts"].min(), judgments["ts"].max())}

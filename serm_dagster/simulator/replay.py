"""Replay a judged set (a catalogue and graded judgments, e.g. ESCI) as a drifting query stream.

``replay(home, judged_set, ReplayConfig(...))`` writes into ``home`` (SERM_HOME) what ``simulate`` does,
in the same files: ``landing/catalog``, ``landing/logs`` (one file a day), ``landing/judgments``
(``seed.parquet``, ``test.parquet``), ``simulator/truth/truth.parquet`` and ``simulator/manifest.json``;
no glossary (an earlier one is removed). Everything is a deterministic function of the judged set
and the config.

- **Queries and candidates.** A query is a judged ``(query, language)``; its judged documents are its
  candidate set. Each request shows at most ``results_per_query`` (10) of them, ranked by a noisy
  lexical + popularity ranker that never sees the label (query-title token overlap, a per-document
  popularity prior, Gaussian noise per request), so relevant documents are often not on top.
- **Clicks and dwell.** A position-based click model: examination ``1 / position^0.8``, attractiveness
  rising with the true grade (the simulator's ``ATTRACTIVENESS``) times a per-pair lognormal noise;
  dwell of a click lognormal around the grade's median (6 s .. 60 s), as in ``stream.py``.
- **Query groups and drift.** Queries are grouped by the top category most of their judged documents
  name (``attributes.category``, a " > " path or a list); with fewer than 3 such groups, by a hash
  of the query text (``hash_groups`` buckets). Groups are *early* or *late*: early groups carry the
  seed period and fade to ``early_floor`` of their traffic by the last day; late groups are absent
  from the seed period, appear one after another between the seed period's end and the evolving
  window's start, and ramp up over ``ramp_days`` to ``late_boost`` times an early group's traffic.
  So the newest windows hold queries the seed period never had.
- **Roles** (over queries; defaults chosen for ESCI's 60 queries): late groups get about
  ``1 - seed_fraction - static_fraction`` (35%) of the queries, greedily over the groups in a seeded
  order; within early groups, queries are *seed* (40% of all) or *static* test (25%, held out by
  query from the seed set); within late groups, *evolving* test (25%) or *stream-only* (10%: never
  judged in landing/, what the SERM iterations can mine that no test set holds). Each role keeps at
  least one query. On ESCI with the defaults: 24 seed, 15 static, 15 evolving, 6 stream-only queries.
- **Judgments** are the pairs actually shown, with ``ts`` the first impression in their period:
  seed = seed queries' pairs shown in the seed period; static = static queries' pairs shown up to
  the newest seed judgment's day; evolving = evolving queries' pairs shown in the newest
  ``evolving_window_days``. This is what ``spark_jobs.training.split_test_sets`` expects (static: up
  to the newest seed day; evolving: the 3 days up to the newest test day, which hold every evolving
  pair). Every seed and static query is issued at least once in the seed period, every evolving
  query at least once in the evolving window.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import vocab
from .catalog import tokenize
from .core import (CATALOG_SCHEMA, JUDGMENT_SCHEMA, LOG_SCHEMA, TRUTH_SCHEMA, clear_logs, remove_glossary,
                   write_parquet)
from .judged import PAIR_KEY, JudgedSet
from .stream import ATTRACTIVENESS, DWELL_MEDIAN_MS, DWELL_SIGMA, EXAMINATION_EXPONENT, MAX_SESSION

# The replay's production ranker: it never sees the label.
LEXICAL_WEIGHT = 2.0          # times the share of query tokens in the title
POPULARITY_WEIGHT = 0.6       # times a per-document N(0, 1) popularity prior
RANKER_NOISE = 1.0            # per request and document
ATTRACTIVENESS_NOISE = 0.3    # sigma of the per-pair lognormal factor on the grade's attractiveness
MAX_ATTRACTIVENESS = 0.95
QUERY_POPULARITY_SIGMA = 0.8  # lognormal popularity of a query within its group
SESSION_CONTINUE = 0.45       # chance a session holds one more request
MIN_CATEGORY_GROUPS = 3
ROLES = ("seed", "static", "evolving", "stream-only")


@dataclass(frozen=True)
class ReplayConfig:
    """How to replay a judged set. Everything written is a deterministic function of it and the set."""

    days: int = 14
    queries_per_day: int = 300
    seed: int = 7
    start_date: str = "2026-01-01"      # first day, ISO date (UTC)
    seed_days: int = 4                  # the seed period at the start
    evolving_window_days: int = 9       # the evolving test set's days: the three 3-day windows at the end
    results_per_query: int = 10         # documents shown per request at most
    seed_fraction: float = 0.4          # of the queries: seed set
    static_fraction: float = 0.25       # static test set (seed-period groups, held out by query)
    evolving_fraction: float = 0.25     # evolving test set (late groups); the rest: stream-only queries
    hash_groups: int = 6                # buckets when queries are grouped by a hash of their text
    early_floor: float = 0.4            # early groups' traffic on the last day, relative to the first
    late_boost: float = 2.0             # a late group's traffic at full ramp, relative to an early one's
    ramp_days: float = 3.0              # days a late group takes to reach full traffic

    def validate(self) -> "ReplayConfig":
        if self.days < self.seed_days + self.evolving_window_days:
            raise ValueError("days must be >= seed_days + evolving_window_days (the test sets must not overlap)")
        if self.seed_days < 1 or self.evolving_window_days < 1:
            raise ValueError("seed_days and evolving_window_days must be >= 1")
        if self.queries_per_day < 1 or self.results_per_query < 1 or self.hash_groups < 2:
            raise ValueError("queries_per_day and results_per_query must be >= 1, hash_groups >= 2")
        fractions = (self.seed_fraction, self.static_fraction, self.evolving_fraction)
        if min(fractions) <= 0 or sum(fractions) > 1:
            raise ValueError("seed_, static_ and evolving_fraction must be > 0 and sum to at most 1")
        if not 0 <= self.early_floor <= 1 or self.late_boost <= 0 or self.ramp_days <= 0:
            raise ValueError("early_floor must be within [0, 1], late_boost and ramp_days > 0")
        dt.date.fromisoformat(self.start_date)
        return self

    def day(self, index: int) -> dt.date:
        return dt.date.fromisoformat(self.start_date) + dt.timedelta(days=index)

    def day_str(self, index: int) -> str:
        return self.day(index).isoformat()


# ---------------------------------------------------------------------------------------------
# The plan: groups, roles, when each group is live.


def top_category(attributes: str) -> str | None:
    """The first level of a document's ``category`` attribute (a " > " path, or a list), if any."""
    value = json.loads(attributes or "{}").get("category")
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str):
        return None
    return value.split(">")[0].strip() or None


def _hash_group(query: str, language: str, buckets: int) -> str:
    digest = hashlib.sha256(f"{language}\t{query}".encode()).digest()
    return f"hash-{int.from_bytes(digest[:4], 'big') % buckets}"


def query_groups(judged: JudgedSet, config: ReplayConfig) -> pd.DataFrame:
    """One row per query (query, language): its group and how many judged documents it has."""
    category = dict(zip(judged.catalog["doc_id"], judged.catalog["attributes"].map(top_category)))
    rows = []
    for (query, language), docs in judged.judgments.groupby(["query", "language"], sort=True)["doc_id"]:
        counts = Counter(c for c in docs.map(category) if c is not None)
        best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        rows.append((query, language, best[0][0] if best else None, len(docs)))
    groups = pd.DataFrame(rows, columns=["query", "language", "group", "n_docs"])
    if groups["group"].dropna().nunique() < MIN_CATEGORY_GROUPS:
        groups["group"] = None
    hashed = [_hash_group(q, lang, config.hash_groups) for q, lang in zip(groups["query"], groups["language"])]
    groups["group"] = groups["group"].where(groups["group"].notna(), pd.Series(hashed, index=groups.index))
    return groups


def _late_groups(sizes: pd.Series, target: int, rng: np.random.Generator) -> list[str]:
    """Groups, in a seeded order, moved to the late side: first those that fit under ``target`` queries, then
    any that still brings it nearer; at least 2 queries stay early."""
    total, late, chosen = int(sizes.sum()), 0, []
    order = list(sizes.index[rng.permutation(len(sizes))])
    for fits in (True, False):
        for name in order:
            size = int(sizes[name])
            nearer = late + size <= target if fits else abs(late + size - target) < abs(late - target)
            if name not in chosen and nearer and total - late - size >= 2:
                chosen.append(name)
                late += size
    return chosen


def assign_roles(groups: pd.DataFrame, config: ReplayConfig) -> pd.DataFrame:
    """``groups`` with ``late`` (bool), ``appears`` (first day index of the query's group) and ``role``."""
    n = len(groups)
    if n < 3:
        raise ValueError(f"the judged set has {n} queries; a replay needs at least 3 (seed, static, evolving)")
    rng = np.random.default_rng([config.seed, 11])
    target = max(1, round((1 - config.seed_fraction - config.static_fraction) * n))
    late = _late_groups(groups.groupby("group").size(), target, rng)
    if not late:  # one group holds nearly everything: fall back to a group per query
        groups = groups.assign(group=[f"query-{i}" for i in range(n)])
        late = _late_groups(groups.groupby("group").size(), target, rng)
    out = groups.assign(late=groups["group"].isin(late), role="")
    first, last = config.seed_days, config.days - config.evolving_window_days
    starts = np.linspace(first, last, num=len(late)).round().astype(int) if len(late) > 1 else [first]
    appears = dict(zip(late, (int(s) for s in starts)))
    out["appears"] = out["group"].map(appears).fillna(0).astype(int)

    def split(mask: pd.Series, share_second: float, first_role: str, second_role: str, min_second: int) -> None:
        index = out.index[mask][rng.permutation(int(mask.sum()))]
        k = min(len(index) - 1, max(min_second, round(share_second * len(index))))
        out.loc[index[:k], "role"] = second_role
        out.loc[index[k:], "role"] = first_role

    split(~out["late"], config.static_fraction / (config.seed_fraction + config.static_fraction),
          "seed", "static", 1)
    rest = 1 - config.seed_fraction - config.static_fraction - config.evolving_fraction
    split(out["late"], rest / (rest + config.evolving_fraction), "evolving", "stream-only", 0)
    return out


def group_traffic(plan: pd.DataFrame, config: ReplayConfig, day: int) -> np.ndarray:
    """Each query's share of the day's requests (its group's traffic spread by query popularity)."""
    t = day / max(1, config.days - 1)
    early = 1.0 - (1.0 - config.early_floor) * t
    ramp = np.clip((day - plan["appears"].to_numpy() + 1) / config.ramp_days, 0.0, 1.0)
    group_mass = np.where(plan["late"].to_numpy(), config.late_boost * ramp, early)
    weight = group_mass * plan["popularity"].to_numpy()
    total = float(weight.sum())
    return weight / total if total > 0 else weight


def daily_queries(plan: pd.DataFrame, config: ReplayConfig) -> list[np.ndarray]:
    """For each day, the plan rows (queries) of its requests: the forced appearances, then draws."""
    rng = np.random.default_rng([config.seed, 12])
    forced: list[list[int]] = [[] for _ in range(config.days)]
    evo_first = config.days - config.evolving_window_days
    for roles, days in ((("seed", "static"), range(config.seed_days)),
                        (("evolving",), range(evo_first, config.days))):
        rows = np.flatnonzero(plan["role"].isin(roles).to_numpy())
        for k, row in enumerate(rows[rng.permutation(len(rows))]):
            forced[days[k % len(days)]].append(int(row))
    out = []
    for day in range(config.days):
        p = group_traffic(plan, config, day)
        extra = max(0, config.queries_per_day - len(forced[day]))
        out.append(np.concatenate([np.array(forced[day], dtype=np.int64),
                                   rng.choice(len(plan), size=extra, p=p)]))
    return out


# ---------------------------------------------------------------------------------------------
# The stream: ranking, clicks, timestamps.


def candidates(judged: JudgedSet, plan: pd.DataFrame, config: ReplayConfig) -> list[dict]:
    """Per plan row: its judged documents with their labels, the ranker's fixed score part and each pair's
    attractiveness."""
    rng = np.random.default_rng([config.seed, 13])
    doc_ids = sorted(judged.catalog["doc_id"])
    popularity = dict(zip(doc_ids, rng.normal(0.0, 1.0, size=len(doc_ids))))
    titles = dict(zip(judged.catalog["doc_id"], judged.catalog["title"].map(lambda t: set(tokenize(t)))))
    by_query = {key: part.sort_values("doc_id") for key, part in judged.judgments.groupby(["query", "language"])}
    out = []
    for query, language in zip(plan["query"], plan["language"]):
        part = by_query[(query, language)]
        tokens = set(tokenize(query))
        overlap = np.array([len(tokens & titles[d]) / max(1, len(tokens)) for d in part["doc_id"]])
        labels = part["label"].to_numpy().astype(np.int8)
        attract = ATTRACTIVENESS[labels] * rng.lognormal(0.0, ATTRACTIVENESS_NOISE, size=len(labels))
        out.append({"doc_id": part["doc_id"].to_numpy(dtype=object), "label": labels,
                    "prior": LEXICAL_WEIGHT * overlap + POPULARITY_WEIGHT * np.array([popularity[d] for d in
                                                                                     part["doc_id"]]),
                    "attractiveness": np.minimum(attract, MAX_ATTRACTIVENESS)})
    return out


def simulate_day(day: int, rows: np.ndarray, plan: pd.DataFrame, cands: list[dict],
                 config: ReplayConfig) -> pd.DataFrame:
    """The impressions of one day's requests (``rows``: plan rows, one per request)."""
    rng = np.random.default_rng([config.seed, 100, day])
    n = len(rows)
    hours = np.array(vocab.HOURLY_TRAFFIC)
    seconds = rng.choice(24, size=n, p=hours / hours.sum()) * 3600 + rng.random(n) * 3600
    day_ms = int(dt.datetime.combine(config.day(day), dt.time(), tzinfo=dt.timezone.utc).timestamp() * 1000)
    ts = np.minimum(day_ms + (seconds * 1000).astype(np.int64), day_ms + 86_400_000 - 1)
    order = np.lexsort((np.arange(n), ts))
    session, size = np.zeros(n, dtype=np.int64), 1
    for k in range(1, n):  # consecutive requests in time order share a session
        more = size < MAX_SESSION and rng.random() < SESSION_CONTINUE
        session[k] = session[k - 1] + (0 if more else 1)
        size = size + 1 if more else 1
    stamp = config.day(day).strftime("%Y%m%d")
    frames = []
    for k, i in enumerate(order):
        c = cands[int(rows[i])]
        score = c["prior"] + rng.normal(0.0, RANKER_NOISE, size=len(c["prior"]))
        shown = np.argsort(-score, kind="stable")[:config.results_per_query]
        position = np.arange(1, len(shown) + 1)
        clicked = rng.random(len(shown)) < c["attractiveness"][shown] / position ** EXAMINATION_EXPONENT
        label = c["label"][shown]
        dwell = rng.lognormal(np.log(DWELL_MEDIAN_MS[label]), DWELL_SIGMA)
        frames.append(pd.DataFrame({
            "request_id": f"r{stamp}-{k:06d}", "ts": ts[i], "session_id": f"s{stamp}-{session[k]:05d}",
            "query": plan["query"].iat[int(rows[i])], "language": plan["language"].iat[int(rows[i])],
            "doc_id": c["doc_id"][shown], "position": position.astype(np.int32), "clicked": clicked,
            "dwell_ms": np.where(clicked, np.round(dwell, 1), np.nan), "label": label,
            "role": plan["role"].iat[int(rows[i])], "late": plan["late"].iat[int(rows[i])]}))
    out = pd.concat(frames, ignore_index=True)
    out["day"] = day
    return out


# ---------------------------------------------------------------------------------------------
# Writing the stream.


def _first_shown(imp: pd.DataFrame, role: str, first_day: int, last_day: int) -> pd.DataFrame:
    """The pairs of ``role``'s queries shown within the days, each with its first impression's ``ts``."""
    part = imp[(imp["role"] == role) & imp["day"].between(first_day, last_day)]
    part = part.sort_values(["ts", "request_id", "position"], kind="stable").drop_duplicates(PAIR_KEY)
    return part[["query", "doc_id", "language", "label", "ts", "day"]].reset_index(drop=True)


def judgments(imp: pd.DataFrame, config: ReplayConfig) -> dict[str, pd.DataFrame]:
    """The seed, static and evolving judgments (see the module docstring)."""
    seed = _first_shown(imp, "seed", 0, config.seed_days - 1)
    seed_end = int(seed["day"].max()) if len(seed) else config.seed_days - 1
    static = _first_shown(imp, "static", 0, seed_end)
    evolving = _first_shown(imp, "evolving", config.days - config.evolving_window_days, config.days - 1)
    sets = {"seed": seed, "static": static, "evolving": evolving}
    for name, part in sets.items():
        part["split"] = "seed" if name == "seed" else "test"
        part["test_set"] = name
    return sets


def _stats(imp: pd.DataFrame, plan: pd.DataFrame, config: ReplayConfig) -> dict:
    per_request = imp.drop_duplicates("request_id")
    seed_queries = set(per_request.loc[per_request["day"] < config.seed_days, "query"])
    late_share = per_request.groupby("day")["late"].mean()
    unseen = per_request.assign(new=~per_request["query"].isin(seed_queries)).groupby("day")["new"].mean()
    return {
        "label_distribution": {str(k): round(float(v), 4) for k, v in
                               imp["label"].value_counts(normalize=True).reindex(range(4), fill_value=0).items()},
        "ctr_by_label": {str(k): round(float(v), 4) for k, v in imp.groupby("label")["clicked"].mean().items()},
        "ctr_by_position": {str(k): round(float(v), 4) for k, v in imp.groupby("position")["clicked"].mean().items()},
        "mean_label_at_position_1": round(float(imp.loc[imp["position"] == 1, "label"].mean()), 4),
        "mean_label_shown": round(float(imp["label"].mean()), 4),
        "per_day": {config.day_str(d): {"late_group_share": round(float(late_share[d]), 4),
                                        "queries_unseen_in_seed_period": round(float(unseen[d]), 4)}
                    for d in late_share.index},
        "queries_per_role": {role: int((plan["role"] == role).sum()) for role in ROLES},
    }


def _groups_manifest(plan: pd.DataFrame, config: ReplayConfig) -> list[dict]:
    out = []
    for name, part in plan.groupby("group", sort=True):
        late = bool(part["late"].iat[0])
        out.append({"group": name, "kind": "late" if late else "early",
                    "appears": config.day_str(int(part["appears"].iat[0])) if late else config.day_str(0),
                    "queries": {role: int(n) for role, n in part["role"].value_counts().sort_index().items()}})
    return out


def replay(home: str | Path, judged: JudgedSet, config: ReplayConfig = ReplayConfig()) -> dict:
    """Write the replayed stream into ``home`` (SERM_HOME); returns the summary the manifest holds."""
    started = time.perf_counter()
    config.validate()
    home, landing = Path(home), Path(home) / "landing"
    plan = assign_roles(query_groups(judged, config), config)
    plan["popularity"] = np.random.default_rng([config.seed, 10]).lognormal(0.0, QUERY_POPULARITY_SIGMA, len(plan))
    cands = candidates(judged, plan, config)
    days = [config.day_str(d) for d in range(config.days)]

    rows: dict = {"catalog": write_parquet(judged.catalog, CATALOG_SCHEMA, landing / "catalog" / "catalog.parquet")}
    logs_dir, rows["logs"], frames = clear_logs(landing), {}, []
    for day, requests in enumerate(daily_queries(plan, config)):
        frame = simulate_day(day, requests, plan, cands, config)
        rows["logs"][days[day]] = write_parquet(frame, LOG_SCHEMA, logs_dir / f"logs-{days[day]}.parquet")
        frames.append(frame)
    remove_glossary(landing)
    imp = pd.concat(frames, ignore_index=True)

    first = imp.drop_duplicates(PAIR_KEY, keep="first")
    truth = first.assign(first_seen=first["day"].map(days.__getitem__))
    rows["truth"] = write_parquet(truth, TRUTH_SCHEMA, home / "simulator" / "truth" / "truth.parquet")
    sets = judgments(imp, config)
    rows["seed_judgments"] = write_parquet(sets["seed"], JUDGMENT_SCHEMA, landing / "judgments" / "seed.parquet")
    rows["test_judgments"] = write_parquet(pd.concat([sets["static"], sets["evolving"]], ignore_index=True),
                                           JUDGMENT_SCHEMA, landing / "judgments" / "test.parquet")
    rows["glossary"] = 0

    evo_first = config.days - config.evolving_window_days
    seed_end = days[int(sets["seed"]["day"].max())] if len(sets["seed"]) else days[config.seed_days - 1]
    windows = {"seed_period": [days[0], days[config.seed_days - 1]], "static_test_window": [days[0], seed_end],
               "evolving_window": [days[evo_first], days[-1]]}
    counts = {
        "rows": rows,
        "queries": int(imp["request_id"].nunique()),
        "sessions": int(imp["session_id"].nunique()),
        "documents": int(len(judged.catalog)),
        "judged_queries": int(len(plan)),
        "judged_pairs": int(len(judged.judgments)),
        "distinct_pairs": int(len(truth)),
        "judgments": {name: int(len(part)) for name, part in sets.items()},
        "judgment_queries": {name: int(part[["query", "language"]].drop_duplicates().shape[0])
                             for name, part in sets.items()},
    }
    stats = _stats(imp, plan, config)
    manifest = {"generator": "serm_dagster.simulator.replay", "config": asdict(config), "source": judged.source,
                "days": days, **windows, "languages": sorted(imp["language"].unique().tolist()),
                "drift_events": [],  # the drift is over query groups, not terms: see query_groups
                "query_groups": _groups_manifest(plan, config), "counts": counts, "stats": stats}
    (home / "simulator").mkdir(parents=True, exist_ok=True)
    (home / "simulator" / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                                      encoding="utf-8")
    return {"home": str(home), "days": days, **windows, "counts": counts, "stats": stats,
            "drift_events": [], "elapsed_s": round(time.perf_counter() - started, 3)}

"""`simulate()`: writes the catalogue, daily logs, judgments, glossary, hidden truth, manifest."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import vocab
from .catalog import Catalog, attribute_forms, build_catalog, category_forms
from .config import SimulationConfig
from .drift import DriftSchedule
from .stream import ATTRACTIVENESS, build_indexes, simulate_day

CATALOG_SCHEMA = pa.schema([("doc_id", pa.string()), ("language", pa.string()),
                            ("title", pa.string()), ("description", pa.string()),
                            ("attributes", pa.string())])
LOG_SCHEMA = pa.schema([("request_id", pa.string()), ("ts", pa.int64()),
                        ("session_id", pa.string()), ("query", pa.string()),
                        ("language", pa.string()), ("doc_id", pa.string()),
                        ("position", pa.int32()), ("clicked", pa.bool_()),
                        ("dwell_ms", pa.float64())])
JUDGMENT_SCHEMA = pa.schema([("query", pa.string()), ("doc_id", pa.string()),
                             ("language", pa.string()), ("label", pa.int8()),
                             ("split", pa.string()), ("ts", pa.int64()),
                             ("test_set", pa.string())])
GLOSSARY_SCHEMA = pa.schema([("term", pa.string()), ("language", pa.string()),
                             ("concept", pa.string()), ("kind", pa.string()),
                             ("added", pa.string())])
TRUTH_SCHEMA = pa.schema([("query", pa.string()), ("language", pa.string()),
                          ("doc_id", pa.string()), ("label", pa.int8()),
                          ("first_seen", pa.string())])
BASE_GLOSSARY_AGE_DAYS = 180      # the base taxonomy predates the stream
GLOSSARY_SYNONYM_COVERAGE = 0.9   # share of plain synonyms the glossary has
GLOSSARY_FILE = "glossary.parquet"


def remove_glossary(landing: Path) -> None:
    """Remove the glossary an earlier simulation wrote into ``landing`` (and its folder, if left empty)."""
    folder = landing / "knowledge"
    (folder / GLOSSARY_FILE).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def clear_logs(landing: Path) -> Path:
    """The logs folder of ``landing``, emptied of the day files an earlier simulation wrote."""
    logs_dir = landing / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    for old in sorted(logs_dir.glob("logs-*.parquet")):
        old.unlink()
    return logs_dir


def write_parquet(df: pd.DataFrame, schema: pa.Schema, path: Path) -> int:
    """Write ``df``'s columns of ``schema`` to ``path`` (byte-identical for identical input); returns its rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    table = table.replace_schema_metadata(None)
    pq.write_table(table, path, compression="snappy")
    return table.num_rows


def _window(days: list[str], first: int, last: int) -> list[str]:
    return [days[max(0, first)], days[min(len(days) - 1, last)]]


def simulate(home: str | Path, config: SimulationConfig = SimulationConfig()) -> dict:
    """Simulate the stream into ``home`` (SERM_HOME); idempotent for a given config.

    Returns a summary: rows per file, windows, label mix, CTR per label/position, drift events,
    elapsed seconds.
    """
    t0 = time.perf_counter()
    config.validate()
    home = Path(home)
    landing = home / "landing"
    sim_dir = home / "simulator"
    drift = DriftSchedule(config)
    catalog = build_catalog(config, drift)
    indexes = build_indexes(catalog)
    days = [config.day_str(d) for d in range(config.days)]

    # ---- catalogue
    cat_df = pd.DataFrame({
        "doc_id": catalog.doc_ids,
        "language": [vocab.LANGUAGES[i] for i in catalog.d_lang],
        "title": catalog.titles, "description": catalog.descriptions,
        "attributes": catalog.attributes})
    rows = {"catalog": write_parquet(cat_df, CATALOG_SCHEMA, landing / "catalog" / "catalog.parquet")}

    # ---- logs
    logs_dir = clear_logs(landing)
    frames = []
    rows["logs"] = {}
    for d in range(config.days):
        out = simulate_day(d, config, catalog, drift, indexes)
        df = pd.DataFrame(out)
        df["day"] = d
        rows["logs"][days[d]] = write_parquet(df, LOG_SCHEMA, logs_dir / f"logs-{days[d]}.parquet")
        frames.append(df)
    t_stream = time.perf_counter()
    imp = pd.concat(frames, ignore_index=True)

    # ---- hidden truth: every distinct logged (query, language, doc_id)
    first = imp.drop_duplicates(["query", "language", "doc_id"], keep="first")
    conflicts = int(imp.drop_duplicates(["query", "language", "doc_id", "label"])
                    .duplicated(["query", "language", "doc_id"]).sum())
    truth = pd.DataFrame({"query": first["query"], "language": first["language"],
                          "doc_id": first["doc_id"], "label": first["label"],
                          "first_seen": [days[d] for d in first["day"]]})
    rows["truth"] = write_parquet(truth, TRUTH_SCHEMA, sim_dir / "truth" / "truth.parquet")

    # ---- judgments
    seed_last = min(config.seed_days, config.days) - 1
    evo_first = max(0, config.days - config.evolving_window_days)
    rng = np.random.default_rng([config.seed, 3])
    seed_pairs = _pairs(imp, 0, seed_last)
    seed = _sample(seed_pairs, config.seed_judgments, rng, exclude=set(), stratify=False)
    used = set(seed["query"])
    static = _sample(seed_pairs, config.test_judgments, rng, exclude=used, stratify=True)
    used |= set(static["query"])
    evolving = _sample(_pairs(imp, evo_first, config.days - 1), config.evolving_judgments, rng,
                       exclude=used, stratify=True)
    seed["split"], seed["test_set"] = "seed", "seed"
    static["split"], static["test_set"] = "test", "static"
    evolving["split"], evolving["test_set"] = "test", "evolving"
    jdir = landing / "judgments"
    rows["seed_judgments"] = write_parquet(seed, JUDGMENT_SCHEMA, jdir / "seed.parquet")
    rows["test_judgments"] = write_parquet(pd.concat([static, evolving], ignore_index=True),
                                    JUDGMENT_SCHEMA, jdir / "test.parquet")

    # ---- glossary (a catalogue style may come without one)
    glossary_path = landing / "knowledge" / GLOSSARY_FILE
    if config.catalog_style.glossary:
        rows["glossary"] = write_parquet(build_glossary(config, drift, catalog), GLOSSARY_SCHEMA, glossary_path)
    else:
        remove_glossary(landing)
        rows["glossary"] = 0

    # ---- statistics + manifest
    stats = _stats(imp, catalog, drift, config)
    windows = {
        "seed_period": _window(days, 0, seed_last),
        "static_test_window": _window(days, 0, seed_last),
        "evolving_window": _window(days, evo_first, config.days - 1),
    }
    counts = {
        "rows": rows,
        "queries": int(imp["request_id"].nunique()),
        "sessions": int(imp["session_id"].nunique()),
        "products": int(catalog.n_products),
        "documents": len(catalog.doc_ids),
        "documents_per_language": {lang: int((catalog.d_lang == i).sum())
                                   for i, lang in enumerate(vocab.LANGUAGES)},
        "distinct_pairs": int(len(truth)),
        "truth_label_conflicts": conflicts,
        "judgments": {"seed": int(len(seed)), "static": int(len(static)),
                      "evolving": int(len(evolving))},
        "judgments_per_family": {
            name: {fam: int((part["language"].map(vocab.FAMILY_OF) == fam).sum())
                   for fam in vocab.FAMILIES}
            for name, part in (("seed", seed), ("static", static), ("evolving", evolving))},
    }
    manifest = {
        "generator": "serm_dagster.simulator",
        "config": asdict(config),
        "effective_drift_strength": config.effective_strength,
        "catalog_style": config.catalog_style.name,
        "days": days,
        **windows,
        "languages": list(vocab.LANGUAGES),
        "language_families": {k: list(v) for k, v in vocab.FAMILIES.items()},
        "drift_events": [e.to_dict(config) for e in drift.events],
        "counts": counts,
        "stats": stats,
    }
    sim_dir.mkdir(parents=True, exist_ok=True)
    (sim_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
    elapsed = time.perf_counter() - t0
    return {"home": str(home), "days": days, **windows, "counts": counts, "stats": stats,
            "drift_events": manifest["drift_events"],
            "elapsed_s": round(elapsed, 3), "stream_s": round(t_stream - t0, 3)}


def _pairs(imp: pd.DataFrame, first_day: int, last_day: int) -> pd.DataFrame:
    part = imp[(imp["day"] >= first_day) & (imp["day"] <= last_day)]
    part = part.drop_duplicates(["query", "language", "doc_id"], keep="first")
    return part[["query", "doc_id", "language", "label", "ts"]].reset_index(drop=True)


def _take_queries(pairs: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Whole queries in random order (every shown doc of a query is judged) until n pairs."""
    if n <= 0 or pairs.empty:
        return pairs.iloc[:0]
    keys = pairs[["query", "language"]].drop_duplicates().sort_values(["query", "language"])
    keys = keys.iloc[rng.permutation(len(keys))].reset_index(drop=True)
    keys["order"] = np.arange(len(keys))
    merged = pairs.merge(keys, on=["query", "language"]).sort_values(["order", "doc_id"],
                                                                       kind="stable")
    return merged.iloc[:n].drop(columns="order")


def _sample(pairs: pd.DataFrame, n: int, rng: np.random.Generator, exclude: set[str],
            stratify: bool) -> pd.DataFrame:
    pairs = pairs[~pairs["query"].isin(exclude)]
    if not stratify:
        return _take_queries(pairs, n, rng).reset_index(drop=True)
    fams = list(vocab.FAMILIES)
    fam = pairs["language"].map(vocab.FAMILY_OF)
    quota = {f: n // len(fams) + (1 if i < n % len(fams) else 0) for i, f in enumerate(fams)}
    avail = {f: int((fam == f).sum()) for f in fams}
    # families short of pairs give their leftover quota to the others
    short = sum(max(0, quota[f] - avail[f]) for f in fams)
    for f in fams:
        quota[f] = min(quota[f], avail[f])
    for f in fams:
        extra = min(short, avail[f] - quota[f])
        quota[f] += extra
        short -= extra
    parts = [_take_queries(pairs[fam == f], quota[f], rng) for f in fams]
    return pd.concat(parts, ignore_index=True)


def build_glossary(config: SimulationConfig, drift: DriftSchedule, catalog: Catalog) -> pd.DataFrame:
    """The company taxonomy: complete for the base vocabulary, late or missing for new terms."""
    rng = np.random.default_rng([config.seed, 4])
    base_added = (config.start - dt.timedelta(days=BASE_GLOSSARY_AGE_DAYS)).isoformat()
    last_day = config.days - 1
    rows: list[tuple[str, str, str, str, str]] = []

    def add_forms(forms: list[str], lang: str, concept: str, kind: str, added: str) -> None:
        for j, form in enumerate(forms):
            if j == 0:
                rows.append((form, lang, concept, kind, added))
            elif rng.random() < GLOSSARY_SYNONYM_COVERAGE:
                rows.append((form, lang, concept, "synonym", added))

    launched = {e.concept: e for e in drift.events if e.kind in ("new_type", "new_brand")}

    def added_for(concept: str) -> str | None:
        e = launched.get(concept)
        if e is None:
            return base_added
        if e.glossary_lag_days is None or e.day_index + e.glossary_lag_days > last_day:
            return None
        return config.day_str(e.day_index + e.glossary_lag_days)

    for lang in vocab.LANGUAGES:
        for cat in catalog.categories:
            added = added_for(f"category:{cat}")
            if added is not None:
                add_forms(category_forms(cat, lang), lang, f"category:{cat}", "category", added)
        for attr, values in (("colour", catalog.colours), ("material", catalog.materials),
                             ("audience", catalog.audiences)):
            for v in values:
                add_forms(attribute_forms(attr, v, lang), lang, f"{attr}:{v.replace(' ', '_')}",
                          "attribute", base_added)
        for b in catalog.brands:
            added = added_for(f"brand:{b.lower()}")
            if added is not None:
                rows.append((b, lang, f"brand:{b.lower()}", "brand", added))
    for e in drift.events:
        if e.kind == "slang" and e.glossary_lag_days is not None \
                and e.day_index + e.glossary_lag_days <= last_day:
            rows.append((e.term, str(e.language), e.concept, "slang",
                         config.day_str(e.day_index + e.glossary_lag_days)))
    return pd.DataFrame(rows, columns=["term", "language", "concept", "kind", "added"])


def _stats(imp: pd.DataFrame, catalog: Catalog, drift: DriftSchedule,
           config: SimulationConfig) -> dict:
    label_counts = imp["label"].value_counts().reindex(range(4), fill_value=0)
    ctr_label = imp.groupby("label")["clicked"].mean().reindex(range(4))
    ctr_pos = imp.groupby("position")["clicked"].mean()
    per_q = imp.groupby("request_id", sort=False).agg(day=("day", "first"),
                                                       language=("language", "first"),
                                                       n_tokens=("n_tokens", "first"),
                                                       n_attrs=("n_attrs", "first"),
                                                       slang=("slang", "first"),
                                                       top=("label", "first"),
                                                       best=("label", "max"))
    per_q["minor"] = per_q["language"].isin(vocab.MINOR_LANGUAGES)
    per_day = per_q.groupby("day").agg(minor_share=("minor", "mean"),
                                       mean_query_tokens=("n_tokens", "mean"),
                                       mean_constraints=("n_attrs", "mean"),
                                       slang_share=("slang", "mean"),
                                       top_label=("top", "mean"))
    day_names = [config.day_str(d) for d in range(config.days)]
    return {
        "label_distribution": {str(k): round(float(v) / len(imp), 4)
                               for k, v in label_counts.items()},
        "ctr_by_label": {str(k): round(float(v), 4) for k, v in ctr_label.fillna(0).items()},
        "ctr_by_position": {str(k): round(float(v), 4) for k, v in ctr_pos.items()},
        "attractiveness": ATTRACTIVENESS.tolist(),
        "queries_with_exact_match_shown": round(float((per_q["best"] == 3).mean()), 4),
        "per_day": {day_names[d]: {k: round(float(v), 4) for k, v in row.items()}
                    for d, row in per_day.iterrows()},
    }

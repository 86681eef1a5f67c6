"""Tests of the stream simulator (small configs; a few seconds in all)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serm_dagster.simulator import (FAMILIES, FAMILY_OF, LANGUAGES, SCENARIOS, SimulationConfig,
                                    load_manifest, simulate)

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(days=6, queries_per_day=200, seed_days=2, evolving_window_days=2,
             seed_judgments=300, test_judgments=150)
LOG_COLUMNS = ["request_id", "ts", "session_id", "query", "language", "doc_id", "position",
               "clicked", "dwell_ms"]


def _files(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


def _logs(home: Path) -> pd.DataFrame:
    frames = []
    for p in sorted((home / "landing" / "logs").glob("logs-*.parquet")):
        df = pd.read_parquet(p)
        df["date"] = p.stem[len("logs-"):]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def drifting(tmp_path_factory):
    home = tmp_path_factory.mktemp("drift1")
    summary = simulate(home, SimulationConfig(**SMALL))
    return home, summary


@pytest.fixture(scope="module")
def stationary(tmp_path_factory):
    home = tmp_path_factory.mktemp("drift0")
    summary = simulate(home, SimulationConfig(**SMALL, drift_strength=0.0))
    return home, summary


@pytest.fixture(scope="module")
def logs(drifting):
    return _logs(drifting[0])


# ---------------------------------------------------------------------------------------------
def test_deterministic_and_idempotent(drifting, tmp_path):
    home, _ = drifting
    config = SimulationConfig(**SMALL)
    again = tmp_path / "again"
    simulate(again, config)
    assert _files(again) == _files(home)
    # another process with another hash seed writes the very same bytes
    other = tmp_path / "other"
    code = ("import sys; from serm_dagster.simulator import simulate, SimulationConfig; "
            f"simulate(sys.argv[1], SimulationConfig(**{SMALL!r}))")
    env = dict(os.environ, PYTHONHASHSEED="4242", PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", code, str(other)], check=True, env=env, cwd=REPO)
    assert _files(other) == _files(home)
    # re-running into a used folder overwrites: fewer days -> stale day files are gone
    simulate(again, SimulationConfig(**{**SMALL, "days": 4}))
    assert len(list((again / "landing" / "logs").glob("logs-*.parquet"))) == 4
    assert load_manifest(again)["config"]["days"] == 4


def test_different_seed_differs(drifting, tmp_path):
    simulate(tmp_path, SimulationConfig(**SMALL, seed=8))
    a = pd.read_parquet(drifting[0] / "landing" / "logs" / "logs-2026-01-01.parquet")
    b = pd.read_parquet(tmp_path / "landing" / "logs" / "logs-2026-01-01.parquet")
    assert not a["query"].equals(b["query"])


def test_schemas(drifting, logs):
    home, _ = drifting
    cat = pd.read_parquet(home / "landing" / "catalog" / "catalog.parquet")
    assert list(cat.columns) == ["doc_id", "language", "title", "description", "attributes"]
    assert list(logs.columns[:-1]) == LOG_COLUMNS
    assert str(logs["ts"].dtype) == "int64" and str(logs["position"].dtype) == "int32"
    assert logs["clicked"].dtype == bool and str(logs["dwell_ms"].dtype) == "float64"
    for name in ("seed", "test"):
        j = pd.read_parquet(home / "landing" / "judgments" / f"{name}.parquet")
        assert list(j.columns[:6]) == ["query", "doc_id", "language", "label", "split", "ts"]
        assert str(j["label"].dtype) == "int8" and str(j["ts"].dtype) == "int64"
        assert set(j["split"]) == {name}
    g = pd.read_parquet(home / "landing" / "knowledge" / "glossary.parquet")
    assert list(g.columns) == ["term", "language", "concept", "kind", "added"]
    assert set(g["kind"]) <= {"category", "attribute", "brand", "synonym", "slang"}
    truth = pd.read_parquet(home / "simulator" / "truth" / "truth.parquet")
    assert list(truth.columns) == ["query", "language", "doc_id", "label", "first_seen"]
    assert str(truth["label"].dtype) == "int8"
    m = load_manifest(home)
    for key in ("config", "days", "seed_period", "static_test_window", "evolving_window",
                "drift_events", "counts"):
        assert key in m
    assert m["seed_period"] == ["2026-01-01", "2026-01-02"]
    assert m["evolving_window"] == ["2026-01-05", "2026-01-06"]


def test_catalog_content(drifting):
    home, _ = drifting
    cat = pd.read_parquet(home / "landing" / "catalog" / "catalog.parquet")
    assert 3000 <= len(cat) <= 6000 and cat["doc_id"].is_unique
    assert set(cat["language"]) == set(LANGUAGES)
    assert cat["doc_id"].str.fullmatch(r"P\d{6}-[a-z]{2}").all()
    assert (cat["doc_id"].str[-2:] == cat["language"]).all()
    attrs = cat["attributes"].map(json.loads)
    assert (attrs.map(len) == 0).mean() < 0.05  # a few docs come without attributes
    full = attrs[attrs.map(len) > 0]
    assert full.map(lambda a: "category" in a and "brand" in a).all()
    assert full.map(lambda a: a["category"]).nunique() >= 30
    assert full.map(lambda a: a["brand"]).nunique() >= 40
    # the same product is listed in several languages
    assert cat["doc_id"].str[:7].value_counts().max() >= 3
    assert full.map(lambda a: "available_from" in a).sum() > 0
    de = cat[(cat["language"] == "de") & attrs.map(lambda a: a.get("category") == "sneakers")]
    assert de["title"].str.contains("Turnschuhe|Sneaker").all()


def test_logs_shape(drifting, logs):
    home, _ = drifting
    cfg = SimulationConfig(**SMALL)
    assert logs["request_id"].nunique() == cfg.days * cfg.queries_per_day
    per_req = logs.groupby("request_id")
    assert (per_req.size() == cfg.results_per_query).all()
    assert (per_req["position"].apply(lambda p: sorted(p) == list(range(1, 11)))).all()
    assert (per_req["ts"].nunique() == 1).all() and (per_req["query"].nunique() == 1).all()
    assert not logs.duplicated(["request_id", "doc_id"]).any()
    day_ms = pd.to_datetime(logs["date"]).astype("int64") // 10**6
    assert ((logs["ts"] >= day_ms) & (logs["ts"] < day_ms + 86_400_000)).all()
    assert (logs["dwell_ms"].isna() == ~logs["clicked"]).all()
    assert (logs.loc[logs["clicked"], "dwell_ms"] > 0).all()
    # results come from the catalogue in the query's language
    cat = pd.read_parquet(home / "landing" / "catalog" / "catalog.parquet")
    assert logs["doc_id"].isin(cat["doc_id"]).all()
    assert (logs["doc_id"].str[-2:] == logs["language"]).all()
    # sessions group a few queries
    sizes = logs.groupby("session_id")["request_id"].nunique()
    assert 1.3 < sizes.mean() < 3.0 and sizes.max() <= 5


def test_label_mix(drifting, logs):
    home, _ = drifting
    truth = pd.read_parquet(home / "simulator" / "truth" / "truth.parquet")
    lab = logs.merge(truth, on=["query", "language", "doc_id"], how="left")
    assert lab["label"].notna().all()
    share = lab["label"].value_counts(normalize=True)
    assert all(share.get(k, 0) > 0.10 for k in range(4)), share
    distinct = lab.groupby("request_id")["label"].nunique()
    assert distinct.mean() >= 2.0
    # the production ranker is decent: top results are better than bottom ones
    assert lab.loc[lab["position"] == 1, "label"].mean() > lab.loc[lab["position"] == 10, "label"].mean() + 0.8


def test_click_model(drifting, logs):
    home, _ = drifting
    truth = pd.read_parquet(home / "simulator" / "truth" / "truth.parquet")
    lab = logs.merge(truth, on=["query", "language", "doc_id"])
    ctr_label = lab.groupby("label")["clicked"].mean()
    assert list(ctr_label.index) == [0, 1, 2, 3]
    assert np.all(np.diff(ctr_label.values) > 0), ctr_label
    ctr_pos = lab.groupby("position")["clicked"].mean()
    assert ctr_pos[1] > ctr_pos[2] > ctr_pos[3] > ctr_pos[5] > ctr_pos[10]
    assert np.all(np.diff(ctr_pos.values) < 0.01)
    # within one label, examination still falls with position (position bias)
    exact = lab[lab["label"] == 3].groupby("position")["clicked"].mean()
    assert exact[1] > exact.loc[6:10].mean() * 2
    dwell = lab[lab["clicked"]].groupby("label")["dwell_ms"].median()
    assert dwell[3] > dwell[0]


def _per_query(logs: pd.DataFrame) -> pd.DataFrame:
    q = logs.drop_duplicates("request_id").copy()
    q["minor"] = q["language"].isin(FAMILIES["minor"])
    q["words"] = q["query"].str.split().map(len)
    return q


def test_drift_visible(logs):
    q = _per_query(logs)
    days = sorted(q["date"].unique())
    first, last = q[q["date"].isin(days[:2])], q[q["date"].isin(days[-2:])]
    assert last["minor"].mean() > first["minor"].mean() + 0.06
    assert last["words"].mean() > first["words"].mean() + 0.25


def test_no_drift_when_strength_zero(stationary):
    home, summary = stationary
    q = _per_query(_logs(home))
    days = sorted(q["date"].unique())
    first, last = q[q["date"].isin(days[:2])], q[q["date"].isin(days[-2:])]
    assert abs(last["minor"].mean() - first["minor"].mean()) < 0.06
    assert abs(last["words"].mean() - first["words"].mean()) < 0.25
    assert summary["drift_events"] == [] and load_manifest(home)["drift_events"] == []
    cat = pd.read_parquet(home / "landing" / "catalog" / "catalog.parquet")
    assert not cat["attributes"].str.contains("available_from").any()
    g = pd.read_parquet(home / "landing" / "knowledge" / "glossary.parquet")
    assert not (g["kind"] == "slang").any()


def test_new_products_only_after_their_day(drifting, logs):
    home, summary = drifting
    cat = pd.read_parquet(home / "landing" / "catalog" / "catalog.parquet")
    avail = cat.set_index("doc_id")["attributes"].map(lambda s: json.loads(s).get("available_from"))
    late = avail.dropna()
    assert len(late) > 0
    shown = logs[logs["doc_id"].isin(late.index)]
    assert len(shown) > 0, "launched products are never shown"
    assert (shown["date"] >= shown["doc_id"].map(late)).all()
    events = summary["drift_events"]
    brands = [e for e in events if e["kind"] == "new_brand"]
    assert brands and all(e["day"] > summary["seed_period"][1] for e in brands)
    for e in brands:  # nobody searches for a brand before it exists
        before = logs[logs["date"] < e["day"]]
        assert not before["query"].str.contains(e["term"].lower(), case=False).any()
    queried = [e for e in brands if logs["query"].str.contains(e["term"], case=False).any()]
    assert queried, "no launched brand is ever searched for"
    slang = [e for e in events if e["kind"] == "slang"]
    assert slang and all(e["day"] > summary["seed_period"][1] for e in slang)


def test_glossary_lags(drifting):
    home, summary = drifting
    g = pd.read_parquet(home / "landing" / "knowledge" / "glossary.parquet")
    last_day = summary["days"][-1]
    assert (g["added"] <= last_day).all()
    assert ((g["term"] == "Turnschuhe") & (g["language"] == "de")).any()
    assert ((g["concept"] == "colour:red") & (g["language"] == "fr") & (g["term"] == "rouge")).any()
    events = [e for e in summary["drift_events"] if e["kind"] in ("slang", "new_brand", "new_type")]
    missing = 0
    for e in events:
        if e["kind"] == "slang":
            rows = g[(g["term"] == e["term"]) & (g["language"] == e["language"])]
        else:
            rows = g[g["concept"] == e["concept"]]
        if rows.empty:
            missing += 1
        else:
            assert (rows["added"] > e["day"]).all()  # learned late, never on the day it appears
    assert missing >= 1
    slang = [e for e in summary["drift_events"] if e["kind"] == "slang"]
    assert 0.25 <= sum(not e["in_glossary"] for e in slang) / len(slang) <= 0.55


def test_judgments(drifting, logs):
    home, summary = drifting
    cfg = SimulationConfig(**SMALL)
    seed = pd.read_parquet(home / "landing" / "judgments" / "seed.parquet")
    test = pd.read_parquet(home / "landing" / "judgments" / "test.parquet")
    assert len(seed) == cfg.seed_judgments
    static, evolving = test[test["test_set"] == "static"], test[test["test_set"] == "evolving"]
    assert len(static) == len(evolving) == cfg.test_judgments
    assert not set(seed["query"]) & set(test["query"])
    assert not set(static["query"]) & set(evolving["query"])
    for part in (seed, static, evolving):
        assert not part.duplicated(["query", "language", "doc_id"]).any()
        assert part["label"].between(0, 3).all() and part["label"].nunique() == 4

    def dates(df):
        return pd.to_datetime(df["ts"], unit="ms", utc=True).dt.strftime("%Y-%m-%d")

    sp, ew = summary["seed_period"], summary["evolving_window"]
    assert dates(seed).between(*sp).all() and dates(static).between(*sp).all()
    assert dates(evolving).between(*ew).all()
    # stratified by language family
    for part in (static, evolving):
        fam = part["language"].map(FAMILY_OF).value_counts()
        assert set(fam.index) == set(FAMILIES) and fam.min() >= cfg.test_judgments // 3 - 1
    # labels are the true labels, and each pair was really logged at that time
    truth = pd.read_parquet(home / "simulator" / "truth" / "truth.parquet")
    merged = test.merge(truth, on=["query", "language", "doc_id"], suffixes=("", "_t"))
    assert len(merged) == len(test) and (merged["label"] == merged["label_t"]).all()
    seen = logs.merge(seed, on=["query", "language", "doc_id", "ts"])
    assert seen[["query", "language", "doc_id"]].drop_duplicates().shape[0] == len(seed)


def test_a_larger_evolving_set_leaves_the_seed_and_static_sets_as_they_were(drifting, tmp_path):
    """The evolving set can be sized on its own (the gate of an iteration reads only its window's share of
    it); the seed and static sets, and the stream, stay the same."""
    home, _ = drifting
    larger = SimulationConfig(**{**SMALL, "evolving_test_judgments": 2 * SMALL["test_judgments"]})
    simulate(tmp_path, larger)
    before = pd.read_parquet(home / "landing" / "judgments" / "test.parquet")
    after = pd.read_parquet(tmp_path / "landing" / "judgments" / "test.parquet")
    for name in ("seed.parquet",):
        assert pd.read_parquet(home / "landing" / "judgments" / name).equals(
            pd.read_parquet(tmp_path / "landing" / "judgments" / name))
    static = [t[t["test_set"] == "static"].reset_index(drop=True) for t in (before, after)]
    assert static[0].equals(static[1])
    evolving = after[after["test_set"] == "evolving"]
    assert len(evolving) == larger.evolving_judgments == 2 * SMALL["test_judgments"]
    assert not set(evolving["query"]) & set(static[1]["query"])
    with pytest.raises(ValueError):
        SimulationConfig(evolving_test_judgments=0).validate()


def test_truth_covers_all_logged_pairs(drifting, logs):
    home, _ = drifting
    truth = pd.read_parquet(home / "simulator" / "truth" / "truth.parquet")
    keys = ["query", "language", "doc_id"]
    assert not truth.duplicated(keys).any()
    logged = logs[keys].drop_duplicates()
    assert len(logged) == len(truth)
    assert len(logged.merge(truth, on=keys)) == len(truth)
    first = logs.groupby(keys)["date"].min().rename("first").reset_index()
    chk = truth.merge(first, on=keys)
    assert (chk["first_seen"] == chk["first"]).all()


def test_scenarios_registry(tmp_path):
    assert {"default", "none", "sudden"} <= set(SCENARIOS)
    with pytest.raises(ValueError):
        simulate(tmp_path, SimulationConfig(scenario="nope"))
    cfg = SimulationConfig(**{**SMALL, "queries_per_day": 50, "days": 8}, scenario="sudden")
    summary = simulate(tmp_path / "s", cfg)
    launches = {e["day"] for e in summary["drift_events"] if e["kind"] != "slang"}
    assert len(launches) == 1
    none = simulate(tmp_path / "n", SimulationConfig(**{**SMALL, "queries_per_day": 50},
                                                     scenario="none"))
    assert none["drift_events"] == []


def test_start_date_and_days(tmp_path):
    cfg = SimulationConfig(days=2, queries_per_day=30, start_date="2025-12-31",
                           seed_judgments=50, test_judgments=30)
    summary = simulate(tmp_path, cfg)
    assert summary["days"] == ["2025-12-31", "2026-01-01"]
    assert (tmp_path / "landing" / "logs" / "logs-2026-01-01.parquet").exists()
    d = pd.read_parquet(tmp_path / "landing" / "logs" / "logs-2025-12-31.parquet")
    start = int(dt.datetime(2025, 12, 31, tzinfo=dt.timezone.utc).timestamp() * 1000)
    assert d["ts"].between(start, start + 86_400_000 - 1).all()


def test_slang_comes_with_a_trend_in_its_product_type():
    from serm_dagster.simulator.drift import DriftSchedule

    config = SimulationConfig(days=14, seed=7)
    drift = DriftSchedule(config)
    (language, category), (since, _term) = next(iter(drift.slang_day.items()))
    boost = SCENARIOS["default"].trend_boost
    assert drift.trend_multiplier(language, category, since - 1) == 1.0
    assert 1.0 < drift.trend_multiplier(language, category, since) < boost
    assert drift.trend_multiplier(language, category, since + 10) == pytest.approx(boost)
    assert drift.trend_multiplier(language, "lamp", config.days - 1) == 1.0  # no slang, no trend
    calm = DriftSchedule(SimulationConfig(days=14, seed=7, scenario="none"))
    assert calm.trend_multiplier(language, category, config.days - 1) == 1.0


def test_no_category_scenario_shows_another_catalogue_and_no_glossary(drifting, tmp_path):
    home, _ = drifting
    other = tmp_path / "no-category"
    (other / "landing" / "knowledge").mkdir(parents=True)  # an earlier stream's glossary goes away
    (other / "landing" / "knowledge" / "glossary.parquet").write_bytes(
        (home / "landing" / "knowledge" / "glossary.parquet").read_bytes())
    summary = simulate(other, SimulationConfig(**SMALL, scenario="no-category"))
    assert not (other / "landing" / "knowledge").exists() and summary["counts"]["rows"]["glossary"] == 0
    assert load_manifest(other)["catalog_style"] == "no-category"
    ours = pd.read_parquet(home / "landing" / "catalog" / "catalog.parquet")
    theirs = pd.read_parquet(other / "landing" / "catalog" / "catalog.parquet")
    keys = set().union(*theirs["attributes"].map(lambda s: set(json.loads(s))))
    assert keys == {"maker", "shade", "fabric", "fit", "for", "available_from"}
    assert theirs["attributes"].map(lambda s: "maker" in json.loads(s)).mean() > 0.9
    renamed = {"brand": "maker", "colour": "shade", "material": "fabric", "size": "fit", "audience": "for"}
    expected = ours["attributes"].map(lambda s: {renamed.get(k, k): v for k, v in json.loads(s).items()
                                                 if k not in ("category", "department")})
    assert (theirs["attributes"].map(json.loads) == expected).all()
    # only what the catalogue shows changes: texts, logs, labels and judgments are the default scenario's
    assert theirs[["doc_id", "title", "description"]].equals(ours[["doc_id", "title", "description"]])
    for name in ("simulator/truth/truth.parquet", "landing/judgments/seed.parquet", "landing/judgments/test.parquet",
                 "landing/logs/logs-2026-01-03.parquet"):
        assert (other / name).read_bytes() == (home / name).read_bytes(), name

"""Replaying judged sets as drifting streams: a hand-made set of 6 queries and a 5-query slice of ESCI."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serm_dagster.simulator import load_manifest
from serm_dagster.simulator.esci import JUDGMENTS_FILE, EsciError, category_path, read_esci
from serm_dagster.simulator.judged import JudgedSetError, load_judged_set
from serm_dagster.simulator.replay import ReplayConfig, replay
from spark_jobs.ingest import collect_catalog, collect_judgments, collect_query_logs, landing_index

ESCI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "esci"
SMALL = ReplayConfig(days=9, queries_per_day=80, seed_days=3, evolving_window_days=3)
KEY = ["query", "language", "doc_id"]
GROUPS = {"running shoes": "Shoes", "trail sneakers": "Shoes", "chef knife": "Kitchen", "cast iron pan": "Kitchen",
          "garden hose": "Garden", "pruning shears": "Garden"}


def _files(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


def _logs(home: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p).assign(date=p.stem[5:]) for p in sorted((home / "landing" / "logs").glob("*"))],
                     ignore_index=True)


def _dates(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame["ts"], unit="ms", utc=True).dt.strftime("%Y-%m-%d")


@pytest.fixture(scope="module")
def handmade(tmp_path_factory) -> tuple[Path, Path]:
    """6 queries in 3 top categories, 12 judged documents each (3 of every grade), as CSV + JSON Lines."""
    folder = tmp_path_factory.mktemp("judged")
    catalog, judgments = [], []
    for q, (query, category) in enumerate(GROUPS.items()):
        for k in range(12):
            doc = f"D{q}{k:02d}"
            words = query if k % 3 else "assorted item"  # lexical overlap, unrelated to the grade
            catalog.append({"doc_id": doc, "language": "en", "title": f"{words} model {k}", "description": "",
                            "attributes": json.dumps({"category": f"{category} > Sub {k % 2}", "brand": f"B{k}"})})
            judgments.append({"query": query, "doc_id": doc, "language": "en", "label": k % 4})
    pd.DataFrame(catalog).to_csv(folder / "catalog.csv", index=False)
    (folder / "judgments.jsonl").write_text("\n".join(json.dumps(j) for j in judgments) + "\n")
    return folder / "judgments.jsonl", folder / "catalog.csv"


@pytest.fixture(scope="module")
def replayed(handmade, tmp_path_factory):
    home = tmp_path_factory.mktemp("replay")
    summary = replay(home, load_judged_set(*handmade), SMALL)
    return home, summary


@pytest.fixture(scope="module")
def esci_slice(tmp_path_factory) -> Path:
    """The first 5 queries of the real ESCI files and their products, in ESCI's own layout."""
    folder = tmp_path_factory.mktemp("esci")
    data = json.loads((ESCI / JUDGMENTS_FILE).read_text())
    data["judgmentRatings"] = data["judgmentRatings"][:5]
    (folder / JUDGMENTS_FILE).write_text(json.dumps(data))
    wanted = {r["docId"] for entry in data["judgmentRatings"] for r in entry["ratings"]}
    with gzip.open(ESCI / "ubi_ecommerce_products.json.gz", "rt") as src, \
            gzip.open(folder / "ubi_ecommerce_products.json.gz", "wt") as dst:
        dst.writelines(line for line in src if json.loads(line)["asin"] in wanted)
    return folder


# ---------------------------------------------------------------------------------------------
def test_landing_files_meet_the_input_contract(replayed, handmade, tmp_path):
    home, summary = replayed
    landing = home / "landing"
    catalog, judgments = collect_catalog(landing / "catalog"), collect_judgments(landing / "judgments")
    logs, _ = collect_query_logs(landing_index(landing, tmp_path / "index.json"), summary["days"])
    for batch in (catalog, judgments, logs):
        assert len(batch.quarantined) == 0 and batch.conserved and len(batch.kept)
    assert len(catalog.kept) == 72 and not (landing / "knowledge").exists()
    assert sorted(summary["counts"]["rows"]["logs"]) == summary["days"] and len(summary["days"]) == 9
    raw = _logs(home)
    per_request = raw.groupby("request_id")
    assert (per_request.size() <= 10).all() and (per_request["query"].nunique() == 1).all()
    assert (per_request["position"].apply(lambda p: sorted(p) == list(range(1, len(p) + 1)))).all()
    assert not raw.duplicated(["request_id", "doc_id"]).any()
    assert (raw["dwell_ms"].isna() == ~raw["clicked"]).all() and (_dates(raw) == raw["date"]).all()
    # each logged document is one of its query's judged documents
    judged = pd.read_json(handmade[0], lines=True)
    assert len(raw[KEY].drop_duplicates().merge(judged, on=KEY)) == len(raw[KEY].drop_duplicates())


def test_truth_covers_every_logged_pair_with_its_judged_label(replayed, handmade):
    home, _ = replayed
    truth = pd.read_parquet(home / "simulator" / "truth" / "truth.parquet")
    logs, judged = _logs(home), pd.read_json(handmade[0], lines=True)
    assert list(truth.columns) == ["query", "language", "doc_id", "label", "first_seen"]
    logged = logs[KEY].drop_duplicates()
    assert not truth.duplicated(KEY).any() and len(truth) == len(logged) == len(logged.merge(truth, on=KEY))
    merged = truth.merge(judged, on=KEY, suffixes=("", "_judged"))
    assert len(merged) == len(truth) and (merged["label"] == merged["label_judged"]).all()
    first = logs.groupby(KEY)["date"].min().rename("first").reset_index().merge(truth, on=KEY)
    assert (first["first_seen"] == first["first"]).all()


def test_seed_static_and_evolving_sets_line_up_with_the_pipeline(replayed):
    home, summary = replayed
    seed = pd.read_parquet(home / "landing" / "judgments" / "seed.parquet")
    test = pd.read_parquet(home / "landing" / "judgments" / "test.parquet")
    static, evolving = test[test["test_set"] == "static"], test[test["test_set"] == "evolving"]
    assert set(seed["split"]) == {"seed"} and set(test["split"]) == {"test"}
    assert seed["query"].nunique() == 2 and static["query"].nunique() == 2 and evolving["query"].nunique() == 1
    assert not set(seed["query"]) & set(static["query"])
    assert not set(evolving["query"]) & (set(seed["query"]) | set(static["query"]))
    # split_test_sets: static = test pairs dated up to the newest seed day; evolving = the newest 3 test days
    seed_end, day = pd.Timestamp(_dates(seed).max()), pd.to_datetime(_dates(test))
    assert seed_end == pd.Timestamp(summary["seed_period"][1])
    pipeline = np.where(day <= seed_end, "static", np.where(day >= day.max() - pd.Timedelta(days=2), "evolving", None))
    assert (pipeline == test["test_set"].to_numpy()).all()
    assert _dates(evolving).between(*summary["evolving_window"]).all()
    assert summary["evolving_window"] == [summary["days"][-3], summary["days"][-1]]
    # the drift: the evolving query's group is absent from the seed period and grows afterwards
    logs = _logs(home)
    late = set(evolving["query"]) | {q for q in GROUPS if q not in set(seed["query"]) | set(static["query"])}
    share = logs.drop_duplicates("request_id").assign(late=lambda f: f["query"].isin(late)).groupby("date")["late"].mean()
    assert (share.iloc[:3] == 0).all() and share.iloc[-3:].mean() > 0.3
    # every judged pair was shown when its ts says, and judged with its true label
    shown = logs.merge(pd.concat([seed, test]), on=[*KEY, "ts"])
    assert shown[KEY].drop_duplicates().shape[0] == len(seed) + len(test)
    manifest = load_manifest(home)
    assert manifest["drift_events"] == [] and {g["kind"] for g in manifest["query_groups"]} == {"early", "late"}
    assert manifest["counts"]["judgments"] == {"seed": len(seed), "static": len(static), "evolving": len(evolving)}


def test_clicks_are_position_biased_and_grade_dependent(replayed):
    home, _ = replayed
    truth = pd.read_parquet(home / "simulator" / "truth" / "truth.parquet")
    lab = _logs(home).merge(truth, on=KEY)
    ctr_label = lab.groupby("label")["clicked"].mean()
    assert np.all(np.diff(ctr_label.to_numpy()) > 0), ctr_label
    top = lab[lab["label"] >= 2]
    assert top.loc[top["position"] == 1, "clicked"].mean() > 2 * top.loc[top["position"] >= 6, "clicked"].mean()
    dwell = lab[lab["clicked"]].groupby("label")["dwell_ms"].median()
    assert dwell[3] > dwell[1] > dwell[0]
    # the ranker is not the label: relevant documents are often below irrelevant ones
    assert lab.loc[lab["position"] == 1, "label"].mean() < lab["label"].mean() + 0.5
    assert (lab.loc[lab["position"] == 1, "label"] <= 1).mean() > 0.2


def test_deterministic(replayed, handmade, tmp_path):
    home, _ = replayed
    replay(tmp_path / "again", load_judged_set(*handmade), SMALL)
    assert _files(tmp_path / "again") == _files(home)
    replay(tmp_path / "other", load_judged_set(*handmade), ReplayConfig(**{**SMALL.__dict__, "seed": 8}))
    assert _files(tmp_path / "other")["landing/logs/logs-2026-01-01.parquet"] != \
        _files(home)["landing/logs/logs-2026-01-01.parquet"]


def test_bad_judged_sets_name_file_row_and_column(handmade, tmp_path):
    judgments, catalog = handmade
    bad = tmp_path / "bad.csv"
    bad.write_text("query,doc_id,language,label\nchef knife,D200,en,7\n")
    with pytest.raises(JudgedSetError, match=r"bad.csv row 1: column 'label'"):
        load_judged_set(bad, catalog)
    bad.write_text("query,doc_id,language,label\nchef knife,NOPE,en,2\n")
    with pytest.raises(JudgedSetError, match=r"bad.csv row 1: doc_id 'NOPE'.*not in the catalogue"):
        load_judged_set(bad, catalog)
    with pytest.raises(JudgedSetError, match="the catalogue must be given"):
        load_judged_set(judgments)


def test_esci_slice_reads_and_replays(esci_slice, tmp_path):
    catalog, judgments = read_esci(esci_slice)
    assert judgments["query"].nunique() == 5 and set(judgments["language"]) == {"en"}
    assert set(judgments["label"]) <= {0, 1, 2, 3} and judgments["doc_id"].isin(catalog["doc_id"]).all()
    attrs = catalog["attributes"].map(json.loads)
    assert attrs.map(lambda a: " > " in a.get("category", " > ")).all() and attrs.map(lambda a: "brand" in a).any()
    assert (catalog["description"].str.len() > 0).mean() > 0.9  # bullet points stand in for empty descriptions
    summary = replay(tmp_path / "home", load_judged_set(esci_slice), ReplayConfig(days=8, queries_per_day=40,
                                                                                      seed_days=2, evolving_window_days=3))
    jobs = summary["counts"]["judgment_queries"]
    assert jobs["seed"] >= 1 and jobs["static"] >= 1 and jobs["evolving"] >= 1
    landing = tmp_path / "home" / "landing"
    assert len(collect_catalog(landing / "catalog").quarantined) == 0
    assert len(collect_judgments(landing / "judgments").quarantined) == 0
    truth = pd.read_parquet(tmp_path / "home" / "simulator" / "truth" / "truth.parquet")
    assert len(truth.merge(judgments, on=KEY)) == len(truth)


def test_esci_category_paths_and_bad_ratings(tmp_path):
    assert category_path("['Toys & Games', 'Board Games']", "x") == "Toys & Games > Board Games"
    assert category_path(["Home", " Kitchen "], "x") == "Home > Kitchen" and category_path([], "x") is None
    with pytest.raises(EsciError, match="field 'category'"):
        category_path("['unclosed", "products, line 3")
    (tmp_path / JUDGMENTS_FILE).write_text(json.dumps({"judgmentRatings": [
        {"query": "q", "ratings": [{"docId": "A1", "rating": "50.000"}]}]}))
    (tmp_path / "ubi_ecommerce_products.json.gz").write_bytes(gzip.compress(b'{"asin": "A1", "title": "t"}\n'))
    with pytest.raises(EsciError, match=r"ratings\[0\] \(query 'q'\): field 'rating' '50.000'"):
        read_esci(tmp_path)


def test_serm_simulate_from_judgments(handmade, home):
    from typer.testing import CliRunner

    from serm_dagster.cli import app

    judgments, catalog = handmade
    runner = CliRunner()
    result = runner.invoke(app, ["simulate", "--from-judgments", str(judgments), "--catalog", str(catalog),
                                 "--days", "7", "--evolving-days", "3", "--queries-per-day", "30",
                                 "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "log rows" in result.output and "judged queries seed 2, static 2, evolving 1" in result.output
    assert load_manifest(home)["source"]["format"] == "contract" and len(list((home / "landing" / "logs").iterdir())) == 7
    refused = runner.invoke(app, ["simulate", "--from-judgments", str(judgments), "--catalog", str(catalog),
                                  "--scenario", "sudden"])
    assert refused.exit_code != 0 and "do not apply to a replay" in refused.output

"""Drift report: the statistics on hand-computed examples, the Spark plumbing with a cheap fake embedder, and
the verdicts on the simulator's drifting and stationary streams with the real MiniLM embedder."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from spark_jobs.drift import (DriftSettings, jensen_shannon_distance, mmd_permutation_test,
                              population_stability_index, drift_report)

LOG_COLUMNS = "date date, request_id string, ts timestamp, session_id string, query string, language string, " \
              "doc_id string, position int, clicked boolean, dwell_ms double"


# --------------------------------------------------------------------------------------- statistics by hand
def test_psi_hand_computed():
    # shares 0.5/0.5 -> 0.25/0.75: (0.25-0.5) ln(0.5) + (0.75-0.5) ln(1.5)
    expected = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert population_stability_index([50, 50], [25, 75], epsilon=0.0) == pytest.approx(expected)
    assert expected == pytest.approx(0.274653, abs=1e-6)
    assert population_stability_index([3, 7, 0], [30, 70, 0]) == pytest.approx(0.0, abs=1e-12)
    # an empty reference bin: epsilon keeps it finite, and it reads as a major shift
    smoothed = population_stability_index([100, 0], [50, 50], epsilon=1e-4)
    r, w = np.array([1 + 1e-4, 1e-4]) / 1.0002, np.array([0.5001, 0.5001]) / 1.0002
    assert smoothed == pytest.approx(float(np.sum((w - r) * np.log(w / r))))
    assert math.isfinite(smoothed) and smoothed > 0.25


def test_js_distance_hand_computed():
    assert jensen_shannon_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert jensen_shannon_distance([2, 6], [1, 3]) == pytest.approx(0.0, abs=1e-12)
    # p = (.5, .5), q = (1, 0), m = (.75, .25): KL(p||m) = .5 log2(2/3) + .5 log2(2), KL(q||m) = log2(4/3)
    kl_p = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    kl_q = math.log2(1 / 0.75)
    expected = math.sqrt(0.5 * kl_p + 0.5 * kl_q)
    assert jensen_shannon_distance([1, 1], [2, 0]) == pytest.approx(expected)
    assert expected == pytest.approx(0.557923, abs=1e-6)
    distance = pytest.importorskip("scipy.spatial.distance")
    assert jensen_shannon_distance([1, 2, 3], [3, 0, 1]) == pytest.approx(
        distance.jensenshannon([1 / 6, 2 / 6, 3 / 6], [3 / 4, 0, 1 / 4], base=2))


def test_mmd_permutation_test_separates_shifted_samples():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    same = mmd_permutation_test(x, y, permutations=100, seed=1)
    shifted = mmd_permutation_test(x, y + 0.8, permutations=100, seed=1)
    assert same.p_value > 0.05 and abs(same.mmd2) < 0.02
    assert shifted.p_value == pytest.approx(1 / 101) and shifted.mmd2 > 0.05
    assert mmd_permutation_test(x, y + 0.8, permutations=100, seed=1) == shifted   # seeded: reproducible
    # the unbiased estimate, computed the slow way
    z = np.vstack([x, y + 0.8])
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * np.median(d2[np.triu_indices(len(z), 1)])))
    kxx, kyy, kxy = k[:60, :60], k[60:, 60:], k[:60, 60:]
    slow = ((kxx.sum() - 60) / (60 * 59) + (kyy.sum() - 60) / (60 * 59) - 2 * kxy.mean())
    assert shifted.mmd2 == pytest.approx(slow)


# --------------------------------------------------------------------------------------- plumbing, fake embedder
class HashingEmbedder:
    """Deterministic bag-of-words vectors: enough to exercise the plumbing without a model."""

    def __init__(self, dimension: int = 64):
        self.dimension = dimension
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            for token in re.findall(r"\w+", text.lower()):
                out[i, int(hashlib.md5(token.encode()).hexdigest(), 16) % self.dimension] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def _logs(spark, day: str, requests: list[tuple[str, str, str, list[tuple[str, bool]]]]):
    """requests: (request_id, query, language, [(doc_id, clicked), ...]), one session per request."""
    date = dt.date.fromisoformat(day)
    ts = dt.datetime.combine(date, dt.time(12))
    rows = [(date, rid, ts, f"s-{rid}", query, lang, doc, pos, clicked, 1000.0 if clicked else None)
            for rid, query, lang, docs in requests for pos, (doc, clicked) in enumerate(docs, start=1)]
    return spark.createDataFrame(rows, LOG_COLUMNS)


def test_drift_report_plumbing(spark):
    reference = _logs(spark, "2026-01-01", [
        (f"r{i}", "red running shoes" if i % 2 else "blue shoes", "en", [("D1", i % 2 == 0), ("D2", False)])
        for i in range(20)])
    window = _logs(spark, "2026-01-05", [
        *[(f"w{i}", "red kicks", "en", [("D9", True), ("D1", False), ("D2", False)]) for i in range(10)],
        *[(f"v{i}", "rote kicks schuhe", "de", [("D9", True), ("D2", False)]) for i in range(10)]])
    embedder = HashingEmbedder()
    settings = DriftSettings(embedding_sample_size=10, term_min_count=1, new_term_min_count=5)
    report = drift_report(reference, window, embedder, settings)

    assert [r["signal"] for r in report.rows] == ["language_mix", "query_length", "term_distribution",
                                                  "embedding", "new_terms", "new_documents"]
    for row in report.rows:
        assert set(row) == {"signal", "statistic", "value", "threshold", "drifted", "detail"}
        assert row["statistic"] and isinstance(row["drifted"], bool)
    # deduplicated by request_id: 20 requests a side, not one per impression
    assert report.metrics["reference_requests"] == 20 and report.metrics["window_requests"] == 20
    assert report.metrics["mean_tokens_reference"] == pytest.approx(2.5)
    assert report.metrics["mean_tokens_window"] == pytest.approx(2.5)
    # language: en 100% -> en 50% / de 50%
    assert report.metrics["language_psi"] == pytest.approx(
        population_stability_index([20, 0], [10, 10], settings.psi_epsilon))
    assert report.metrics["language_js_distance"] == pytest.approx(jensen_shannon_distance([20, 0], [10, 10]))
    # Spark's term JS (observed split, every token its own bin) equals numpy's on the same counts
    ref_tokens = {"red": 10, "running": 10, "shoes": 20, "blue": 10}
    win_tokens = {"red": 10, "kicks": 20, "rote": 10, "schuhe": 10}
    vocab = sorted(set(ref_tokens) | set(win_tokens))
    assert report.metrics["term_js_distance"] == pytest.approx(jensen_shannon_distance(
        [ref_tokens.get(t, 0) for t in vocab], [win_tokens.get(t, 0) for t in vocab]))
    # embedding: distinct queries only, each encoded once
    assert sorted(embedder.calls[0]) == ["blue shoes", "red kicks", "red running shoes", "rote kicks schuhe"]
    assert report.row("embedding")["detail"].endswith("2 vs 2 distinct queries")

    terms = report.new_terms.set_index("term")
    assert set(terms.index) == {"kicks", "rote", "schuhe"}
    assert terms.at["kicks", "window_count"] == 20 and terms.at["kicks", "languages"] == "de, en"
    assert terms.at["kicks", "example_queries"] == ["red kicks", "rote kicks schuhe"]
    assert report.metrics["new_term_query_share"] == pytest.approx(1.0)
    docs = report.new_documents
    assert list(docs["doc_id"]) == ["D9"] and docs.iloc[0]["clicks"] == 20 and docs.iloc[0]["requests"] == 20
    assert report.metrics["new_document_click_share"] == pytest.approx(1.0)

    assert report.overall_drifted and "language_mix" in report.drifted_signals
    markdown = report.to_markdown()
    assert markdown.startswith("**Drift: YES**")
    assert "| signal | statistic | value | threshold | drifted | detail |" in markdown
    assert "| kicks |" in markdown and "| D9 |" in markdown


def test_identical_windows_do_not_drift(spark):
    logs = _logs(spark, "2026-01-01", [(f"r{i}", q, lang, [(f"D{i % 7}", i % 3 == 0)]) for i, (q, lang) in
                                       enumerate([("red shoes", "en"), ("rote schuhe", "de"), ("blue bag", "en")] * 10)])
    report = drift_report(logs, logs, HashingEmbedder(), DriftSettings(embedding_sample_size=10))
    assert not report.overall_drifted and report.drifted_signals == []
    assert report.metrics["language_psi"] == pytest.approx(0.0, abs=1e-12)
    assert report.new_terms.empty and report.new_documents.empty
    assert "none" in report.to_markdown()


def test_empty_window_is_an_error(spark):
    logs = _logs(spark, "2026-01-01", [("r1", "red shoes", "en", [("D1", True)])])
    with pytest.raises(ValueError, match="window logs hold no request"):
        drift_report(logs, logs.limit(0), HashingEmbedder())


# --------------------------------------------------------------------------------------- simulator, real MiniLM
@pytest.fixture(scope="module")
def minilm():
    from models.embeddings import SentenceEmbedder

    return SentenceEmbedder(autocast=True)  # as drift_report builds its own


def test_autocast_embeddings_are_fp32s_to_the_third_decimal(minilm):
    from models.embeddings import SentenceEmbedder

    queries = ["red running shoes", "zapatillas rojas", "usb c cable 2m", "Laptop-Tasche 15 Zoll", "x"]
    exact = SentenceEmbedder().encode(queries)
    fast = minilm.encode(queries)
    assert fast.shape == exact.shape == (5, 384)
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    assert (fast * exact).sum(axis=1).min() > 0.999


def _simulated(spark, home, drift_strength: float):
    from serm_dagster.simulator import SimulationConfig, load_manifest, simulate

    simulate(home, SimulationConfig(days=8, queries_per_day=300, seed_days=2, evolving_window_days=2,
                                    drift_strength=drift_strength))
    manifest = load_manifest(home)
    logs = (spark.read.parquet(str(home / "landing" / "logs"))
            .withColumn("date", F.to_date(F.timestamp_millis("ts"))))
    days = [dt.date.fromisoformat(d) for d in manifest["days"]]
    reference = logs.where(F.col("date").isin(days[:2]))    # the seed period: what the model learnt from
    window = logs.where(F.col("date").isin(days[-2:]))      # the newest window
    return reference, window, manifest


# 250 distinct queries a side instead of 500: the same verdicts on these streams, half the encoding time
SIMULATOR_SETTINGS = DriftSettings(embedding_sample_size=250)


def test_drifting_stream_is_flagged(spark, tmp_path_factory, minilm):
    home = tmp_path_factory.mktemp("drifting")
    reference, window, manifest = _simulated(spark, home, drift_strength=1.0)
    report = drift_report(reference, window, minilm, SIMULATOR_SETTINGS)
    print(report.to_markdown())

    assert report.overall_drifted
    for signal in ("language_mix", "embedding", "term_distribution", "new_terms"):
        assert report.row(signal)["drifted"], report.row(signal)
    assert report.metrics["embedding_p_value"] < 0.01
    assert report.metrics["mean_tokens_window"] > report.metrics["mean_tokens_reference"]

    # the new terms are the simulator's launches and slang (the manifest is read here only to check)
    window_last = manifest["days"][-1]
    launched = {token for e in manifest["drift_events"] if e["day"] <= window_last
                for token in re.findall(r"\w+", e["term"].lower())}
    found = set(report.new_terms["term"]) & launched
    assert len(found) >= 4, (found, list(report.new_terms["term"]))
    assert report.new_terms.iloc[0]["term"] in launched
    assert all(len(examples) >= 1 for examples in report.new_terms["example_queries"])

    # the most clicked new documents include launched products (new brands / new product types)
    catalog = pd.read_parquet(home / "landing" / "catalog" / "catalog.parquet").set_index("doc_id")
    concepts = {e["concept"] for e in manifest["drift_events"] if e["kind"] in ("new_brand", "new_type")}

    def is_launch(doc_id: str) -> bool:
        attributes = json.loads(catalog.at[doc_id, "attributes"])
        return (f"brand:{attributes.get('brand', '').lower()}" in concepts
                or f"category:{attributes.get('category')}" in concepts)

    assert sum(is_launch(d) for d in report.new_documents["doc_id"].head(20)) >= 5


def test_stationary_stream_is_not_flagged(spark, tmp_path_factory, minilm):
    home = tmp_path_factory.mktemp("stationary")
    reference, window, manifest = _simulated(spark, home, drift_strength=0.0)
    assert manifest["drift_events"] == []
    report = drift_report(reference, window, minilm, SIMULATOR_SETTINGS)
    print(report.to_markdown())

    assert not report.overall_drifted, report.to_markdown()
    assert not report.row("embedding")["drifted"] and report.metrics["embedding_p_value"] > 0.05
    assert not report.row("term_distribution")["drifted"]
    assert len(report.new_terms) <= 2
    assert not report.row("new_terms")["drifted"]


def test_settings_validation():
    with pytest.raises(ValueError, match="smallest p-value"):
        DriftSettings(embedding_permutations=99).validate()   # p >= 1/100 can never be < 0.01
    assert DriftSettings(embedding_permutations=99, embedding_sample_size=0).validate()
    assert DriftSettings().validate().embedding_permutations == 100

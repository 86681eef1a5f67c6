"""The PBM recovers known examination and attractiveness from simulated clicks."""

from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from spark_jobs.click_model import PbmSettings, fit_pbm, position_counts

COUNTS = "query string, language string, doc_id string, position int, impressions long, clicks long"


def simulated_counts(spark, pairs: int = 30, positions: int = 10, seed: int = 0):
    """Every pair shown at every position (~50k impressions), clicks drawn from known gamma and alpha."""
    rng = np.random.default_rng(seed)
    gamma = 1.0 / np.arange(1, positions + 1) ** 0.9
    alpha = rng.uniform(0.05, 0.9, pairs)
    impressions = rng.integers(100, 250, (pairs, positions))
    clicks = rng.binomial(impressions, gamma[None, :] * alpha[:, None])
    rows = [(f"q{i}", "en", f"d{i}", k + 1, int(impressions[i, k]), int(clicks[i, k]))
            for i in range(pairs) for k in range(positions)]
    return spark.createDataFrame(rows, COUNTS), gamma, alpha


def test_pbm_recovers_position_bias_and_attractiveness(spark):
    counts, gamma, alpha = simulated_counts(spark)
    model = fit_pbm(counts, PbmSettings(iterations=10))
    fitted = model.attractiveness.toPandas().sort_values("doc_id", key=lambda s: s.str[1:].astype(int))
    # PBM is identified up to a scale shared by gamma and alpha: compare gamma_k / gamma_1 and alpha's ranks
    assert model.examination.index.tolist() == list(range(1, 11))
    ratios = model.examination.to_numpy() / model.examination.iloc[0]
    assert np.allclose(ratios, gamma / gamma[0], atol=0.06)
    assert spearmanr(fitted["attractiveness"], alpha).correlation > 0.95
    scaled = fitted["attractiveness"].to_numpy() * model.examination.iloc[0]
    assert np.abs(scaled - alpha).mean() < 0.05
    assert (fitted["support"] < fitted["impressions"]).all()
    assert fitted["mean_position"].between(1, 10).all()


def test_equal_attractiveness_under_position_bias(spark):
    # two equally attractive documents (alpha 0.5), one mostly shown first and one mostly eighth, where the
    # user examines 90% and 20% of the time: raw CTRs are 0.42 and 0.13, attractiveness is the same
    rows = [("q", "en", "a", 1, 900, 405), ("q", "en", "a", 8, 100, 10),
            ("q", "en", "b", 1, 100, 45), ("q", "en", "b", 8, 900, 90)]
    model = fit_pbm(spark.createDataFrame(rows, COUNTS), PbmSettings(iterations=8))
    fitted = model.attractiveness.toPandas().set_index("doc_id")
    raw_ctr = fitted["clicks"] / fitted["impressions"]
    assert raw_ctr["a"] - raw_ctr["b"] > 0.25
    assert abs(fitted.loc["a", "attractiveness"] - fitted.loc["b", "attractiveness"]) < 0.03
    assert model.examination[8] / model.examination[1] == pytest.approx(0.2 / 0.9, abs=0.03)
    # the well-examined document rests on more evidence
    assert fitted.loc["a", "support"] > fitted.loc["b", "support"]


def test_fits_raw_log_rows_with_normalized_queries_and_folded_positions(spark):
    logs = pd.DataFrame({
        "date": date(2026, 1, 1), "request_id": [f"r{i}" for i in range(6)], "ts": datetime(2026, 1, 1),
        "session_id": "s", "query": ["Red  Shoes", " red shoes", "red shoes", "RED SHOES", "lamp", "lamp"],
        "language": "en", "doc_id": ["d1", "d1", "d1", "d2", "d3", "d3"], "position": [1, 1, 2, 60, 1, 3],
        "clicked": [True, False, True, False, False, False], "dwell_ms": [5000.0, None, 900.0, None, None, None],
    })
    raw = spark.createDataFrame(logs)
    counts = position_counts(raw, max_position=5).toPandas()
    assert set(counts["query"]) == {"red shoes", "lamp"}
    assert counts.query("doc_id == 'd2'")["position"].tolist() == [5]
    model = fit_pbm(raw, PbmSettings(iterations=3, max_position=5))
    fitted = model.attractiveness.toPandas().set_index("doc_id")
    assert fitted.loc["d1", ["impressions", "clicks"]].tolist() == [3, 2]
    assert fitted.loc["d1", "mean_position"] == pytest.approx(4 / 3)
    assert model.iterations <= 3
    # the Beta(1, 1) prior keeps an unclicked pair's attractiveness off zero, below a clicked one's
    assert 0 < fitted.loc["d3", "attractiveness"] < fitted.loc["d1", "attractiveness"]


def test_silver_impressions_are_refused_with_a_pointer(spark):
    silver = spark.createDataFrame([("q", "en", "d", 10, 2, 1.5)], "query string, language string, doc_id string, "
                                   "impressions long, clicks long, mean_position double")
    with pytest.raises(ValueError, match="position_counts"):
        fit_pbm(silver)

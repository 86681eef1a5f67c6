"""The PBM recovers known examination and attractiveness from simulated clicks."""

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from spark_jobs.click_model import PbmSettings, fit_pbm


def simulated_counts(spark, seed: int = 0):
    rng = np.random.default_rng(seed)
    gamma = 1.0 / np.arange(1, 11) ** 0.9
    alpha = rng.uniform(0.05, 0.9, 40)
    rows = []
    for pair, a in enumerate(alpha):
        for position in range(1, 11):
            n = int(rng.integers(80, 200))
            rows.append(("q%d" % pair, "en", "d%d" % pair, position, n, int(rng.binomial(n, gamma[position - 1] * a))))
    frame = spark.createDataFrame(pd.DataFrame(rows, columns=["query", "language", "doc_id", "position", "impressions",
                                                              "clicks"]))
    return frame, gamma, alpha


def test_pbm_recovers_position_bias_and_attractiveness(spark):
    counts, gamma, alpha = simulated_counts(spark)
    model = fit_pbm(counts, PbmSettings(iterations=25, tolerance=1e-5))
    fitted = model.attractiveness.toPandas().sort_values("doc_id", key=lambda s: s.str[1:].astype(int))
    # PBM is identified up to a scale between gamma and alpha: compare ratios and ranks
    ratios = model.examination.to_numpy() / model.examination.iloc[0]
    assert np.allclose(ratios, gamma / gamma[0], atol=0.08)
    assert spearmanr(fitted["attractiveness"], alpha).correlation > 0.95
    assert (fitted["support"] < fitted["impressions"]).all()


def test_equal_attractiveness_under_position_bias(spark):
    # two equally attractive documents (alpha 0.5), one mostly shown first and one mostly eighth, where the
    # user examines 90% and 20% of the time: raw CTRs are 0.43 and 0.13, attractiveness is the same
    rows = [("q", "en", "a", 1, 900, 405), ("q", "en", "a", 8, 100, 10),
            ("q", "en", "b", 1, 100, 45), ("q", "en", "b", 8, 900, 90)]
    counts = spark.createDataFrame(rows, "query string, language string, doc_id string, position int, "
                                         "impressions long, clicks long")
    fitted = fit_pbm(counts, PbmSettings(iterations=40, tolerance=1e-6)).attractiveness.toPandas()
    raw_ctr = fitted["clicks"] / fitted["impressions"]
    assert raw_ctr.max() - raw_ctr.min() > 0.25
    assert fitted["attractiveness"].max() - fitted["attractiveness"].min() < 0.03

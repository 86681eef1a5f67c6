"""The miner's behavioural agents, the union of agents and the budget, on hand-built cases."""

import pandas as pd
import pytest
from pyspark.sql import functions as F

from spark_jobs.mining import (
    MinerSettings,
    behavioural_candidates,
    click_model_agent,
    language_quotas,
    model_thresholds,
    query_key,
    select_within_budget,
    uniform_sample,
    union_of_agents,
    user_feedback_agent,
)

SETTINGS = MinerSettings(tau_c=1.5, tau_u_ms=30_000, tau_cm=0.35, min_support=2.0, tau_position=3.0)


def frame(spark, rows, schema):
    return spark.createDataFrame(pd.DataFrame(rows, columns=[c.split()[0] for c in schema.split(", ")]), schema)


PAIRS = ("query string, language string, doc_id string, clicks long, impressions long, mean_dwell_ms double, "
         "mean_position double, score double")


def test_user_feedback_agent_flags_engagement_the_model_does_not_explain(spark):
    pairs = frame(spark, [
        ("q", "en", "clicked_low", 3, 10, 4000.0, 1.0, 0.4),      # clicked, model says no -> flag
        ("q", "en", "clicked_high", 3, 10, 4000.0, 1.0, 2.8),     # clicked, model agrees -> no
        ("q", "en", "long_dwell", 0, 10, 60000.0, 1.0, 0.2),      # no click but dwell > tau_u -> flag
        ("q", "en", "short_dwell", 0, 10, 10000.0, 1.0, 0.2),     # no click, dwell < tau_u -> no
        ("q", "en", "ignored_low", 0, 10, None, 1.0, 0.2),        # no engagement, low score -> no
        ("q", "en", "unscored_deep", 2, 10, None, 7.0, None),     # unscored: ranked deep -> flag (rank proxy)
        ("q", "en", "unscored_top", 2, 10, None, 1.0, None),      # unscored: ranked top -> no
    ], PAIRS)
    rows = {r["doc_id"]: r for r in user_feedback_agent(pairs, SETTINGS).collect()}
    assert {d: r["user_feedback_flag"] for d, r in rows.items()} == {
        "clicked_low": True, "clicked_high": False, "long_dwell": True, "short_dwell": False, "ignored_low": False,
        "unscored_deep": True, "unscored_top": False}
    assert rows["clicked_low"]["user_feedback_score"] == pytest.approx(0.3)
    assert rows["clicked_low"]["user_feedback_reason"] == "clicked 3/10, f=0.40 < 1.5"
    assert "dwell 60000 ms" in rows["long_dwell"]["user_feedback_reason"]
    assert "unscored, ranked at 7.0" in rows["unscored_deep"]["user_feedback_reason"]
    assert rows["clicked_high"]["user_feedback_reason"] is None
    # without the rank proxy behaviour alone cannot flag an unscored pair
    strict = MinerSettings(rank_proxy=False)
    flagged = {r["doc_id"] for r in user_feedback_agent(pairs, strict).where("user_feedback_flag").collect()}
    assert flagged == {"clicked_low", "long_dwell"}


ATTRACTIVENESS = ("query string, language string, doc_id string, attractiveness double, impressions long, clicks long, "
                  "support double, mean_position double")


def test_click_model_agent_needs_attractiveness_support_clicks_and_a_low_opinion(spark):
    pbm = frame(spark, [
        ("q", "en", "attractive_low", 0.7, 20, 5, 10.0, 2.0),      # flag (score 0.3)
        ("q", "en", "attractive_thin", 0.9, 1, 1, 0.8, 2.0),       # too little support -> no
        ("q", "en", "prior_only", 0.4, 12, 0, 3.0, 8.0),           # attractive only by the prior, never clicked -> no
        ("q", "en", "unattractive_low", 0.05, 20, 0, 10.0, 2.0),   # no
        ("q", "en", "attractive_high", 0.7, 20, 5, 10.0, 2.0),     # model agrees -> no
        ("q", "en", "unscored_deep", 0.6, 30, 6, 4.0, 6.5),        # unscored, ranked deep -> flag
        ("q", "en", "unscored_top", 0.6, 30, 6, 8.0, 1.2),         # unscored, ranked top -> no
    ], ATTRACTIVENESS)
    scores = frame(spark, [("q", "en", d, s) for d, s in (("attractive_low", 0.3), ("attractive_thin", 0.3),
                                                          ("prior_only", 0.3), ("unattractive_low", 0.3),
                                                          ("attractive_high", 2.9))],
                   "query string, language string, doc_id string, score double")
    result = {r["doc_id"]: r for r in click_model_agent(pbm, scores, SETTINGS).collect()}
    assert sorted(d for d, r in result.items() if r["click_model_flag"]) == ["attractive_low", "unscored_deep"]
    assert result["attractive_low"]["click_model_reason"] == "attractiveness 0.70 > 0.35 (support 10.0), f=0.30 < 1.5"
    assert result["unscored_deep"]["click_model_score"] == pytest.approx(0.6)
    # no scores at all: the rank proxy for every pair; a frame carrying its own score column works too
    proxied = {r["doc_id"] for r in click_model_agent(pbm, None, SETTINGS).where("click_model_flag").collect()}
    assert proxied == {"unscored_deep"}
    with_score = pbm.join(scores, ["query", "language", "doc_id"], "left")
    own = {r["doc_id"] for r in click_model_agent(with_score, settings=SETTINGS).where("click_model_flag").collect()}
    assert own == {"attractive_low", "unscored_deep"}


def test_candidates_and_uniform_sample_of_the_rest(spark):
    pairs = frame(spark, [("q", "en", f"d{i}", 2 if i < 2 else 0, 10, None, 1.0, 0.2 if i < 2 else 2.5)
                          for i in range(12)], PAIRS)
    pbm = frame(spark, [("q", "en", "d2", 0.8, 10, 3, 5.0, 5.0)], ATTRACTIVENESS)
    candidates = behavioural_candidates(user_feedback_agent(pairs, SETTINGS), click_model_agent(pbm, None, SETTINGS))
    assert sorted(r["doc_id"] for r in candidates.collect()) == ["d0", "d1", "d2"]
    strongest = behavioural_candidates(user_feedback_agent(pairs, SETTINGS), click_model_agent(pbm, None, SETTINGS),
                                       limit=1)
    assert [r["doc_id"] for r in strongest.collect()] == ["d2"]  # attractiveness 0.8 beats CTR 0.2
    sample = [r["doc_id"] for r in uniform_sample(pairs, candidates, 4, seed=3).collect()]
    assert len(sample) == 4 and not set(sample) & {"d0", "d1", "d2"}
    assert sample == [r["doc_id"] for r in uniform_sample(pairs.repartition(3), candidates, 4, seed=3).collect()]
    assert len(uniform_sample(pairs, candidates, 100, seed=3).collect()) == 9


def test_model_thresholds_are_the_quantile_of_the_windows_uniform_sample(spark):
    # candidates (c*) are unsure, the window's sample (u*) mostly sure: the sample says what "unsure" means here
    rows = [("q", "en", f"c{i}", 0.5 + i / 100, 1.2) for i in range(40)] + \
        [("q", "en", f"u{i}", i / 100, i / 100) for i in range(10)]
    scored = frame(spark, rows, "query string, language string, doc_id string, disagreement_score double, "
                                "uncertainty_score double")
    sample = scored.where(F.col("doc_id").startswith("u")).select("query", "language", "doc_id")
    settings = MinerSettings(model_flag_quantile=0.8)
    assert model_thresholds(scored, settings, sample) == (0.07, 0.07)  # the 8th of the sample's 10
    tau_md, tau_mu = model_thresholds(scored, settings)  # no sample: every scored pair, mostly the candidates'
    assert tau_md == 0.79 and tau_mu == 1.2
    empty = sample.where("false")
    assert model_thresholds(scored, settings, empty) == (tau_md, tau_mu)
    assert model_thresholds(scored, MinerSettings(tau_md=0.3, tau_mu=0.9), sample) == (0.3, 0.9)


def test_union_keeps_any_flag_and_every_score(spark):
    uf = frame(spark, [("q", "en", "a", 0.5, True, "clicked"), ("q", "en", "b", 0.0, False, None),
                       ("q", "en", "d", 0.4, True, "clicked 2/5")],
               "query string, language string, doc_id string, user_feedback_score double, user_feedback_flag boolean, "
               "user_feedback_reason string")
    md = frame(spark, [("q", "en", "b", 1.2, True, "gap 1.2"), ("q", "en", "c", 0.1, False, None),
                       ("q", "en", "d", 0.9, True, "gap 0.9")],
               "query string, language string, doc_id string, disagreement_score double, disagreement_flag boolean, "
               "disagreement_reason string")
    union = union_of_agents([uf, md])
    rows = {r["doc_id"]: r for r in union.collect()}
    assert set(rows) == {"a", "b", "d"}  # c: seen, not flagged
    assert rows["a"]["agents"] == ["user_feedback"] and rows["a"]["disagreement_score"] is None
    assert rows["a"]["disagreement_flag"] is None  # the disagreement agent never saw it
    assert rows["b"]["agents"] == ["disagreement"] and rows["b"]["user_feedback_score"] == 0.0
    assert rows["b"]["user_feedback_flag"] is False and rows["b"]["reasons"] == "disagreement: gap 1.2"
    assert rows["d"]["agents"] == ["disagreement", "user_feedback"] and rows["d"]["n_agents"] == 2
    assert rows["d"]["reasons"] == "disagreement: gap 0.9; user_feedback: clicked 2/5"
    # agents that did not run still have their columns, so every iteration's table has one schema
    assert {"click_model_score", "click_model_flag", "uncertainty_reason"} <= set(union.columns)
    assert dict(union.dtypes)["n_agents"] == "int"


UNION = "query string, language string, doc_id string, agents array<string>, n_agents int, disagreement_score double"


def test_budget_caps_queries_spreads_languages_and_drops_near_duplicates(spark):
    rows = [("red shoes", "en", f"e{i}", ["disagreement"], 1, 2.0 - i * 0.1) for i in range(10)]  # cap keeps 3
    rows += [("shoes red", "en", "e0", ["disagreement"], 1, 2.5),       # word order: same key, same doc -> one
             ("red shoes", "en", "x", ["disagreement"], 1, 0.1),        # ... though its doc differs: the cap counts
             ("blue sandals", "en", "s", ["disagreement"], 1, 2.9),     # best
             ("blue sandal", "en", "s", ["disagreement"], 1, 2.8),      # one edit from a better pair, same doc -> out
             ("blue sandal", "en", "t", ["disagreement"], 1, 2.8)]      # other doc -> stays
    rows += [(f"lamp {i}", "en", "l", ["disagreement"], 1, 1.5) for i in range(40)]
    rows += [(f"ayakkabı {i}", "tr", "t", ["disagreement"], 1, 0.2) for i in range(4)]  # low scores, minor language
    union = frame(spark, rows, UNION)
    chosen = select_within_budget(union, 20, MinerSettings(cap_per_query=3, min_language_share=0.15)).toPandas()
    assert len(chosen) == 20
    assert chosen["selection_rank"].tolist() == list(range(1, 21))
    keyed = chosen["query"].map(lambda q: " ".join(sorted(q.split())))
    assert (keyed == "red shoes").sum() == 3
    assert ((chosen["doc_id"] == "e0").sum(), chosen.query("doc_id == 'e0'")["query"].iat[0]) == (1, "shoes red")
    assert set(chosen.query("doc_id == 's'")["query"]) == {"blue sandals"}
    assert "t" in set(chosen.query("query == 'blue sandal'")["doc_id"])
    assert (chosen["language"] == "tr").sum() == 3  # the 15% floor of 20, not its 7% share
    assert chosen["selection_rank"].iat[0] == 1 and chosen["query"].iat[0] == "blue sandals"
    # all would fit: kept as they are, unless asked to diversify anyway (45 English + 4 Turkish survive)
    assert select_within_budget(union, 100).count() == len(rows)
    assert select_within_budget(union, 100, MinerSettings(diversify_under_budget=True)).count() == 49


def test_budget_prefers_new_terms_and_keeps_everything_when_there_is_room(spark):
    rows = [(f"sneakers {i}", "en", "s", ["disagreement"], 1, 1.0) for i in range(6)] + \
           [(f"kicks {i}", "en", "k", ["disagreement"], 1, 0.9) for i in range(3)]
    union = frame(spark, rows, UNION)
    chosen = select_within_budget(union, 3, MinerSettings(min_language_share=0.0), new_terms=["Kicks"]).toPandas()
    assert sorted(chosen["query"]) == ["kicks 0", "kicks 1", "kicks 2"] and chosen["has_new_term"].all()
    everything = select_within_budget(union, 20, MinerSettings(cap_per_query=1), new_terms=["kicks"]).toPandas()
    assert len(everything) == 9  # under budget: no cap, no dedup
    assert everything.sort_values("selection_rank")["query"].tolist()[:3] == ["kicks 0", "kicks 1", "kicks 2"]
    # without a budget argument the settings' budget applies
    from_settings = select_within_budget(union, settings=MinerSettings(budget=3, min_language_share=0.0),
                                         new_terms=["kicks"]).toPandas()
    assert sorted(from_settings["query"]) == ["kicks 0", "kicks 1", "kicks 2"]


def test_query_key_ignores_order_punctuation_and_doubled_letters(spark):
    queries = ["Shoes, red!", "red shooes", "red red shoes", "lamp 11", "lamp 1", "kırmızı ayakkabı"]
    keys = spark.createDataFrame([(q,) for q in queries], "query string").select(query_key(F.col("query"))).collect()
    assert [k[0] for k in keys] == ["red shoes", "red shoes", "red shoes", "11 lamp", "1 lamp", "ayakabı kırmızı"]  # a key, not text


def test_language_quotas():
    assert language_quotas({"en": 5, "tr": 2}, 10, 0.1) == {"en": 5, "tr": 2}  # everything fits
    quotas = language_quotas({"en": 900, "de": 90, "tr": 10}, 100, 0.05)
    assert quotas == {"en": 86, "de": 9, "tr": 5}  # tr: its 5% floor; en and de share the other 95 by size
    assert language_quotas({"en": 900, "is": 2}, 100, 0.05) == {"en": 98, "is": 2}  # a floor above what it has
    many = language_quotas({f"l{i}": 10 for i in range(30)}, 20, 0.05)  # more languages than slots
    assert sum(many.values()) == 20 and max(many.values()) == 1

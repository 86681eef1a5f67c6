"""The miner's behavioural agents, the union of agents and the budget, on hand-built cases."""

import pandas as pd

from spark_jobs.mining import (
    MinerSettings,
    behavioural_candidates,
    click_model_agent,
    select_within_budget,
    union_of_agents,
    user_feedback_agent,
)

SETTINGS = MinerSettings(tau_c=1.5, tau_u_ms=30_000, tau_cm=0.35, min_support=2.0, tau_position=3.0)


def frame(spark, rows, schema):
    return spark.createDataFrame(pd.DataFrame(rows, columns=[c.split()[0] for c in schema.split(", ")]), schema)


PAIRS = ("query string, language string, doc_id string, clicks long, impressions long, mean_dwell_ms double, "
         "mean_position double, score double, attractiveness double, support double")


def test_user_feedback_agent(spark):
    pairs = frame(spark, [
        ("q", "en", "clicked_low", 3, 10, 4000.0, 1.0, 0.4, 0.5, 5.0),      # clicked, model says no -> flag
        ("q", "en", "clicked_high", 3, 10, 4000.0, 1.0, 2.8, 0.5, 5.0),     # clicked, model agrees -> no
        ("q", "en", "long_dwell", 0, 10, 60000.0, 1.0, 0.2, 0.1, 5.0),      # no click but long dwell -> flag
        ("q", "en", "ignored_low", 0, 10, None, 1.0, 0.2, 0.1, 5.0),        # no engagement -> no
        ("q", "en", "unscored_deep", 2, 10, None, 7.0, None, 0.5, 1.0),     # unscored: ranked deep -> flag
        ("q", "en", "unscored_top", 2, 10, None, 1.0, None, 0.5, 1.0),      # unscored: ranked top -> no
    ], PAIRS)
    flags = {r["doc_id"]: r["user_feedback_flag"] for r in user_feedback_agent(pairs, SETTINGS).collect()}
    assert flags == {"clicked_low": True, "clicked_high": False, "long_dwell": True, "ignored_low": False,
                     "unscored_deep": True, "unscored_top": False}


def test_click_model_agent_needs_support(spark):
    pairs = frame(spark, [
        ("q", "en", "attractive_low", 5, 20, None, 2.0, 0.3, 0.7, 10.0),     # flag
        ("q", "en", "attractive_thin", 1, 1, None, 2.0, 0.3, 0.9, 0.8),      # too little support -> no
        ("q", "en", "unattractive_low", 0, 20, None, 2.0, 0.3, 0.05, 10.0),  # no
        ("q", "en", "attractive_high", 5, 20, None, 2.0, 2.9, 0.7, 10.0),    # model agrees -> no
    ], PAIRS)
    result = {r["doc_id"]: r for r in click_model_agent(pairs, SETTINGS).collect()}
    assert [d for d, r in result.items() if r["click_model_flag"]] == ["attractive_low"]
    assert "attractiveness 0.70" in result["attractive_low"]["click_model_reason"]
    user_flagged = {r["doc_id"] for r in user_feedback_agent(pairs, SETTINGS).where("user_feedback_flag").collect()}
    assert user_flagged == {"attractive_low", "attractive_thin"}  # clicked, and f < tau_c
    candidates = behavioural_candidates(user_feedback_agent(pairs, SETTINGS), click_model_agent(pairs, SETTINGS))
    assert {r["doc_id"] for r in candidates.collect()} == {"attractive_low", "attractive_thin"}


def test_union_keeps_any_flag_and_every_score(spark):
    uf = frame(spark, [("q", "en", "a", 0.5, True, "clicked"), ("q", "en", "b", 0.0, False, None)],
               "query string, language string, doc_id string, user_feedback_score double, user_feedback_flag boolean, "
               "user_feedback_reason string")
    md = frame(spark, [("q", "en", "b", 1.2, True, "gap 1.2"), ("q", "en", "c", 0.1, False, None)],
               "query string, language string, doc_id string, disagreement_score double, disagreement_flag boolean, "
               "disagreement_reason string")
    rows = {r["doc_id"]: r for r in union_of_agents([uf, md]).collect()}
    assert set(rows) == {"a", "b"}
    assert rows["a"]["agents"] == ["user_feedback"] and rows["a"]["disagreement_score"] is None
    assert rows["b"]["agents"] == ["disagreement"] and rows["b"]["user_feedback_score"] == 0.0
    assert rows["b"]["reasons"] == "disagreement: gap 1.2"


UNION = "query string, language string, doc_id string, agents array<string>, n_agents int, disagreement_score double"


def test_budget_caps_queries_spreads_languages_and_drops_near_duplicates(spark):
    rows = []
    for i in range(10):  # ten pairs for one English query: the cap keeps 3
        rows.append(("red shoes", "en", f"e{i}", ["disagreement"], 1, 2.0 - i * 0.1))
    rows.append(("shoes red", "en", "e0", ["disagreement"], 1, 1.0))  # near-duplicate of (red shoes, e0)
    for i in range(40):  # many other English queries
        rows.append((f"lamp {i}", "en", "l", ["disagreement"], 1, 1.5))
    for i in range(4):  # a few Turkish pairs with low scores must still get in
        rows.append((f"ayakkabı {i}", "tr", "t", ["disagreement"], 1, 0.2))
    union = frame(spark, rows, UNION)
    chosen = select_within_budget(union, MinerSettings(budget=20, cap_per_query=3, min_language_share=0.15)).toPandas()
    assert len(chosen) == 20
    assert (chosen["query"] == "red shoes").sum() <= 3
    assert not ((chosen["query"] == "shoes red") & (chosen["doc_id"] == "e0")).any()
    assert (chosen["language"] == "tr").sum() >= 3
    assert chosen["selection_rank"].tolist() == list(range(1, 21))


def test_budget_keeps_everything_when_there_is_room_and_prefers_new_terms(spark):
    union = frame(spark, [("kicks red", "en", "a", ["disagreement"], 1, 0.5), ("sneakers red", "en", "b",
                                                                                  ["disagreement"], 1, 0.9)], UNION)
    chosen = select_within_budget(union, MinerSettings(budget=10), new_terms=["kicks"]).toPandas()
    assert len(chosen) == 2
    assert chosen.sort_values("selection_rank")["doc_id"].tolist() == ["a", "b"]
    assert chosen.set_index("doc_id").loc["a", "has_new_term"]

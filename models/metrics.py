"""Evaluation metrics: NDCG@k with graded gains, label accuracy, per language family and language.

Values are in percent, as the paper reports them (NDCG@1 84.74 for the 7B seed model, Germanic).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

LANGUAGE_FAMILIES = {"germanic": ["en", "de", "nl"], "romance": ["es", "fr", "it", "pt"], "minor": ["tr", "pl", "id"]}
_FAMILY_OF = {lang: family for family, langs in LANGUAGE_FAMILIES.items() for lang in langs}
METRICS = ("ndcg@1", "ndcg@4", "accuracy")
QUERY_KEY = ("query", "language")  # the same query text in two languages is two queries
# the parts of every test set, cut by query: promotion decides on the validation part, reports show the test part
VALIDATION, TEST = "validation", "test"


def family_of(language: str) -> str:
    """The language family of a code such as "de" or "pt-BR"; "other" when it is none of ours."""
    return _FAMILY_OF.get(str(language).split("-")[0].split("_")[0].lower(), "other")


def _query_keys(frame: pd.DataFrame, group_col: str | Sequence[str]) -> pd.Series:
    """One key per query: the column ``group_col`` when the frame has it, else one key per distinct
    (query, language) (or per distinct value of the columns ``group_col`` names)."""
    if isinstance(group_col, str):
        if group_col in frame.columns:
            return frame[group_col]
        if group_col != "query_key":
            raise KeyError(f"no column {group_col!r} to group queries by")
        group_col = QUERY_KEY
    return frame.groupby(list(group_col), sort=False, dropna=False).ngroup()


def ndcg_per_query(frame: pd.DataFrame, k: int, score_col: str = "score", label_col: str = "label",
                   group_col: str | Sequence[str] = "query_key") -> pd.Series:
    """NDCG@k of each query (a fraction), indexed by query key.

    Gains 2^label - 1; the documents ranked by ``score_col`` (ties broken by ``doc_id`` so the metric
    is deterministic); the ideal DCG from the true labels. Queries whose documents are all labelled 0
    are skipped: they have no ideal ranking (IDCG = 0), and every ranking of them is equally good.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    if frame.empty:
        return pd.Series(dtype=float)
    tie_break = ["doc_id"] if "doc_id" in frame.columns else []
    data = pd.DataFrame({"key": _query_keys(frame, group_col).to_numpy(),
                         "score": frame[score_col].to_numpy(dtype=float),
                         "gain": np.power(2.0, frame[label_col].to_numpy(dtype=float)) - 1.0})
    for column in tie_break:
        data[column] = frame[column].to_numpy()

    def discounted(sorted_frame: pd.DataFrame) -> pd.Series:
        rank = sorted_frame.groupby("key", sort=False).cumcount()
        top = sorted_frame[rank < k]
        return (top["gain"] / np.log2(rank[rank < k] + 2.0)).groupby(top["key"]).sum()

    ranked = data.sort_values(["key", "score", *tie_break], ascending=[True, False, *[True] * len(tie_break)],
                              kind="stable")
    ideal = data.sort_values(["key", "gain"], ascending=[True, False], kind="stable")
    dcg, idcg = discounted(ranked), discounted(ideal)
    keep = idcg > 0
    return dcg[keep] / idcg[keep]


def ndcg_at_k(frame: pd.DataFrame, k: int, score_col: str = "score", label_col: str = "label",
              group_col: str | Sequence[str] = "query_key") -> float:
    """Mean NDCG@k over queries, in percent; NaN when no query has a relevant document."""
    values = ndcg_per_query(frame, k, score_col, label_col, group_col)
    return float(values.mean() * 100.0) if len(values) else float("nan")


def accuracy(frame: pd.DataFrame, pred_col: str = "pred_label", label_col: str = "label") -> float:
    """Share of pairs whose most likely label (``pred_label``, the argmax) is the true label, in percent."""
    return float((frame[pred_col] == frame[label_col]).mean() * 100.0) if len(frame) else float("nan")


def evaluate(frame: pd.DataFrame, slices: Sequence[str] = ("overall", "family", "language")) -> pd.DataFrame:
    """``slice_type, slice, metric, value, n_queries, n_pairs`` for ndcg@1, ndcg@4 and accuracy.

    ``frame``: one row per judged pair with ``query, language, doc_id, label, score, pred_label``.
    ``n_queries`` is the number of queries the metric averages over (for NDCG, queries with at least
    one relevant document; for accuracy, all queries in the slice); ``n_pairs`` the pairs in the slice.
    A slice type is "overall", "family" or any column of ``frame`` that is constant within a query.
    """
    frame = frame.assign(family=frame["language"].map(family_of), query_key=_query_keys(frame, QUERY_KEY))
    unknown = set(slices) - {"overall"} - set(frame.columns)
    if unknown:
        raise ValueError(f"unknown slice types {sorted(unknown)}")
    # a query's NDCG does not depend on the other queries: computed once, each slice takes its queries' values
    every_query = {f"ndcg@{k}": ndcg_per_query(frame, k) for k in (1, 4)}
    rows = []
    for slice_type in slices:
        if slice_type == "overall":
            groups = [("all", frame)]
        else:
            groups = sorted(frame.groupby(slice_type), key=lambda group: str(group[0]))
        for name, part in groups:
            keys = part["query_key"].unique()
            per_query = {metric: values[values.index.isin(keys)] for metric, values in every_query.items()}
            for metric in METRICS:
                if metric == "accuracy":
                    value, n_queries = accuracy(part), part["query_key"].nunique()
                else:
                    values = per_query[metric]
                    value, n_queries = (float(values.mean() * 100.0) if len(values) else float("nan")), len(values)
                rows.append({"slice_type": slice_type, "slice": name, "metric": metric, "value": value,
                             "n_queries": int(n_queries), "n_pairs": len(part)})
    return pd.DataFrame(rows, columns=["slice_type", "slice", "metric", "value", "n_queries", "n_pairs"])


def paired_bootstrap(differences: pd.Series, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Mean of per-query differences (one value per query, e.g. SERM minus self-training NDCG@1 averaged
    over training seeds) with a percentile bootstrap interval: queries resampled with replacement
    ``resamples`` times with a fixed rng seed, so the interval is reproducible. Pairing by query removes
    the spread between queries that both models share."""
    values = pd.Series(differences, dtype=float).dropna().to_numpy()
    if not len(values):
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n_queries": 0}
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return {"mean": float(values.mean()), "low": float(low), "high": float(high), "n_queries": int(len(values))}

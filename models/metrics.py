"""Evaluation metrics: NDCG@k with graded gains, label accuracy, per language family and language."""

from __future__ import annotations

import numpy as np
import pandas as pd

LANGUAGE_FAMILIES = {"germanic": ["en", "de", "nl"], "romance": ["es", "fr", "it", "pt"], "minor": ["tr", "pl", "id"]}
_FAMILY_OF = {lang: family for family, langs in LANGUAGE_FAMILIES.items() for lang in langs}


def family_of(language: str) -> str:
    return _FAMILY_OF.get(str(language).split("-")[0].lower(), "other")


def _dcg(gains: np.ndarray) -> float:
    return float((gains / np.log2(np.arange(2, len(gains) + 2))).sum())


def ndcg_per_query(frame: pd.DataFrame, k: int, score_col: str = "score", label_col: str = "label",
                   group_cols: tuple[str, ...] = ("query", "language")) -> pd.Series:
    """NDCG@k per query with gains 2^label - 1. Queries whose pairs are all irrelevant have no ideal
    ranking (IDCG = 0) and are skipped, as is usual."""
    def one(group: pd.DataFrame) -> float:
        # ties broken by doc_id so the metric is deterministic
        ranked = group.sort_values([score_col, "doc_id"], ascending=[False, True])
        gains = np.power(2.0, ranked[label_col].to_numpy(dtype=float)) - 1.0
        ideal = np.sort(gains)[::-1]
        idcg = _dcg(ideal[:k])
        return np.nan if idcg == 0 else _dcg(gains[:k]) / idcg

    values = frame.groupby(list(group_cols), sort=True).apply(one, include_groups=False)
    return values.dropna()


def ndcg_at_k(frame: pd.DataFrame, k: int, **kwargs) -> float:
    """Mean NDCG@k over queries, in percent (like the paper's 84.74)."""
    values = ndcg_per_query(frame, k, **kwargs)
    return float(values.mean() * 100.0) if len(values) else float("nan")


def accuracy(frame: pd.DataFrame) -> float:
    """Share of pairs whose most likely label is the true label, in percent."""
    return float((frame["pred_label"] == frame["label"]).mean() * 100.0) if len(frame) else float("nan")


def evaluate(frame: pd.DataFrame, slices: tuple[str, ...] = ("overall", "family", "language")) -> pd.DataFrame:
    """``slice_type, slice, metric, value, n_queries, n_pairs`` for ndcg@1, ndcg@4 and accuracy."""
    frame = frame.assign(family=frame["language"].map(family_of))
    rows = []
    for slice_type in slices:
        groups = [("all", frame)] if slice_type == "overall" else \
            sorted(frame.groupby("family" if slice_type == "family" else "language"), key=lambda g: g[0])
        for name, part in groups:
            n_queries = int(part.groupby(["query", "language"]).ngroups)
            for metric, value in (("ndcg@1", ndcg_at_k(part, 1)), ("ndcg@4", ndcg_at_k(part, 4)),
                                  ("accuracy", accuracy(part))):
                rows.append({"slice_type": slice_type, "slice": name, "metric": metric, "value": value,
                             "n_queries": n_queries, "n_pairs": len(part)})
    return pd.DataFrame(rows)

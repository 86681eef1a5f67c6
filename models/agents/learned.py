"""Judges learnt from the seed judgments, that vote only where they were right out of fold.

A :class:`LearnedJudge` maps a pair to a row of features (its own kind of evidence: words, catalogue
knowledge, behaviour; see models/agents/features.py) and labels it with gradient-boosted trees, an
inductive bias unlike the cross-encoder's. It is fitted by cross-fitting, grouped by query:

- the seed judgments are cut into ``folds`` groups of queries; fold model i is trained on the other
  groups and predicts its own group, so every seed pair gets an out-of-fold prediction from a model
  that never saw its query;
- from those predictions, per predicted label, the lowest confidence at which the judge's votes were
  still right ``min_accuracy`` of the time (each label's pairs weighed by 1 / its share, because mined
  pairs are not labelled in the seed's proportions). Below it, or for a label never that reliable,
  the judge abstains;
- the fold models are the judge's reasoning paths (level 1): path i asks fold model i, so the
  paths disagree where the judge's own fit is uncertain, and each path's gate was calibrated on
  pairs that path never trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .base import LABELS, STATUS_ABSTAIN, STATUS_OK, PairToJudge, ReasoningPath, stable_hash

EMBEDDED_BACKEND = "embedded"


@dataclass(frozen=True)
class Gate:
    """Per predicted label, the least confidence a vote needs (None: never vote that label), and what it
    gave out of fold: ``accuracy`` and ``coverage`` of the votes (balanced), over ``n`` seed pairs."""

    thresholds: dict[int, float | None]
    min_accuracy: float
    accuracy: float = 0.0
    coverage: float = 0.0
    n: int = 0

    def admits(self, label: int, confidence: float) -> bool:
        threshold = self.thresholds.get(int(label))
        return threshold is not None and confidence >= threshold

    def to_dict(self) -> dict:
        return {"thresholds": {str(k): v for k, v in sorted(self.thresholds.items())},
                "min_accuracy": self.min_accuracy, "oof_accuracy": self.accuracy, "oof_coverage": self.coverage,
                "n": self.n}


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    share = np.bincount(labels, minlength=len(LABELS)) / max(len(labels), 1)
    return 1.0 / np.where(share[labels] > 0, share[labels], 1.0)


def fit_gate(proba: np.ndarray, labels: np.ndarray, *, min_accuracy: float, min_votes: int = 10) -> Gate:
    """The gate from out-of-fold probabilities (rows of NaN: the judge abstained on that pair anyway)."""
    usable = ~np.isnan(proba).any(axis=1)
    proba, labels = proba[usable], labels[usable]
    weights = balanced_weights(labels)
    predicted, confidence = proba.argmax(axis=1), proba.max(axis=1)
    thresholds: dict[int, float | None] = {}
    for label in LABELS:
        mine = np.flatnonzero(predicted == label)
        order = mine[np.argsort(-confidence[mine], kind="stable")]
        right = np.cumsum(weights[order] * (labels[order] == label))
        precision = right / np.cumsum(weights[order]) if len(order) else np.array([])
        # a threshold admits every pair at its confidence: cut only where the confidence changes
        sorted_confidence = confidence[order]
        boundary = np.r_[sorted_confidence[1:] < sorted_confidence[:-1], True] if len(order) else np.array([], bool)
        ok = np.flatnonzero((precision >= min_accuracy) & (np.arange(1, len(order) + 1) >= min_votes) & boundary)
        thresholds[label] = float(confidence[order[ok[-1]]]) if len(ok) else None
    gate = Gate(thresholds, float(min_accuracy))
    votes = np.array([gate.admits(p, c) for p, c in zip(predicted, confidence)], dtype=bool)
    if not votes.any():
        return Gate(thresholds, float(min_accuracy), 0.0, 0.0, int(len(labels)))
    accuracy = np.average(predicted[votes] == labels[votes], weights=weights[votes])
    return Gate(thresholds, float(min_accuracy), round(float(accuracy), 4), round(float(votes.mean()), 4),
                int(len(labels)))


def _tree_model(seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=60, learning_rate=0.12, max_leaf_nodes=15, min_samples_leaf=10,
                                          l2_regularization=1.0, class_weight="balanced", random_state=seed)


def _full_proba(model, X: np.ndarray) -> np.ndarray:
    """Probabilities over every label 0-3, also for a model that saw only some of them."""
    out = np.zeros((len(X), len(LABELS)))
    out[:, model.classes_.astype(int)] = model.predict_proba(X)
    return out


def query_folds(queries: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """Fold of each pair: whole queries per fold, assigned by a seeded shuffle of the distinct queries."""
    distinct = sorted(set(queries))
    order = np.random.default_rng(seed).permutation(len(distinct))
    fold_of = {distinct[i]: rank % folds for rank, i in enumerate(order)}
    return np.array([fold_of[q] for q in queries])


@dataclass
class FittedJudge:
    """Fold models, the feature columns they read, and the gate."""

    models: list
    columns: list[str]
    gate: Gate
    label_counts: dict[int, int] = field(default_factory=dict)


def fit_learned(features: pd.DataFrame, labels: Sequence[int], queries: Sequence[str], usable: np.ndarray, *,
                folds: int = 3, min_accuracy: float = 0.8, seed: int = 0) -> FittedJudge:
    """Cross-fit fold models on the usable seed pairs and calibrate their gate out of fold."""
    y = np.asarray(labels, dtype=int)
    mask = np.asarray(usable, dtype=bool) & np.isin(y, LABELS)
    # a feature no seed pair has (a behaviour field this source does not log) tells nothing
    features = features.loc[:, features[mask].notna().any(axis=0).to_numpy()]
    X, y = features.to_numpy(dtype=float)[mask], y[mask]
    groups = np.asarray(queries)[mask]
    n_groups = len(set(groups))
    if n_groups < folds or len(set(y)) < 2:
        raise ValueError(f"a learned judge needs judged pairs of at least {folds} queries and 2 labels; "
                         f"got {n_groups} queries, labels {sorted(set(y))}")
    fold = query_folds(list(groups), folds, seed)
    oof = np.full((len(y), len(LABELS)), np.nan)
    models = []
    for k in range(folds):
        train = fold != k
        model = _tree_model(seed + k).fit(X[train], y[train])
        oof[~train] = _full_proba(model, X[~train])
        models.append(model)
    gate = fit_gate(oof, y, min_accuracy=min_accuracy)
    return FittedJudge(models, list(features.columns), gate, {int(k): int(v) for k, v in zip(*np.unique(y, return_counts=True))})


class LearnedJudge:
    """An embedded judge over one kind of evidence (see the module docstring).

    ``featurize(pairs) -> (features, usable)``: a feature frame (NaN where a value is missing) and a
    boolean array, False where the judge has no evidence at all and abstains without asking its models.
    ``fingerprint``: what else changes its answers (the knowledge it reads, the encoder), for the cache key.
    """

    backend = EMBEDDED_BACKEND

    def __init__(self, name: str, version: str, featurize: Callable[[Sequence[PairToJudge]], tuple[pd.DataFrame, np.ndarray]],
                 fitted: FittedJudge, *, fingerprint: str = "", describe: Callable[[pd.Series], str] | None = None):
        self.name = name
        self.model = "hist-gradient-boosting"
        self.prompt_version = version
        self.featurize = featurize
        self.fitted = fitted
        self.max_paths = len(fitted.models)
        self._fingerprint = fingerprint
        self._describe = describe or (lambda row: "")
        self._cache: dict[str, tuple[np.ndarray, bool, str]] = {}

    def config_key(self) -> str:
        return stable_hash({"backend": self.backend, "model": self.model, "version": self.prompt_version,
                            "gate": self.fitted.gate.to_dict(), "columns": self.fitted.columns,
                            "fingerprint": self._fingerprint,
                            "trees": [stable_hash(repr(m.get_params())) for m in self.fitted.models],
                            "labels": self.fitted.label_counts})

    def _features(self, pairs: Sequence[PairToJudge]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Feature rows, usable flags and evidence texts of the pairs (computed once per pair)."""
        missing = [p for p in pairs if p.pair_id not in self._cache]
        if missing:
            features, usable = self.featurize(missing)
            X = features[self.fitted.columns].to_numpy(dtype=float)
            for i, pair in enumerate(missing):
                self._cache[pair.pair_id] = (X[i], bool(usable[i]), self._describe(features.iloc[i]))
        rows = [self._cache[p.pair_id] for p in pairs]
        X = np.stack([r[0] for r in rows]) if rows else np.zeros((0, len(self.fitted.columns)))
        return X, np.array([r[1] for r in rows], dtype=bool), [r[2] for r in rows]

    def probabilities(self, pairs: Sequence[PairToJudge], path_index: int) -> list[tuple[np.ndarray | None, str]]:
        """Per pair, fold model ``path_index``'s probabilities (None: no evidence) and the evidence text."""
        X, usable, evidence = self._features(pairs)
        model = self.fitted.models[path_index % len(self.fitted.models)]
        proba = _full_proba(model, X) if len(X) else np.zeros((0, len(LABELS)))
        return [(proba[i] if usable[i] else None, evidence[i]) for i in range(len(pairs))]

    def judge(self, pairs: list[PairToJudge], path_index: int) -> list[ReasoningPath]:
        out = []
        for proba, evidence in self.probabilities(pairs, path_index):
            tag = f"[fold model {path_index % self.max_paths}]"
            if proba is None:
                out.append(ReasoningPath(None, f"{tag} no {self.name} evidence for this pair", STATUS_ABSTAIN))
                continue
            label, confidence = int(proba.argmax()), float(proba.max())
            if not self.fitted.gate.admits(label, confidence):
                threshold = self.fitted.gate.thresholds.get(label)
                why = "never reliable out of fold" if threshold is None else f"below the {threshold:.2f} it needs"
                out.append(ReasoningPath(None, f"{tag} {evidence}; label {label} at {confidence:.2f}, {why}",
                                         STATUS_ABSTAIN))
                continue
            out.append(ReasoningPath(label, f"{tag} {evidence} -> {label} (Pr {confidence:.2f})", STATUS_OK))
        return out

    def calibration(self) -> dict:
        return {"model": self.model, "features": self.fitted.columns, "labels": self.fitted.label_counts,
                **self.fitted.gate.to_dict()}

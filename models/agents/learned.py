"""Judges learnt from the seed judgments, that vote only where they were right out of fold.

A :class:`LearnedJudge` maps a pair to a row of features (its own kind of evidence: words, catalogue
knowledge, behaviour; see models/agents/features.py) and labels it with gradient-boosted trees, an
inductive bias unlike the cross-encoder's. It is fitted by cross-fitting, grouped by query:

- the seed judgments are cut into ``folds`` groups of queries; fold model i is trained on the other
  groups and predicts its own group, so every seed pair gets an out-of-fold prediction from a model
  that never saw its query;
- from those predictions, per predicted label, the lowest confidence at which the judge's votes were
  still right ``min_accuracy`` of the time on the pairs it is about to judge. Those (the mined pairs)
  are not labelled in the seed's proportions, so each seed pair is weighed by target share / seed share
  of its label, the target's label mix estimated from the judge's own probabilities on those pairs
  (EM under label shift, :func:`estimate_prior`); without target pairs, by 1 / its share (a uniform
  mix). Below that confidence, or for a label never that reliable, the judge abstains;
- a second gate, calibrated the same way for ``solo_accuracy`` (stricter), marks the votes the judge's
  record says may stand alone: such a path is ``assured``, and a pair no other judge votes is kept on it
  (level 2, ``AgreementSettings.solo_assured``). On a panel, that gate is calibrated on the seed pairs no
  other judge votes out of fold (:func:`solo_gates_where_alone`): a lone vote is cast where the others
  abstain, on pairs harder than the average one, so the average pair's record would flatter it;
- the fold models are the judge's reasoning paths (level 1): path i asks fold model i, so the
  paths disagree where the judge's own fit is uncertain, and each path's gate was calibrated on
  pairs that path never trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

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
    target_prior: tuple[float, ...] | None = None  # the label mix it was calibrated for (None: uniform)

    def admits(self, label: int, confidence: float) -> bool:
        threshold = self.thresholds.get(int(label))
        return threshold is not None and confidence >= threshold

    def to_dict(self) -> dict:
        return {"thresholds": {str(k): v for k, v in sorted(self.thresholds.items())},
                "min_accuracy": self.min_accuracy, "oof_accuracy": self.accuracy, "oof_coverage": self.coverage,
                "n": self.n, "target_prior": list(self.target_prior) if self.target_prior else None}


MIN_TARGET_PAIRS = 30  # fewer usable pairs to judge than this: their label mix is not estimated


def gate_weights(labels: np.ndarray, target_prior: np.ndarray | None = None) -> np.ndarray:
    """Per seed pair, target share / seed share of its label (``target_prior`` None: a uniform target)."""
    share = np.bincount(labels, minlength=len(LABELS)) / max(len(labels), 1)
    target = np.full(len(LABELS), 1.0) if target_prior is None else np.asarray(target_prior, dtype=float)
    ratio = np.divide(target, share, out=np.zeros(len(LABELS)), where=share > 0)
    return ratio[labels]


def estimate_prior(proba: np.ndarray, train_prior: np.ndarray, *, iterations: int = 1,
                   tol: float = 1e-6) -> np.ndarray:
    """The label mix of unlabelled pairs from a classifier's probabilities, trained under ``train_prior``:
    steps of the EM of Saerens, Latinne and Decaestecker (2002), which reweighs the posteriors by the
    estimated mix. One step (the default: the mean of the probabilities) is the robust one for trees that
    are not calibrated: on the ESCI stream's mined pairs it gave the knowledge judge 19/5/32/44% for the
    true 14/5/35/46%, where EM run to its end put 98% on the commonest label."""
    train_prior = np.asarray(train_prior, dtype=float)
    prior = train_prior.copy()
    for _ in range(iterations):
        posterior = proba * np.divide(prior, train_prior, out=np.zeros_like(prior), where=train_prior > 0)
        posterior /= np.maximum(posterior.sum(axis=1, keepdims=True), 1e-12)
        new = posterior.mean(axis=0)
        if np.abs(new - prior).max() < tol:
            return new
        prior = new
    return prior


def fit_gate(proba: np.ndarray, labels: np.ndarray, *, min_accuracy: float, min_votes: int = 10,
             target_prior: np.ndarray | None = None) -> Gate:
    """The gate from out-of-fold probabilities (rows of NaN: the judge abstained on that pair anyway),
    for pairs to judge with the label mix ``target_prior`` (None: uniform)."""
    usable = ~np.isnan(proba).any(axis=1)
    proba, labels = proba[usable], labels[usable]
    weights = gate_weights(labels, target_prior)
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
    prior = None if target_prior is None else tuple(round(float(v), 4) for v in target_prior)
    gate = Gate(thresholds, float(min_accuracy), target_prior=prior)
    votes = np.array([gate.admits(p, c) for p, c in zip(predicted, confidence)], dtype=bool)
    if not votes.any() or not weights[votes].sum() > 0:
        return Gate(thresholds, float(min_accuracy), 0.0, 0.0, int(len(labels)), prior)
    accuracy = np.average(predicted[votes] == labels[votes], weights=weights[votes])
    return Gate(thresholds, float(min_accuracy), round(float(accuracy), 4), round(float(votes.mean()), 4),
                int(len(labels)), prior)


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
    solo_gate: Gate | None = None  # the stricter gate of the votes that may stand alone (None: none may)
    oof: np.ndarray | None = None  # out-of-fold probabilities of every seed pair given (NaN: no evidence)


def fit_learned(features: pd.DataFrame, labels: Sequence[int], queries: Sequence[str], usable: np.ndarray, *,
                folds: int = 3, min_accuracy: float = 0.8, solo_accuracy: float | None = None, seed: int = 0,
                target: pd.DataFrame | None = None) -> FittedJudge:
    """Cross-fit fold models on the usable seed pairs and calibrate their gates out of fold (``solo_accuracy``
    None: no vote stands alone), for the pairs to judge ``target`` (their usable feature rows; None or too
    few: a uniform label mix)."""
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
    every = np.full((len(mask), len(LABELS)), np.nan)
    models = []
    for k in range(folds):
        train = fold != k
        model = _tree_model(seed + k).fit(X[train], y[train])
        oof[~train] = _full_proba(model, X[~train])
        models.append(model)
    prior = _target_prior(models, features.columns, y, target)
    gate = fit_gate(oof, y, min_accuracy=min_accuracy, target_prior=prior)
    solo = None if solo_accuracy is None else fit_gate(oof, y, min_accuracy=max(solo_accuracy, min_accuracy),
                                                       target_prior=prior)
    every[mask] = oof
    return FittedJudge(models, list(features.columns), gate, {int(k): int(v) for k, v in zip(*np.unique(y, return_counts=True))},
                       solo, every)


def votes_out_of_fold(fitted: FittedJudge) -> np.ndarray:
    """Per seed pair, whether the judge's gate admits its out-of-fold prediction (False: no evidence)."""
    usable = ~np.isnan(fitted.oof).any(axis=1)
    proba = np.nan_to_num(fitted.oof)
    admitted = np.array([fitted.gate.admits(int(p.argmax()), float(p.max())) for p in proba], dtype=bool)
    return usable & admitted


def solo_gates_where_alone(fitted: Mapping[str, FittedJudge], labels: Sequence[int]) -> dict[str, FittedJudge]:
    """The judges of one panel (fitted on the same seed pairs, ``labels``), each solo gate calibrated again on
    the seed pairs no other judge votes out of fold: the pairs its lone votes will be cast on."""
    votes = {name: votes_out_of_fold(judge) for name, judge in fitted.items()}
    y = np.asarray(labels, dtype=int)
    out = {}
    for name, judge in fitted.items():
        others = [v for other, v in votes.items() if other != name]
        if judge.solo_gate is None or not others:
            out[name] = judge
            continue
        alone = ~np.any(others, axis=0)
        prior = judge.gate.target_prior
        out[name] = replace(judge, solo_gate=fit_gate(judge.oof[alone], y[alone], min_accuracy=judge.solo_gate.min_accuracy,
                                                      target_prior=None if prior is None else np.array(prior)))
    return out


def _target_prior(models: list, columns, y: np.ndarray, target: pd.DataFrame | None) -> np.ndarray | None:
    """The label mix of the pairs to judge, estimated from the fold models' mean probabilities. The
    models are trained with balanced class weights: their prior is uniform over the labels they saw."""
    if target is None or len(target) < MIN_TARGET_PAIRS:
        return None
    X = target[list(columns)].to_numpy(dtype=float)
    proba = np.mean([_full_proba(m, X) for m in models], axis=0)
    seen = np.isin(LABELS, np.unique(y))
    return estimate_prior(proba, seen / seen.sum())


class LearnedJudge:
    """An embedded judge over one kind of evidence (see the module docstring).

    ``featurize(pairs) -> (features, usable)``: a feature frame (NaN where a value is missing) and a
    boolean array, False where the judge has no evidence at all and abstains without asking its models.
    ``fingerprint``: what else changes its answers (the knowledge it reads, the encoder), for the cache key.
    ``unsure``: per label, a feature column; where that feature is above 0 the judge never votes the label (the
    knowledge judge does not call a pair irrelevant on a query with a word the catalogue cannot read: the word
    may be what the document is).
    """

    backend = EMBEDDED_BACKEND

    def __init__(self, name: str, version: str, featurize: Callable[[Sequence[PairToJudge]], tuple[pd.DataFrame, np.ndarray]],
                 fitted: FittedJudge, *, fingerprint: str = "", describe: Callable[[pd.Series], str] | None = None,
                 unsure: Mapping[int, str] | None = None):
        self.name = name
        self.model = "hist-gradient-boosting"
        self.prompt_version = version
        self.featurize = featurize
        self.fitted = fitted
        self.max_paths = len(fitted.models)
        self._fingerprint = fingerprint
        self._describe = describe or (lambda row: "")
        self.unsure = {int(label): column for label, column in (unsure or {}).items() if column in fitted.columns}
        self._cache: dict[str, tuple[np.ndarray, bool, str]] = {}

    def config_key(self) -> str:
        return stable_hash({"backend": self.backend, "model": self.model, "version": self.prompt_version,
                            "gate": self.fitted.gate.to_dict(), "columns": self.fitted.columns,
                            "solo_gate": self.fitted.solo_gate.to_dict() if self.fitted.solo_gate else None,
                            "fingerprint": self._fingerprint, "unsure": sorted(self.unsure.items()),
                            "trees": [stable_hash(repr(m.get_params())) for m in self.fitted.models],
                            "labels": self.fitted.label_counts})

    def _features(self, pairs: Sequence[PairToJudge]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Feature rows, usable flags and evidence texts of the pairs (computed once per pair)."""
        missing = [p for p in pairs if p.pair_id not in self._cache]
        if missing:
            self.remember(missing, *self.featurize(missing))
        rows = [self._cache[p.pair_id] for p in pairs]
        X = np.stack([r[0] for r in rows]) if rows else np.zeros((0, len(self.fitted.columns)))
        return X, np.array([r[1] for r in rows], dtype=bool), [r[2] for r in rows]

    def remember(self, pairs: Sequence[PairToJudge], features: pd.DataFrame, usable: np.ndarray) -> None:
        """Keep ``featurize(pairs)``'s rows, so judging those pairs does not compute them again."""
        X = features[self.fitted.columns].to_numpy(dtype=float)
        for i, pair in enumerate(pairs):
            self._cache[pair.pair_id] = (X[i], bool(usable[i]), self._describe(features.iloc[i]))

    def probabilities(self, pairs: Sequence[PairToJudge], path_index: int) -> list[tuple[np.ndarray | None, str]]:
        """Per pair, fold model ``path_index``'s probabilities (None: no evidence) and the evidence text."""
        X, usable, evidence = self._features(pairs)
        model = self.fitted.models[path_index % len(self.fitted.models)]
        proba = _full_proba(model, X) if len(X) else np.zeros((0, len(LABELS)))
        return [(proba[i] if usable[i] else None, evidence[i]) for i in range(len(pairs))]

    def unsure_of(self, pairs: Sequence[PairToJudge]) -> list[set[int]]:
        """Per pair, the labels ``unsure`` keeps the judge from voting."""
        X, _, _ = self._features(pairs)
        columns = {label: self.fitted.columns.index(column) for label, column in self.unsure.items()}
        return [{label for label, j in columns.items() if X[i, j] > 0} for i in range(len(pairs))]

    def judge(self, pairs: list[PairToJudge], path_index: int) -> list[ReasoningPath]:
        out = []
        for (proba, evidence), unsure in zip(self.probabilities(pairs, path_index), self.unsure_of(pairs)):
            tag = f"[fold model {path_index % self.max_paths}]"
            if proba is None:
                out.append(ReasoningPath(None, f"{tag} no {self.name} evidence for this pair", STATUS_ABSTAIN))
                continue
            label, confidence = int(proba.argmax()), float(proba.max())
            if label in unsure:
                out.append(ReasoningPath(None, f"{tag} {evidence}; label {label} at {confidence:.2f}, but "
                                         f"{self.unsure[label]} says it cannot tell", STATUS_ABSTAIN))
                continue
            if not self.fitted.gate.admits(label, confidence):
                threshold = self.fitted.gate.thresholds.get(label)
                why = "never reliable out of fold" if threshold is None else f"below the {threshold:.2f} it needs"
                out.append(ReasoningPath(None, f"{tag} {evidence}; label {label} at {confidence:.2f}, {why}",
                                         STATUS_ABSTAIN))
                continue
            solo = self.fitted.solo_gate
            assured = solo is not None and solo.admits(label, confidence)
            alone = f", may stand alone (>= {solo.thresholds[label]:.2f})" if assured else ""
            out.append(ReasoningPath(label, f"{tag} {evidence} -> {label} (Pr {confidence:.2f}{alone})", STATUS_OK,
                                     assured=assured))
        return out

    def calibration(self) -> dict:
        solo = self.fitted.solo_gate
        return {"model": self.model, "features": self.fitted.columns, "labels": self.fitted.label_counts,
                **self.fitted.gate.to_dict(), "solo": solo.to_dict() if solo else None}

"""The paper's training mix: this iteration's labels + all earlier iterations' labels + the seed (SFT) set.

Training on all of it (not on the newest labels alone) is what keeps the model from forgetting the
distribution it was first trained on while it follows the drifting stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

COLUMNS = ["query", "doc_id", "language", "doc_text", "label", "source", "iteration", "weight"]
INPUT_COLUMNS = ["query", "doc_id", "language", "doc_text", "label"]
PAIR_KEY = ["query", "language", "doc_id"]


@dataclass(frozen=True)
class MixWeights:
    """Training weight of each source's pairs (see ``models.training.train`` for how weights act)."""

    seed: float = 1.0
    earlier: float = 1.0
    current: float = 1.0


def mix_training_set(seed: pd.DataFrame, iterations: dict[int, pd.DataFrame], current_iteration: int | None = None,
                     weights: MixWeights = MixWeights()) -> pd.DataFrame:
    """The training set for ``current_iteration`` (default: the newest in ``iterations``).

    Sources: the seed set (``source="seed"``, iteration 0, weight ``weights.seed``), iterations before
    the current one (weight ``weights.earlier``) and the current one (weight ``weights.current``);
    iterations after the current one are left out, so an older iteration's set can be rebuilt.

    One row per (query, language, doc_id): the newest label wins. A pair labelled again later was
    re-mined because the model or the stream moved, and its newer label reflects what the query means
    now (new products, new slang); keeping both would train the model on two answers to one question.
    Within one source, the last row in input order wins.
    """
    current = current_iteration if current_iteration is not None else max(iterations, default=0)
    parts = [_tagged(seed, "seed", 0, weights.seed)]
    for number, frame in sorted(iterations.items()):
        if number < 1:
            raise ValueError(f"iteration numbers start at 1 (0 is the seed set); got {number}")
        if number <= current:
            weight = weights.current if number == current else weights.earlier
            parts.append(_tagged(frame, "iteration", number, weight))
    parts = [part for part in parts if len(part)]
    if not parts:
        return _typed(pd.DataFrame(columns=COLUMNS))
    mixed = pd.concat(parts, ignore_index=True)
    # stable sort by iteration, then keep the last row per pair: the newest source's label
    mixed = mixed.sort_values("iteration", kind="stable").drop_duplicates(PAIR_KEY, keep="last")
    mixed = mixed.sort_values(["iteration", "query", "language", "doc_id"], kind="stable").reset_index(drop=True)
    return _typed(mixed)


def _tagged(frame: pd.DataFrame, source: str, iteration: int, weight: float) -> pd.DataFrame:
    missing = set(INPUT_COLUMNS) - set(frame.columns)
    if len(frame) and missing:
        raise ValueError(f"{source} {iteration or ''} lacks columns {sorted(missing)}".replace("  ", " "))
    if len(frame) == 0:
        return pd.DataFrame(columns=COLUMNS)
    return frame[INPUT_COLUMNS].assign(source=source, iteration=iteration, weight=float(weight))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[COLUMNS].astype({"label": "int64", "iteration": "int64", "weight": "float64"})

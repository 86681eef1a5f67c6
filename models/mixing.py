"""The paper's training mix: this iteration's labels + all earlier iterations' labels + the seed set."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

COLUMNS = ["query", "doc_id", "language", "doc_text", "label", "source", "iteration", "weight"]


@dataclass(frozen=True)
class MixWeights:
    seed: float = 1.0
    earlier: float = 1.0
    current: float = 1.0


def mix_training_set(seed: pd.DataFrame, iterations: dict[int, pd.DataFrame], current_iteration: int | None = None,
                     weights: MixWeights = MixWeights()) -> pd.DataFrame:
    """One row per (query, language, doc_id): the newest label wins.

    A pair labelled again later was re-mined because the stream moved; its newer label reflects
    the current meaning of the query (new slang, new products), so it replaces the older one.
    """
    current = current_iteration if current_iteration is not None else max(iterations, default=0)
    parts = [seed.assign(source="seed", iteration=0, weight=weights.seed)]
    for number, frame in sorted(iterations.items()):
        if number > current:
            continue
        weight = weights.current if number == current else weights.earlier
        parts.append(frame.assign(source="iteration", iteration=number, weight=weight))
    mixed = pd.concat([p[COLUMNS] for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) \
        else pd.DataFrame(columns=COLUMNS)
    mixed = mixed.sort_values("iteration", kind="stable")
    mixed = mixed.drop_duplicates(["query", "language", "doc_id"], keep="last")
    return mixed.sort_values(["iteration", "query", "language", "doc_id"], kind="stable").reset_index(drop=True)

"""Batched scoring, fast on a CPU and on the GPU when there is one; the miner's model signals."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from models.relevance import RelevanceModel, expected_score


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def set_cpu_threads(threads: int | None = None) -> None:
    """Intra-op threads = the cores we may use (torch's default can oversubscribe small machines)."""
    threads = threads or int(os.environ.get("SERM_TORCH_THREADS", 0)) or len(os.sched_getaffinity(0))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class Scorer:
    """Scores (query, document text) pairs with a RelevanceModel.

    Pairs are sorted by length and batched with dynamic padding (a batch is only as long as its
    longest pair), then results are put back in input order.
    """

    def __init__(self, model: RelevanceModel, tokenizer, device: str = "auto", batch_size: int = 64,
                 max_length: int | None = None):
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length or model.max_length
        if self.device.type == "cpu":
            set_cpu_threads()

    @classmethod
    def from_folder(cls, folder: str | Path, **kwargs) -> "Scorer":
        model, tokenizer = RelevanceModel.load(folder)
        return cls(model, tokenizer, **kwargs)

    def _batches(self, queries: Sequence[str], docs: Sequence[str]):
        lengths = [len(q) + len(d) for q, d in zip(queries, docs)]  # characters: a cheap proxy for tokens
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            encoded = self.tokenizer([queries[i] for i in index], [docs[i] for i in index], padding=True,
                                     truncation=True, max_length=self.max_length, return_tensors="pt")
            yield index, {k: v.to(self.device) for k, v in encoded.items()}

    def _forward(self, batch) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            return self.model(**batch).float()

    def predict_proba(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        """Pr(y | q, d) for each pair: an array [N, 4] (eval mode: deterministic)."""
        self.model.eval()
        out = np.zeros((len(queries), 4), dtype=np.float64)
        with torch.inference_mode():
            for index, batch in self._batches(queries, docs):
                out[index] = torch.softmax(self._forward(batch), dim=-1).cpu().numpy()
        return out

    def score(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        return expected_score(self.predict_proba(queries, docs))

    def mc_dropout(self, queries: Sequence[str], docs: Sequence[str], k: int = 8, seed: int = 0) -> np.ndarray:
        """Expected scores from ``k`` stochastic passes with dropout active: an array [N, k]."""
        out = np.zeros((len(queries), k), dtype=np.float64)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            with dropout_active(self.model), torch.inference_mode():
                for index, batch in self._batches(queries, docs):
                    for sample in range(k):
                        probs = torch.softmax(self._forward(batch), dim=-1)
                        out[index, sample] = expected_score(probs).cpu().numpy()
        finally:
            torch.random.set_rng_state(generator_state)
        return out


@contextmanager
def dropout_active(model: nn.Module):
    """Only the dropout layers in train mode (MC dropout); everything else stays in eval mode."""
    model.eval()
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    for module in dropouts:
        module.train()
    try:
        yield model
    finally:
        model.eval()


def disagreement(samples: np.ndarray) -> np.ndarray:
    """MD(q, d) = max_{i,j} |f_i - f_j| over the stochastic judgments (= max - min per row)."""
    samples = np.asarray(samples, dtype=np.float64)
    return samples.max(axis=1) - samples.min(axis=1)


def entropy(probs: np.ndarray) -> np.ndarray:
    """MU(q, d) = -sum_y Pr(y) log Pr(y) (natural log; 0 log 0 = 0)."""
    probs = np.asarray(probs, dtype=np.float64)
    logs = np.log(np.where(probs > 0, probs, 1.0))
    return -(probs * logs).sum(axis=-1)

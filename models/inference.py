"""Batched scoring, fast on a CPU and on the GPU when there is one; the miner's model signals.

The disagreement and uncertainty agents call ``Scorer.judge`` (label distribution and MC-dropout
samples in one pass) with ``disagreement`` and ``entropy``.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from models.progress import Progress
from models.relevance import LABELS, RelevanceModel, encoder_layers, expected_score

_LENGTH_CHUNK = 8192  # pairs tokenized at a time to measure lengths: bounded memory on big inputs


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"``: the GPU when there is one, else the CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup (container) CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def set_cpu_threads(threads: int | None = None) -> int:
    """Set torch's intra-op CPU threads; returns the count in use.

    ``threads`` given: exactly that. Otherwise ``SERM_TORCH_THREADS`` if set, else torch's current count
    capped at the cores we may use: torch counts the host's cores, and more threads than cores makes
    every operator wait for descheduled threads (on a shared 2-core machine that is 1000x slower for
    small operators). A lower count the caller chose (e.g. 1 in tests) is left alone.
    """
    if threads is None and os.environ.get("SERM_TORCH_THREADS"):
        threads = int(os.environ["SERM_TORCH_THREADS"])
    if threads is None:
        threads = min(torch.get_num_threads(), available_cores())
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX512-BF16): there bf16 autocast runs a BERT's
    matmuls about 3x faster than fp32; elsewhere it would be emulated, and slower."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``device``, or None for plain fp32: on a GPU bf16 where it has it (fp32's range:
    no overflow, no loss scaling needed), else fp16; on a CPU bf16 where it is native."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and native_cpu_bf16():
        return torch.bfloat16
    return None


class Scorer:
    """Scores (query, document text) pairs with a RelevanceModel.

    Pairs are sorted by token length and cut into batches with dynamic padding (a batch is only as
    long as its longest pair, so short pairs do not pay for long ones); results come back in input
    order. Eval mode and ``torch.inference_mode`` for scoring; with ``mixed_precision`` (the default) autocast
    where the hardware has a fast half type (``autocast_dtype``). ``progress``: each call shows its pairs scored
    (``models.progress``), named by its ``step``.
    """

    def __init__(self, model: RelevanceModel, tokenizer=None, device: str = "auto", batch_size: int = 64,
                 max_length: int | None = None, num_threads: int | None = None, mixed_precision: bool = True,
                 progress: bool = True):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        if self.tokenizer is None:
            raise ValueError("no tokenizer: pass one, or build the model with from_backbone/load")
        self.batch_size = batch_size
        self.progress = progress
        self.amp_dtype = autocast_dtype(self.device) if mixed_precision else None
        self.max_length = max_length or model.max_length
        if self.device.type == "cpu":
            set_cpu_threads(num_threads)
        self._reruns_top_layers: bool | None = None  # whether judge() may re-run only the top layers

    @classmethod
    def from_folder(cls, folder: str | Path, **kwargs) -> "Scorer":
        """A scorer for a model saved with ``RelevanceModel.save``."""
        model, tokenizer = RelevanceModel.load(folder)
        return cls(model, tokenizer, **kwargs)

    # -- batching -------------------------------------------------------------------------------

    def _token_lengths(self, queries: list[str], docs: list[str]) -> np.ndarray:
        lengths = []
        for start in range(0, len(queries), _LENGTH_CHUNK):
            encoded = self.tokenizer(queries[start:start + _LENGTH_CHUNK], docs[start:start + _LENGTH_CHUNK],
                                     truncation=True, max_length=self.max_length)
            lengths.extend(len(ids) for ids in encoded["input_ids"])
        return np.asarray(lengths, dtype=np.int64)

    def _batches(self, queries: Sequence[str], docs: Sequence[str]) -> Iterator[tuple[np.ndarray, dict]]:
        """``(input positions, tensors)`` per batch, the batches formed from length-sorted pairs."""
        order = np.argsort(self._token_lengths(queries, docs), kind="stable")
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            encoded = self.tokenizer([queries[i] for i in index], [docs[i] for i in index], padding=True,
                                     truncation=True, max_length=self.max_length, return_tensors="pt")
            yield index, {k: v.to(self.device) for k, v in encoded.items()}

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def _forward(self, batch: dict) -> torch.Tensor:
        with self._autocast():
            return self.model(**batch).float()

    @staticmethod
    def _as_lists(queries: Sequence[str], docs: Sequence[str]) -> tuple[list[str], list[str]]:
        # lists of str: pandas Series would index by label, and tokenizers reject non-strings
        queries, docs = [_text(q) for q in queries], [_text(d) for d in docs]
        if len(queries) != len(docs):
            raise ValueError(f"{len(queries)} queries but {len(docs)} documents")
        return queries, docs

    # -- the model's outputs --------------------------------------------------------------------

    def predict_proba(self, queries: Sequence[str], docs: Sequence[str], step: str = "scoring") -> np.ndarray:
        """Pr(y | q, d) for each pair: ``[N, 4]``, rows summing to 1 (eval mode: deterministic)."""
        queries, docs = self._as_lists(queries, docs)
        out = np.zeros((len(queries), len(LABELS)), dtype=np.float64)
        self.model.eval()
        with torch.inference_mode(), Progress(len(queries), step, "pair", self.progress) as progress:
            for index, batch in self._batches(queries, docs):
                out[index] = torch.softmax(self._forward(batch), dim=-1).cpu().numpy()
                progress.advance(len(index))
        return out

    def score(self, queries: Sequence[str], docs: Sequence[str], step: str = "scoring") -> np.ndarray:
        """f(q, d) = sum_y y * Pr(y | q, d) for each pair: ``[N]`` in [0, 3]."""
        return expected_score(self.predict_proba(queries, docs, step))

    def mc_dropout(self, queries: Sequence[str], docs: Sequence[str], k: int = 8, seed: int = 0) -> np.ndarray:
        """Expected scores from ``k`` stochastic passes with dropout active: ``[N, k]``.

        Only the dropout modules are in train mode (MC dropout); no gradients. Dropout draws from
        torch's global generator (``nn.Dropout`` takes no generator), so it is forked and seeded here:
        the same seed, batch size and inputs give the same samples, and the caller's random state is
        untouched.
        """
        return self.judge(queries, docs, k, seed, top_layers=None)[1]

    def judge(self, queries: Sequence[str], docs: Sequence[str], k: int = 8, seed: int = 0,
              top_layers: int | None = 1, step: str = "scoring with MC dropout") -> tuple[np.ndarray, np.ndarray]:
        """``(Pr(y|q,d) [N, 4], MC-dropout expected scores [N, k])`` in one go: what the model agents need.

        ``top_layers=n`` resamples dropout only in the encoder's top ``n`` layers and the head: the layers
        below run once per batch in eval mode (their output is the same for every pass), so ``k`` passes
        cost about ``1 + k * n / depth`` forward passes instead of ``1 + k``. ``None`` resamples every
        layer (full MC dropout). Encoders whose layers cannot be re-run on their own (a final norm after
        the last layer, an unknown layout) fall back to full passes; a check on the first batch decides.
        """
        if k < 1:
            raise ValueError("k must be >= 1")
        queries, docs = self._as_lists(queries, docs)
        probs = np.zeros((len(queries), len(LABELS)), dtype=np.float64)
        out = np.zeros((len(queries), k), dtype=np.float64)
        top = encoder_layers(self.model.encoder)[-top_layers:] if top_layers else []
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode(), \
                Progress(len(queries), step, "pair", self.progress) as progress:
            torch.manual_seed(seed)
            for index, batch in self._batches(queries, docs):
                self.model.eval()
                with capture_inputs(top[0]) if top else nullcontext() as captured, self._autocast():
                    hidden = self.model.encoder(**batch).last_hidden_state
                    logits = self.model.logits_from_hidden(hidden, batch["attention_mask"])
                    probs[index] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
                    if top and self._reruns_top_layers is None:
                        rerun = _run_layers(top, captured)
                        self._reruns_top_layers = torch.allclose(rerun.float(), hidden.float(), atol=1e-3)
                with dropout_active(self.model), self._autocast():
                    for sample in range(k):
                        if top and self._reruns_top_layers:
                            logits = self.model.logits_from_hidden(_run_layers(top, captured), batch["attention_mask"])
                        else:
                            logits = self._forward(batch)
                        # .float() last: under autocast the expectation's matmul comes back in bf16
                        out[index, sample] = expected_score(torch.softmax(logits.float(), dim=-1)).float().cpu().numpy()
                progress.advance(len(index))
        return probs, out


@contextmanager
def capture_inputs(layer: nn.Module):
    """Record the arguments the model calls ``layer`` with (its hidden states, masks, position data)."""
    captured: dict = {}

    def hook(_module, args, kwargs):
        captured["args"], captured["kwargs"] = args, dict(kwargs)

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


def _run_layers(layers: list[nn.Module], captured: dict) -> torch.Tensor:
    """Re-run ``layers`` from the captured input of the first, passing the others the same masks."""
    args, kwargs = captured["args"], dict(captured["kwargs"])
    hidden = args[0] if args else kwargs.pop("hidden_states")
    rest = args[1:]
    for layer in layers:
        output = layer(hidden, *rest, **kwargs)
        hidden = output[0] if isinstance(output, (tuple, list)) else output
    return hidden


def _text(value) -> str:
    """A missing text (None, NaN) is an empty one, not the word "nan"."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


@contextmanager
def dropout_active(model: nn.Module):
    """Only the dropout layers in train mode (MC dropout); everything else stays in eval mode."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train()
    try:
        yield model
    finally:
        model.eval()


def disagreement(samples: np.ndarray) -> np.ndarray:
    """MD(q, d) = max_{i,j} |f_i - f_j| over the k stochastic judgments of each row (= max - min)."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[1] == 0:
        raise ValueError(f"expected samples of shape [N, k] with k >= 1, got {samples.shape}")
    return samples.max(axis=1) - samples.min(axis=1)


def entropy(probs: np.ndarray) -> np.ndarray:
    """MU(q, d) = -sum_y Pr(y) log Pr(y) over the last axis (natural log; 0 log 0 = 0)."""
    probs = np.asarray(probs, dtype=np.float64)
    logs = np.log(np.where(probs > 0, probs, 1.0))  # log 1 = 0 where p = 0: no -inf, no warning
    return -(probs * logs).sum(axis=-1)

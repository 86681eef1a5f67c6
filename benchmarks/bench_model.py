"""Scoring and training throughput of the relevance model on this machine (a benchmark, not a test).

    .venv/bin/python benchmarks/bench_model.py [--backbone all-MiniLM-L6-v2] [--threads N] [--no-onnx]

Prints scored pairs per second at batch sizes 1, 32 and 256 for sequence lengths 64 and 128 with torch in
fp32, with torch under autocast where the hardware has a fast half type (bf16 on AMX/AVX512-BF16 CPUs, see
``models.inference.autocast_dtype``) and, when ``onnxruntime`` is importable, with the same cross-encoder
exported to ONNX; then training pairs per second per epoch on a few hundred synthetic pairs, in both
precisions. First it measures this CPU's roof: torch matmul GFLOP/s (2048 x 2048, fp32 and bf16, same threads),
and each torch rate is also given as the encoder's GFLOP/s (its matmul FLOPs per pair, from the model's config,
times pairs/s) and as a share of the roof of its precision. Rates are end to end (tokenization included). Every pair is exactly ``seq len`` tokens long
(documents are cut by truncation), so the numbers do not depend on padding. On a shared machine they move
with its load: the load is printed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.inference import Scorer, autocast_dtype, set_cpu_threads
from models.relevance import RelevanceModel
from models.training import TrainingConfig, train

WORDS = ("red blue green black white running shoes sneakers leather cotton wool jacket lamp desk chair phone case "
         "charger cable kids women men size small large waterproof wireless kitchen knife pan steel glass").split()
BATCH_SIZES = (1, 32, 256)
SEQUENCE_LENGTHS = (64, 128)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def synthetic_pairs(n: int, doc_words: int = 160, seed: int = 0) -> tuple[list[str], list[str]]:
    """Six-word queries and documents long enough to fill any ``max_length`` up to 128 tokens."""
    rng = np.random.default_rng(seed)
    return ([" ".join(rng.choice(WORDS, 6)) for _ in range(n)],
            [" ".join(rng.choice(WORDS, doc_words)) for _ in range(n)])


def matmul_roof(dtype: torch.dtype, size: int = 2048, min_seconds: float = 2.0) -> float:
    """GFLOP/s of a square matmul in ``dtype`` on the CPU with torch's current threads: the roof scoring can reach."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b  # warm-up
    rounds, started = 0, time.perf_counter()
    while rounds == 0 or time.perf_counter() - started < min_seconds:
        a @ b
        rounds += 1
    return 2 * size ** 3 * rounds / (time.perf_counter() - started) / 1e9


def gflop_per_pair(config, length: int) -> float:
    """The encoder's matmul FLOPs for one pair of ``length`` tokens: per layer the Q, K, V and output projections,
    the two feed-forward matrices and the attention's two L x L products (2 FLOPs a multiply-add)."""
    hidden, inner = config.hidden_size, config.intermediate_size
    per_layer = 2 * length * (4 * hidden * hidden + 2 * hidden * inner) + 2 * 2 * length * length * hidden
    return config.num_hidden_layers * per_layer / 1e9


def pairs_per_second(score, queries: list[str], docs: list[str], min_seconds: float, max_rounds: int) -> float:
    """Score the pairs in rounds until ``min_seconds`` have passed (at least one round, at most ``max_rounds``)."""
    score(queries[:4], docs[:4])  # warm-up: first-call allocations and lazy initialisation
    rounds, started = 0, time.perf_counter()
    while rounds < max_rounds and (rounds == 0 or time.perf_counter() - started < min_seconds):
        score(queries, docs)
        rounds += 1
    return rounds * len(queries) / (time.perf_counter() - started)


class OnnxScorer:
    """The cross-encoder exported to ONNX (dynamic batch and length) and run with onnxruntime on the CPU."""

    def __init__(self, model: RelevanceModel, tokenizer, path: Path, threads: int):
        import onnxruntime as ort

        self.tokenizer = tokenizer
        # two pairs of different lengths: the trace then sees padding, and batch and length stay dynamic
        sample = tokenizer(["red shoes", "a lamp"], ["red running shoes for women, leather", "desk"],
                           padding=True, return_tensors="pt")
        with torch.inference_mode():
            torch.onnx.export(model.eval(), tuple(sample[name] for name in INPUT_NAMES), str(path),
                              input_names=list(INPUT_NAMES), output_names=["logits"], dynamo=False,
                              opset_version=17,
                              dynamic_axes={**{name: {0: "batch", 1: "length"} for name in INPUT_NAMES},
                                            "logits": {0: "batch"}})
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def predict_proba(self, queries, docs, batch_size: int, max_length: int) -> np.ndarray:
        out = []
        for start in range(0, len(queries), batch_size):
            encoded = self.tokenizer(queries[start:start + batch_size], docs[start:start + batch_size],
                                     padding=True, truncation=True, max_length=max_length, return_tensors="np")
            logits = self.session.run(None, {name: encoded[name].astype(np.int64) for name in INPUT_NAMES})[0]
            exp = np.exp(logits - logits.max(1, keepdims=True))
            out.append(exp / exp.sum(1, keepdims=True))
        return np.concatenate(out)


def onnx_scorer_or_reason(model, tokenizer, folder: Path, threads: int, enabled: bool):
    """``(OnnxScorer, None)``, or ``(None, why not)`` when onnxruntime or the export is unavailable."""
    if not enabled:
        return None, "disabled with --no-onnx"
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return None, f"onnxruntime is not importable ({exc}); `pip install onnxruntime onnx` to compare"
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings about Python-level constants
            return OnnxScorer(model, tokenizer, folder / "relevance.onnx", threads), None
    except Exception as exc:  # e.g. no `onnx` package, or an operator the exporter does not know
        return None, f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="all-MiniLM-L6-v2", help="packaged default, a folder or a cached id")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: the cores we may use)")
    parser.add_argument("--pairs", type=int, default=256, help="pairs per timing round (batch size 1: an eighth)")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="time each setting at least this long")
    parser.add_argument("--train-pairs", type=int, default=256)
    parser.add_argument("--no-onnx", action="store_true")
    args = parser.parse_args()

    threads = set_cpu_threads(args.threads)
    model, tokenizer = RelevanceModel.from_backbone(args.backbone)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"backbone {args.backbone} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters), "
          f"torch {torch.__version__}, device {device}, {threads} CPU threads, "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    queries, docs = synthetic_pairs(args.pairs)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        onnx, why_not = onnx_scorer_or_reason(model, tokenizer, Path(tmp), threads, not args.no_onnx)
        if onnx is not None:
            check_q, check_d = queries[:6], [d[: 20 + 60 * i] for i, d in enumerate(docs[:6])]  # mixed lengths
            gap = np.abs(onnx.predict_proba(check_q, check_d, 4, 128) -
                         Scorer(model, tokenizer, batch_size=4, max_length=128, mixed_precision=False)
                         .predict_proba(check_q, check_d)).max()
            print(f"onnxruntime: exported in {time.perf_counter() - started:.1f} s; max |p_onnx - p_torch| = {gap:.1e}")
        else:
            print(f"onnxruntime: skipped: {why_not}")

        amp = autocast_dtype(torch.device(device))
        amp_name = str(amp).removeprefix("torch.") if amp else "autocast"
        if amp is not None:
            def probabilities(mixed: bool) -> np.ndarray:
                return Scorer(model, tokenizer, device=device, batch_size=32, max_length=128,
                              mixed_precision=mixed).predict_proba(queries[:64], docs[:64])

            gap = np.abs(probabilities(True) - probabilities(False)).max()
            print(f"{amp_name} autocast: max |p_{amp_name} - p_fp32| = {gap:.1e}")
        roofs = {False: matmul_roof(torch.float32), True: matmul_roof(torch.bfloat16)}
        print(f"roof (torch matmul 2048 x 2048, {threads} threads): fp32 {roofs[False]:.0f} GFLOP/s, "
              f"bf16 {roofs[True]:.0f} GFLOP/s{'' if amp == torch.bfloat16 else ' (bf16 is not autocast here)'}")
        print(f"\n{'seq len':>7} {'batch':>6} {'torch fp32 pairs/s':>19} {'torch ' + amp_name + ' pairs/s':>20} "
              f"{'onnxruntime pairs/s':>20}   torch GFLOP/s (share of its roof)")
        for length in SEQUENCE_LENGTHS:
            for batch in BATCH_SIZES:
                n = max(batch, args.pairs // 8) if batch == 1 else max(batch, args.pairs)  # batch 1 is slow
                max_rounds = 2 if batch >= 256 else 1000  # a round of batch 256 takes seconds already
                rates, shares = {}, []
                for mixed in (False, True):
                    scorer = Scorer(model, tokenizer, device=device, batch_size=batch, max_length=length,
                                    mixed_precision=mixed)
                    rate = None if mixed and amp is None else \
                        pairs_per_second(scorer.score, queries[:n], docs[:n], args.min_seconds, max_rounds)
                    rates[mixed] = "n/a" if rate is None else f"{rate:.1f}"
                    if rate is not None:
                        flops = rate * gflop_per_pair(model.encoder.config, length)
                        roof = roofs[mixed and amp == torch.bfloat16]
                        shares.append(f"{'fp32' if not mixed else amp_name} {flops:.0f} ({flops / roof:.0%})")
                onnx_rate = "n/a"
                if onnx is not None:
                    rate = pairs_per_second(lambda q, d: onnx.predict_proba(q, d, batch, length), queries[:n],
                                            docs[:n], args.min_seconds, max_rounds)
                    onnx_rate = f"{rate:.1f}"
                print(f"{length:>7} {batch:>6} {rates[False]:>19} {rates[True]:>20} {onnx_rate:>20}   "
                      + ", ".join(shares), flush=True)

    train_queries, train_docs = synthetic_pairs(args.train_pairs, doc_words=40, seed=1)
    examples = pd.DataFrame({"query": train_queries, "doc_text": train_docs,
                             "label": np.arange(args.train_pairs) % 4})
    print()
    for mixed in (False, True):
        config = TrainingConfig(epochs=2, batch_size=32, max_length=64, mixed_precision=mixed, progress=False)
        report = train(model, tokenizer, examples, config, device=device)
        print(f"training {args.train_pairs} pairs, batch {config.batch_size}, seq len {config.max_length} "
              f"(forward + backward + AdamW), device {report.device}, {report.precision}: " +
              ", ".join(f"epoch {i + 1} {rate:.1f} pairs/s" for i, rate in enumerate(report.epoch_pairs_per_second)))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

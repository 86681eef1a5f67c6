"""Scoring and training throughput of the relevance model on this machine (a benchmark, not a test).

    .venv/bin/python benchmarks/bench_model.py [--backbone all-MiniLM-L6-v2] [--pairs 512]

Prints scored pairs per second at batch sizes 1, 32 and 256 for sequence lengths 64 and 128, with
torch and (if installed: `pip install onnxruntime onnx`) onnxruntime, then training pairs per second.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.inference import Scorer, set_cpu_threads
from models.relevance import RelevanceModel
from models.training import TrainingConfig, train

WORDS = ("red blue green black white running shoes sneakers leather cotton wool jacket lamp desk chair phone case "
         "charger cable kids women men size small large waterproof wireless kitchen knife pan steel glass").split()


def synthetic_pairs(n: int, tokens: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Pairs that fill ``tokens`` wordpieces (query ~6 words, the document the rest)."""
    rng = np.random.default_rng(seed)
    queries = [" ".join(rng.choice(WORDS, 6)) for _ in range(n)]
    docs = [" ".join(rng.choice(WORDS, tokens)) for _ in range(n)]
    return queries, docs


def time_scoring(score, queries, docs, min_seconds: float = 3.0) -> float:
    score(queries[:8], docs[:8])  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        score(queries, docs)
        done += len(queries)
    return done / (time.perf_counter() - started)


class OnnxScorer:
    """The same cross-encoder exported to ONNX and run with onnxruntime (dynamic batch and length)."""

    def __init__(self, model: RelevanceModel, tokenizer, folder: Path, max_length: int, batch_size: int):
        import onnxruntime as ort

        self.tokenizer, self.max_length, self.batch_size = tokenizer, max_length, batch_size
        sample = tokenizer(["a"], ["b"], return_tensors="pt")
        path = folder / "relevance.onnx"
        names = ["input_ids", "attention_mask", "token_type_ids"]
        torch.onnx.export(model.eval(), tuple(sample[n] for n in names), str(path), input_names=names,
                          output_names=["logits"], dynamo=False, opset_version=17,
                          dynamic_axes={n: {0: "batch", 1: "length"} for n in names} | {"logits": {0: "batch"}})
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def score(self, queries, docs):
        out = []
        for start in range(0, len(queries), self.batch_size):
            enc = self.tokenizer(queries[start:start + self.batch_size], docs[start:start + self.batch_size],
                                 padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
            logits = self.session.run(None, {k: enc[k].astype(np.int64) for k in
                                             ("input_ids", "attention_mask", "token_type_ids")})[0]
            probs = np.exp(logits - logits.max(1, keepdims=True))
            out.append((probs / probs.sum(1, keepdims=True)) @ np.arange(4))
        return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="all-MiniLM-L6-v2")
    parser.add_argument("--pairs", type=int, default=512, help="pairs per timing round")
    parser.add_argument("--train-pairs", type=int, default=256)
    args = parser.parse_args()
    set_cpu_threads()
    model, tokenizer = RelevanceModel.from_backbone(args.backbone)
    print(f"backbone {args.backbone}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"{'seq len':>7} {'batch':>6} {'torch pairs/s':>14} {'onnxruntime pairs/s':>20}")
    with tempfile.TemporaryDirectory() as tmp:
        for length in (64, 128):
            queries, docs = synthetic_pairs(args.pairs, length)
            for batch in (1, 32, 256):
                n = min(len(queries), 64 if batch == 1 else len(queries))  # batch 1 is slow: fewer pairs
                torch_rate = time_scoring(Scorer(model, tokenizer, batch_size=batch, max_length=length).score,
                                          queries[:n], docs[:n])
                try:
                    onnx = OnnxScorer(model, tokenizer, Path(tmp), length, batch)
                    onnx_rate = f"{time_scoring(onnx.score, queries[:n], docs[:n]):20.1f}"
                except Exception as exc:  # onnxruntime not installed, or export unsupported
                    onnx_rate = f"{'n/a: ' + type(exc).__name__:>20}"
                print(f"{length:>7} {batch:>6} {torch_rate:14.1f} {onnx_rate}")
    queries, docs = synthetic_pairs(args.train_pairs, 48, seed=1)
    examples = pd.DataFrame({"query": queries, "doc_text": docs, "label": np.arange(len(queries)) % 4})
    report = train(model, tokenizer, examples, TrainingConfig(epochs=2, batch_size=32, max_length=64, progress=False))
    print("training (batch 32, seq len <= 64): " +
          ", ".join(f"epoch {i + 1}: {rate:.1f} pairs/s" for i, rate in enumerate(report.epoch_pairs_per_second)))


if __name__ == "__main__":
    main()

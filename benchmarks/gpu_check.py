"""The GPU path of models/ on a machine with CUDA (a check with figures, not a test: CI has no GPU).

    .venv/bin/python benchmarks/gpu_check.py [--backbone all-MiniLM-L6-v2]

Prints the largest gap between CPU and GPU (bf16 autocast) probabilities, the miner's ``Scorer.judge``
rate with top-layer and full MC dropout, and AMP training on a learnable synthetic task: its epoch
losses, pairs per second and the accuracy it reaches, then a warm retrain with 3 frozen layers.
"""
import argparse
import time

import numpy as np
import pandas as pd
import torch
from models.relevance import RelevanceModel
from models.inference import Scorer, autocast_dtype, disagreement
from models.training import TrainingConfig, train

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--backbone", default="all-MiniLM-L6-v2", help="packaged default, a folder or a cached id")
backbone = parser.parse_args().backbone
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device: this check is for a machine with a GPU")
print("device", torch.cuda.get_device_name(), "autocast dtype", autocast_dtype(torch.device("cuda")), "torch", torch.__version__)
rng = np.random.default_rng(0)
words = "red blue green black running shoes sneakers leather jacket lamp desk chair phone case charger cable kids women".split()
q = [" ".join(rng.choice(words, 3)) for _ in range(2000)]
d = [" ".join(rng.choice(words, 30)) for _ in range(2000)]
model, tok = RelevanceModel.from_backbone(backbone, max_length=64)
cpu = Scorer(model, tok, device="cpu", batch_size=64, mixed_precision=False).predict_proba(q[:256], d[:256])
gpu_scorer = Scorer(model, tok, device="cuda", batch_size=256)
gpu = gpu_scorer.predict_proba(q[:256], d[:256])
print("max |p_cpu (fp32) - p_gpu (autocast)|:", float(np.abs(cpu - gpu).max()))
for top in (1, None):
    torch.cuda.synchronize()
    t = time.perf_counter()
    probs, samples = gpu_scorer.judge(q, d, k=4, seed=1, top_layers=top)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    print(f"judge top_layers={top}: {len(q)/dt:.0f} pairs/s, reran top only={gpu_scorer._reruns_top_layers}, "
          f"mean MD {disagreement(samples).mean():.3f}")
labels = np.array([3 if ("red" in a and "red" in b) else (1 if a.split()[0] in b else 0) for a, b in zip(q, d)])
ex = pd.DataFrame({"query": q, "doc_text": d, "label": labels})
model2, tok2 = RelevanceModel.from_backbone(backbone, max_length=64)
rep = train(model2, tok2, ex, TrainingConfig(epochs=3, batch_size=64, max_length=64, progress=False), device="cuda")
print("train on", rep.device, "epoch losses", [round(x, 3) for x in rep.epoch_losses], "pairs/s", [round(x) for x in rep.epoch_pairs_per_second])
rep2 = train(model2, tok2, ex, TrainingConfig(epochs=1, batch_size=64, max_length=64, progress=False, frozen_layers=3), device="cuda")
print("warm retrain, 3 layers frozen: loss", [round(x, 3) for x in rep2.epoch_losses], "pairs/s", [round(x) for x in rep2.epoch_pairs_per_second])
acc = (Scorer(model2, tok2, device="cuda").predict_proba(q, d).argmax(1) == labels).mean()
print("train accuracy after GPU training", round(float(acc), 3))

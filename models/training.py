"""Fine-tuning the cross-encoder: weighted NLL of the label, AdamW, warm-up, clipping, AMP on a GPU."""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from models.inference import autocast_dtype, pick_device, set_cpu_threads
from models.progress import Progress
from models.relevance import LABELS, RelevanceModel, freeze_bottom
from models.training_config import TrainingConfig


@dataclass
class TrainingReport:
    device: str
    steps: int
    seconds: float
    precision: str = "fp32"  # the autocast dtype the forward passes ran in
    step_losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)  # mean weighted loss per epoch
    epoch_pairs_per_second: list[float] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every GPU


def _linear_warmup_decay(optimizer, warmup_steps: int, total_steps: int):
    """Learning rate factor: linear from ~0 to 1 over the warm-up steps, then linear down to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _check_examples(examples: pd.DataFrame) -> tuple[list[str], list[str], torch.Tensor, torch.Tensor]:
    missing = {"query", "doc_text", "label"} - set(examples.columns)
    if missing:
        raise ValueError(f"training examples lack columns {sorted(missing)}")
    if examples.empty:
        raise ValueError("no training examples")
    labels = examples["label"].to_numpy()
    if not np.isin(labels, LABELS).all():
        raise ValueError(f"labels must be in {LABELS}; got {sorted(set(labels.tolist()) - set(LABELS))}")
    weights = (examples["weight"].to_numpy(dtype=np.float64) if "weight" in examples
               else np.ones(len(examples)))
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("example weights must be finite, >= 0 and not all 0")
    # Loss normaliser: the mean weight over the whole set (see train()).
    weights = weights / weights.mean()
    return (examples["query"].astype(str).tolist(), examples["doc_text"].astype(str).tolist(),
            torch.tensor(labels.astype(np.int64)), torch.tensor(weights, dtype=torch.float32))


def train(model: RelevanceModel, tokenizer, examples: pd.DataFrame, config: TrainingConfig = TrainingConfig(),
          device: str = "auto") -> TrainingReport:
    """Train ``model`` in place on ``examples`` (``query, doc_text, label`` and optional ``weight``).

    ``tokenizer`` None: the one kept on the model. Returns the losses, throughput and device used.

    Loss: per-example weighted NLL of the label, ``sum_i w_i * -log Pr(y_i | q_i, d_i) / sum_i w_i``
    in expectation over batches. Each batch's sum is divided by its size times the mean weight of the
    whole set, not by its own weight sum: the latter would cancel the weights whenever a batch happens
    to hold a single source, while this keeps the mixing weights relative across the whole set and
    the loss scale (and so the learning rate) independent of their overall scale.

    Reproducible on a CPU: the same seed gives the same shuffles (a seeded ``torch.Generator``), the
    same dropout masks (torch's global generator, seeded here) and so identical weights.
    """
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    queries, docs, labels, weights = _check_examples(examples)
    seed_everything(config.seed)
    target = pick_device(device)
    if target.type == "cpu":
        set_cpu_threads()
    model.to(target).train()
    frozen = freeze_bottom(model, config.frozen_layers)

    head = list(model.head.parameters())
    head_ids = {id(p) for p in head}
    encoder = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": [p for p in encoder if p.ndim > 1], "lr": config.encoder_lr, "weight_decay": config.weight_decay},
        # biases and LayerNorm weights: no weight decay, as usual for BERTs
        {"params": [p for p in encoder if p.ndim <= 1], "lr": config.encoder_lr, "weight_decay": 0.0},
        {"params": head, "lr": config.head_lr, "weight_decay": 0.0},
    ])
    steps_per_epoch = math.ceil(len(queries) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = _linear_warmup_decay(optimizer, int(total_steps * config.warmup_ratio), total_steps)
    amp_dtype = autocast_dtype(target) if config.mixed_precision else None
    # fp16 needs loss scaling against gradient underflow; bf16 has fp32's range and does not
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    shuffler = torch.Generator().manual_seed(config.seed)

    report = TrainingReport(device=str(target), steps=0, seconds=0.0,
                            precision=str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32")
    started = time.perf_counter()
    progress = Progress(total_steps, "training", unit="step", enabled=config.progress)
    for epoch in range(config.epochs):
        order = torch.randperm(len(queries), generator=shuffler)
        epoch_started, epoch_loss = time.perf_counter(), 0.0
        for start in range(0, len(order), config.batch_size):
            index = order[start:start + config.batch_size]
            batch = tokenizer([queries[i] for i in index.tolist()], [docs[i] for i in index.tolist()], padding=True,
                              truncation=True, max_length=config.max_length, return_tensors="pt").to(target)
            with torch.autocast(target.type, dtype=amp_dtype) if amp_dtype else nullcontext():
                logits = model(**batch)
            nll = F.cross_entropy(logits.float(), labels[index].to(target), reduction="none")
            loss = (nll * weights[index].to(target)).mean()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step_loss = float(loss.detach())
            report.steps += 1
            report.step_losses.append(step_loss)
            epoch_loss += step_loss * len(index)
            progress.advance(1, postfix=f"epoch={epoch + 1}, loss={step_loss:.3f}")
        elapsed = time.perf_counter() - epoch_started
        report.epoch_losses.append(epoch_loss / len(queries))
        report.epoch_pairs_per_second.append(len(queries) / max(elapsed, 1e-9))
    progress.close()
    for parameter in frozen:  # the model leaves as it came: trainable throughout
        parameter.requires_grad_(True)
    model.eval()
    report.seconds = time.perf_counter() - started
    return report


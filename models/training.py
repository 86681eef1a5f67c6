"""Fine-tuning the cross-encoder: weighted NLL of the label, AdamW, warm-up, clipping, AMP on GPU."""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from models.inference import pick_device, set_cpu_threads
from models.relevance import RelevanceModel


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 2
    batch_size: int = 32
    encoder_lr: float = 3e-5
    head_lr: float = 1e-3  # the head starts from scratch: it needs a larger step than the encoder
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    max_length: int = 128
    seed: int = 13
    mixed_precision: bool = True  # used on CUDA only
    progress: bool = True

    def as_params(self) -> dict:
        return asdict(self)


@dataclass
class TrainingReport:
    device: str
    steps: int
    seconds: float
    step_losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    epoch_pairs_per_second: list[float] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _linear_warmup_decay(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(model: RelevanceModel, tokenizer, examples: pd.DataFrame, config: TrainingConfig = TrainingConfig(),
          device: str = "auto") -> TrainingReport:
    """Train on ``examples`` (``query, doc_text, label`` and optional ``weight``) in place."""
    if examples.empty:
        raise ValueError("no training examples")
    seed_everything(config.seed)
    target = pick_device(device)
    if target.type == "cpu":
        set_cpu_threads()
    model.to(target).train()
    queries = examples["query"].tolist()
    docs = examples["doc_text"].tolist()
    labels = torch.tensor(examples["label"].to_numpy(dtype=np.int64))
    weights = torch.tensor(examples["weight"].to_numpy(dtype=np.float32) if "weight" in examples
                           else np.ones(len(examples), dtype=np.float32))

    head = list(model.head.parameters())
    head_ids = {id(p) for p in head}
    rest = [p for p in model.parameters() if id(p) not in head_ids]
    decay = [p for p in rest if p.ndim > 1]
    no_decay = [p for p in rest if p.ndim <= 1]  # biases and LayerNorm: no weight decay, as usual for BERTs
    optimizer = torch.optim.AdamW([
        {"params": decay, "lr": config.encoder_lr, "weight_decay": config.weight_decay},
        {"params": no_decay, "lr": config.encoder_lr, "weight_decay": 0.0},
        {"params": head, "lr": config.head_lr, "weight_decay": 0.0},
    ])
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = _linear_warmup_decay(optimizer, int(total_steps * config.warmup_ratio), total_steps)
    use_amp = config.mixed_precision and target.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    generator = torch.Generator().manual_seed(config.seed)

    report = TrainingReport(device=str(target), steps=0, seconds=0.0)
    started = time.perf_counter()
    progress = _progress(total_steps, config.progress)
    for epoch in range(config.epochs):
        order = torch.randperm(len(examples), generator=generator)
        epoch_started, epoch_loss = time.perf_counter(), 0.0
        for start in range(0, len(order), config.batch_size):
            index = order[start:start + config.batch_size].tolist()
            batch = tokenizer([queries[i] for i in index], [docs[i] for i in index], padding=True, truncation=True,
                              max_length=config.max_length, return_tensors="pt").to(target)
            with torch.autocast(target.type, dtype=amp_dtype, enabled=use_amp):
                logits = model(**batch)
            losses = F.cross_entropy(logits.float(), labels[index].to(target), reduction="none")
            batch_weights = weights[index].to(target)
            loss = (losses * batch_weights).sum() / batch_weights.sum().clamp(min=1e-8)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            report.steps += 1
            report.step_losses.append(float(loss.detach()))
            epoch_loss += float(loss.detach()) * len(index)
            progress.update(1)
            progress.set_postfix(epoch=epoch + 1, loss=f"{report.step_losses[-1]:.3f}")
        elapsed = time.perf_counter() - epoch_started
        report.epoch_losses.append(epoch_loss / len(examples))
        report.epoch_pairs_per_second.append(len(examples) / max(elapsed, 1e-9))
    progress.close()
    model.eval()
    report.seconds = time.perf_counter() - started
    return report


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    # disable=None: a bar on a terminal, silence in logs and CI
    return tqdm(total=total, desc="training", unit="step", disable=None if enabled else True, leave=False)

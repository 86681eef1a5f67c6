"""The cross-encoder: (query, document) -> Pr(y | q, d) over labels 0-3, and f = sum_y y * Pr(y)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.backbone import resolve_backbone

LABELS = (0, 1, 2, 3)  # 0 irrelevant, 1 related, 2 relevant, 3 exact
LABEL_VALUES = torch.tensor(LABELS, dtype=torch.float32)
HEAD_FILE = "relevance_head.pt"
CONFIG_FILE = "serm_relevance.json"


class RelevanceModel(nn.Module):
    """Encoder + dropout + a 4-way linear head on the mean-pooled token states.

    Mean pooling (not [CLS]) because the default backbone, all-MiniLM-L6-v2, was trained with it.
    """

    def __init__(self, encoder: nn.Module, backbone: str, dropout: float = 0.1, max_length: int = 128):
        super().__init__()
        self.encoder = encoder
        self.backbone = backbone
        self.max_length = max_length
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, len(LABELS))
        # a seeded head initialisation, so the same seed trains the same model
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.head.weight.normal_(0.0, 0.02, generator=generator)
            self.head.bias.zero_()

    @classmethod
    def from_backbone(cls, name_or_path: str | None = None, dropout: float = 0.1, max_length: int = 128):
        from transformers import AutoModel, AutoTokenizer

        source = resolve_backbone(name_or_path)
        model = cls(AutoModel.from_pretrained(source), backbone=name_or_path or "default", dropout=dropout,
                    max_length=max_length)
        return model, AutoTokenizer.from_pretrained(source)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**inputs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))

    def save(self, folder: str | Path, tokenizer) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        torch.save(self.head.state_dict(), folder / HEAD_FILE)
        (folder / CONFIG_FILE).write_text(json.dumps({
            "backbone": self.backbone, "dropout": self.dropout.p, "max_length": self.max_length, "labels": LABELS,
        }, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path):
        from transformers import AutoModel, AutoTokenizer

        folder = Path(folder)
        config = json.loads((folder / CONFIG_FILE).read_text())
        model = cls(AutoModel.from_pretrained(folder), backbone=config["backbone"], dropout=config["dropout"],
                    max_length=config["max_length"])
        model.head.load_state_dict(torch.load(folder / HEAD_FILE, map_location="cpu"))
        return model.eval(), AutoTokenizer.from_pretrained(folder)


def expected_score(probs):
    """f(q, d) = sum_y y * Pr(y | q, d), for numpy arrays or torch tensors of shape [..., 4]."""
    if isinstance(probs, torch.Tensor):
        return probs @ LABEL_VALUES.to(probs.device, probs.dtype)
    return np.asarray(probs) @ np.asarray(LABELS, dtype=np.float64)

"""The cross-encoder: (query, document text) -> Pr(y | q, d) over labels 0-3, and f = sum_y y * Pr(y).

The paper's relevance model is a generative LLM; a cross-encoder with a 4-way head has the same
interface (a label distribution and its expectation as the ranking score) and runs on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.backbone import resolve_backbone

LABELS = (0, 1, 2, 3)
LABEL_NAMES = ("irrelevant", "related", "relevant", "exact")
LABEL_VALUES = torch.tensor(LABELS, dtype=torch.float32)
HEAD_FILE = "relevance_head.pt"
CONFIG_FILE = "serm_relevance.json"
POOLING = "mean"


class RelevanceModel(nn.Module):
    """Encoder + dropout + a 4-way linear head on the mean-pooled token states.

    Mean pooling over the real (unpadded) tokens rather than the [CLS] state, because the default
    backbone, all-MiniLM-L6-v2, was trained with mean pooling: its [CLS] state carries no trained
    sentence-level meaning, the mean does, so the head starts from a useful representation.
    Padding is masked out, so a pair's logits do not depend on the batch it is padded in.

    ``tokenizer`` is kept on the model (not a module, no weights) so ``save(folder)`` can write it.
    """

    def __init__(self, encoder: nn.Module, backbone: str, dropout: float = 0.1, max_length: int = 128,
                 tokenizer=None):
        super().__init__()
        self.encoder = encoder
        self.backbone = backbone
        self.max_length = max_length
        self.tokenizer = tokenizer
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, len(LABELS))
        # A fixed-seed head initialisation: two models built from the same backbone start identical,
        # so the same training seed trains the same model.
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.head.weight.normal_(0.0, 0.02, generator=generator)
            self.head.bias.zero_()

    @classmethod
    def from_backbone(cls, name_or_path: str | None = None, dropout: float = 0.1, max_length: int = 128):
        """A fresh model (pretrained encoder, new head) and its tokenizer: ``(model, tokenizer)``."""
        from transformers import AutoModel, AutoTokenizer

        source = resolve_backbone(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = cls(AutoModel.from_pretrained(source), backbone=name_or_path or "default", dropout=dropout,
                    max_length=max_length, tokenizer=tokenizer)
        return model, tokenizer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, 4]`` (softmax them for Pr(y | q, d))."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return self.logits_from_hidden(self.encoder(**inputs).last_hidden_state, attention_mask)

    def logits_from_hidden(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The head on the encoder's last hidden states: masked mean pooling, dropout, linear."""
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))

    def save(self, folder: str | Path, tokenizer=None) -> Path:
        """Encoder (``save_pretrained``), tokenizer, head weights and ``serm_relevance.json`` into ``folder``."""
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            raise ValueError("no tokenizer to save: pass one, or build the model with from_backbone/load")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        torch.save({k: v.detach().cpu() for k, v in self.head.state_dict().items()}, folder / HEAD_FILE)
        (folder / CONFIG_FILE).write_text(json.dumps({
            "backbone": self.backbone, "pooling": POOLING, "dropout": self.dropout.p, "max_length": self.max_length,
            "labels": list(LABELS), "label_names": list(LABEL_NAMES),
        }, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path):
        """``(model, tokenizer)`` as saved, in eval mode on the CPU."""
        from transformers import AutoModel, AutoTokenizer

        folder = Path(folder)
        config = json.loads((folder / CONFIG_FILE).read_text())
        if tuple(config.get("labels", LABELS)) != LABELS or config.get("pooling", POOLING) != POOLING:
            raise ValueError(f"{folder} holds a model with labels {config.get('labels')} and pooling "
                             f"{config.get('pooling')}; this code reads labels {LABELS} with {POOLING} pooling")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = cls(AutoModel.from_pretrained(folder), backbone=config["backbone"], dropout=config["dropout"],
                    max_length=config["max_length"], tokenizer=tokenizer)
        model.head.load_state_dict(torch.load(folder / HEAD_FILE, map_location="cpu", weights_only=True))
        return model.eval(), tokenizer


def encoder_layers(encoder: nn.Module) -> list[nn.Module]:
    """The stacked transformer layers of a Hugging Face encoder (BERT/RoBERTa/XLM-R/ELECTRA, DistilBERT,
    ModernBERT layouts), bottom first; empty when the layout is unknown."""
    for path in ("encoder.layer", "transformer.layer", "layers"):
        module = encoder
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList) and len(module):
            return list(module)
    return []


def freeze_bottom(model: RelevanceModel, layers: int) -> list[nn.Parameter]:
    """Stop training the input embeddings and the bottom ``layers`` encoder layers (they keep their weights and
    backward stops below them); returns the parameters frozen (none when the layout is unknown)."""
    stack = encoder_layers(model.encoder)
    if layers <= 0 or not stack:
        return []
    modules = [getattr(model.encoder, "embeddings", None), *stack[:layers]]
    frozen = [p for module in filter(None, modules) for p in module.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    return frozen


def expected_score(probs):
    """f(q, d) = sum_y y * Pr(y | q, d) for numpy arrays or torch tensors of shape ``[..., 4]``."""
    if isinstance(probs, torch.Tensor):
        return probs @ LABEL_VALUES.to(probs.device, probs.dtype)
    return np.asarray(probs, dtype=np.float64) @ np.asarray(LABELS, dtype=np.float64)

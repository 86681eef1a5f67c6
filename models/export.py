"""The relevance model as ONNX: ``model.onnx``, the tokenizer's files and ``serm_onnx.json`` in one folder, for
serving without this project (any ONNX runtime and the tokenizer); and ``OnnxScorer``, which reads it back.

The graph takes the tokenizer's tensors (``input_ids``, ``attention_mask`` and, where the tokenizer makes them,
``token_type_ids``; int64, ``[batch, sequence]``, both axes dynamic) and returns ``probabilities`` ``[batch, 4]``
(Pr(y | q, d), softmax of the logits) and ``score`` ``[batch]`` (sum_y y * Pr(y)), what ``Scorer`` returns.
Pairs are tokenized as the model was trained: ``tokenizer(query, doc_text, truncation=True,
max_length=max_length)``.

The exporter is torch's TorchScript one (``dynamo=False``): it needs nothing beyond torch, where the
torch.export-based one needs ``onnxscript``. It traces one example batch; the example is padded (two pairs of
different lengths), so the traced graph applies the attention mask, and the Python-level branches it records
(transformers' mask padding, SDPA's ``is_causal``) are constants for a bidirectional encoder.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from models.relevance import LABEL_NAMES, LABELS, LABEL_VALUES, RelevanceModel

ONNX_FILE = "model.onnx"
CONFIG_FILE = "serm_onnx.json"
OPSET = 17
OUTPUTS = ("probabilities", "score")
_EXAMPLE = (["a short query", "a somewhat longer query about a product"],
            ["a document", "a longer document text, with a title and a description that runs on for a while"])


class _Probabilities(nn.Module):
    """The model with the serving outputs: the label distribution and its expectation."""

    def __init__(self, model: RelevanceModel, input_names: Sequence[str]):
        super().__init__()
        self.model, self.input_names = model, tuple(input_names)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.softmax(self.model(**dict(zip(self.input_names, tensors))), dim=-1)
        return probs, probs @ LABEL_VALUES


def model_inputs(tokenizer) -> list[str]:
    """The tensors the tokenizer makes that the model takes, in the model's argument order."""
    made = set(tokenizer.model_input_names)
    return [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in made]


def export_onnx(model: RelevanceModel, tokenizer, folder: str | Path, metadata: dict | None = None) -> Path:
    """Write ``model`` (in eval mode, on the CPU, fp32) as ONNX with its tokenizer and ``serm_onnx.json`` (labels,
    max length, inputs, outputs, and ``metadata``) into ``folder``; returns the ``model.onnx`` path."""
    import onnx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").float().eval()
    names = model_inputs(tokenizer)
    example = tokenizer(*_EXAMPLE, padding=True, truncation=True, max_length=model.max_length, return_tensors="pt")
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    dynamic.update({"probabilities": {0: "batch"}, "score": {0: "batch"}})
    path = folder / ONNX_FILE
    with warnings.catch_warnings(), torch.no_grad():
        # the legacy exporter's deprecation notice, and its tracer's notes on the constant branches named above
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(_Probabilities(model, names), tuple(example[name] for name in names), str(path),
                          input_names=names, output_names=list(OUTPUTS), dynamic_axes=dynamic,
                          opset_version=OPSET, dynamo=False)
    onnx.checker.check_model(str(path))
    tokenizer.save_pretrained(folder)
    (folder / CONFIG_FILE).write_text(json.dumps({
        "labels": list(LABELS), "label_names": list(LABEL_NAMES), "max_length": model.max_length,
        "backbone": model.backbone, "inputs": names, "outputs": list(OUTPUTS), "opset": OPSET,
        "tokenize": "tokenizer(query, doc_text, truncation=True, max_length=max_length)", **(metadata or {}),
    }, indent=1))
    return path


def export_folder(model_dir: str | Path, folder: str | Path, metadata: dict | None = None) -> Path:
    """``export_onnx`` of a model saved with ``RelevanceModel.save``."""
    model, tokenizer = RelevanceModel.load(model_dir)
    return export_onnx(model, tokenizer, folder, metadata)


class OnnxScorer:
    """Scores (query, document text) pairs with an exported folder on onnxruntime's CPU provider."""

    def __init__(self, folder: str | Path, batch_size: int = 64):
        import onnxruntime
        from transformers import AutoTokenizer

        folder = Path(folder)
        self.config = json.loads((folder / CONFIG_FILE).read_text())
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
        self.batch_size = batch_size

    def predict_proba(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        """Pr(y | q, d) for each pair: ``[N, 4]``."""
        queries, docs = list(queries), list(docs)
        out = np.zeros((len(queries), len(LABELS)), dtype=np.float64)
        for start in range(0, len(queries), self.batch_size):
            end = start + self.batch_size
            encoded = self.tokenizer(queries[start:end], docs[start:end], padding=True, truncation=True,
                                     max_length=self.config["max_length"], return_tensors="np")
            feed = {name: encoded[name].astype(np.int64) for name in self.config["inputs"]}
            out[start:end] = self.session.run(["probabilities"], feed)[0]
        return out

"""The ONNX export: onnxruntime gives the probabilities torch gives, for any batch size and pair length."""

import json

import numpy as np
import pytest
import torch

from models.backbone import tiny_backbone
from models.export import CONFIG_FILE, ONNX_FILE, OnnxScorer, export_folder
from models.inference import Scorer
from models.relevance import RelevanceModel

QUERIES = ["usb cable", "red running shoes for women size 40", "lamp", "a very long query " * 30, "desk", "q"]
DOCS = ["USB-C cable. Two metres, braided",
        "Trail running shoe. Breathable mesh upper, cushioned sole, available in red and blue, sizes 36 to 44",
        "Desk lamp", "a long description that goes on " * 40, "Standing desk. Oak top, electric", "x"]


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny random model whose head is scaled up, so its distributions are far from uniform."""
    model, tokenizer = RelevanceModel.from_backbone(tiny_backbone(tmp_path_factory.mktemp("tiny")), max_length=64)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=generator) * 3.0)
        model.head.bias.copy_(torch.randn(model.head.bias.shape, generator=generator))
    return model.save(tmp_path_factory.mktemp("model") / "model_dir")


def test_onnx_probabilities_match_torch(saved_model, tmp_path):
    path = export_folder(saved_model, tmp_path / "onnx", metadata={"model_version": "7"})
    assert path == tmp_path / "onnx" / ONNX_FILE
    config = json.loads((tmp_path / "onnx" / CONFIG_FILE).read_text())
    assert (config["labels"], config["max_length"], config["model_version"]) == ([0, 1, 2, 3], 64, "7")
    assert config["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]  # what the BERT tokenizer makes

    expected = Scorer.from_folder(saved_model, device="cpu", mixed_precision=False).predict_proba(QUERIES, DOCS)
    assert expected.max(axis=1).min() > 0.3  # far from uniform: a wrong graph could not agree by chance
    for batch_size in (1, 2, len(QUERIES)):  # unpadded single pairs, and padded batches of different lengths
        served = OnnxScorer(tmp_path / "onnx", batch_size=batch_size).predict_proba(QUERIES, DOCS)
        np.testing.assert_allclose(served, expected, atol=1e-5, rtol=0)

    # batch and sequence are dynamic axes of every input; the outputs' batch axis too
    session = OnnxScorer(tmp_path / "onnx").session
    for tensor in session.get_inputs():
        assert tensor.shape == ["batch", "sequence"], tensor
    assert {o.name: o.shape for o in session.get_outputs()} == {"probabilities": ["batch", 4], "score": ["batch"]}
    encoded = OnnxScorer(tmp_path / "onnx").tokenizer(QUERIES[:3], DOCS[:3], padding=True, return_tensors="np")
    probs, score = session.run(None, {t.name: encoded[t.name].astype(np.int64) for t in session.get_inputs()})
    np.testing.assert_allclose(score, probs @ [0.0, 1.0, 2.0, 3.0], atol=1e-5)


def test_export_needs_a_saved_model(tmp_path):
    with pytest.raises(FileNotFoundError):
        export_folder(tmp_path / "nothing", tmp_path / "onnx")

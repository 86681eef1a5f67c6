"""The relevance model: distribution and score, MC dropout, training, save/load, metrics, mixing."""

import numpy as np
import pandas as pd
import pytest
import torch

from models.backbone import BackboneNotAvailable, resolve_backbone, tiny_backbone
from models.inference import Scorer, disagreement, entropy
from models.metrics import accuracy, evaluate, family_of, ndcg_at_k
from models.mixing import MixWeights, mix_training_set
from models.relevance import RelevanceModel, expected_score
from models.training import TrainingConfig, train


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return tiny_backbone(tmp_path_factory.mktemp("tiny"))


def learnable_pairs(n: int = 96) -> pd.DataFrame:
    """The document's first word tells the label: learnable by a tiny model in a few steps."""
    rng = np.random.default_rng(0)
    markers = ["apple", "river", "guitar", "window"]
    filler = ["red", "blue", "shoe", "lamp", "chair", "phone", "green", "desk"]
    rows = []
    for i in range(n):
        label = i % 4
        rows.append({"query": " ".join(rng.choice(filler, 2)),
                     "doc_text": " ".join([markers[label], *rng.choice(filler, 3)]), "label": label})
    return pd.DataFrame(rows)


def test_scores_are_the_expectation_of_the_distribution(tiny):
    model, tokenizer = RelevanceModel.from_backbone(tiny)
    scorer = Scorer(model, tokenizer, batch_size=4)
    probs = scorer.predict_proba(["red shoe", "blue lamp"], ["a red shoe", "green chair"])
    assert probs.shape == (2, 4) and np.allclose(probs.sum(1), 1.0)
    assert np.allclose(scorer.score(["red shoe", "blue lamp"], ["a red shoe", "green chair"]),
                       probs @ np.array([0, 1, 2, 3]))
    assert torch.allclose(expected_score(torch.tensor([[0.1, 0.2, 0.3, 0.4]])), torch.tensor([2.0]))


def test_mc_dropout_passes_differ_while_eval_passes_do_not(tiny):
    model, tokenizer = RelevanceModel.from_backbone(tiny, dropout=0.3)
    scorer = Scorer(model, tokenizer)
    queries, docs = ["red shoe"] * 3, ["a red shoe", "green chair", "phone"]
    samples = scorer.mc_dropout(queries, docs, k=6, seed=1)
    assert samples.shape == (3, 6) and (disagreement(samples) > 0).all()
    assert np.allclose(samples, scorer.mc_dropout(queries, docs, k=6, seed=1))  # seeded
    assert np.array_equal(scorer.predict_proba(queries, docs), scorer.predict_proba(queries, docs))
    assert not any(m.training for m in model.modules())  # dropout switched back off


def test_length_sorted_batches_keep_input_order(tiny):
    model, tokenizer = RelevanceModel.from_backbone(tiny)
    queries = ["a", "a much longer query about red shoes", "b c", "lamp"] * 3
    docs = ["short", "x", "a very very long document text about many things", "desk lamp"] * 3
    batched = Scorer(model, tokenizer, batch_size=5).predict_proba(queries, docs)
    single = Scorer(model, tokenizer, batch_size=1).predict_proba(queries, docs)
    assert np.allclose(batched, single, atol=1e-5)


def test_training_lowers_the_loss_and_is_reproducible(tiny):
    data = learnable_pairs()
    config = TrainingConfig(epochs=10, batch_size=16, encoder_lr=2e-3, head_lr=1e-2, warmup_ratio=0.0, progress=False, seed=3)
    model, tokenizer = RelevanceModel.from_backbone(tiny)
    report = train(model, tokenizer, data, config)
    assert report.epoch_losses[-1] < report.epoch_losses[0] * 0.7
    assert report.steps == 10 * 6 and report.device == "cpu" and all(s > 0 for s in report.epoch_pairs_per_second)
    again, _ = RelevanceModel.from_backbone(tiny)
    train(again, tokenizer, data, config)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_example_weights_change_what_is_learned(tiny):
    data = learnable_pairs(32)
    config = TrainingConfig(epochs=2, batch_size=8, progress=False)
    plain, tokenizer = RelevanceModel.from_backbone(tiny)
    weighted, _ = RelevanceModel.from_backbone(tiny)
    train(plain, tokenizer, data, config)
    train(weighted, tokenizer, data.assign(weight=np.where(data["label"] == 3, 5.0, 0.1)), config)
    assert not torch.equal(plain.head.weight, weighted.head.weight)


def test_save_and_load_give_identical_scores(tiny, tmp_path):
    model, tokenizer = RelevanceModel.from_backbone(tiny)
    train(model, tokenizer, learnable_pairs(16), TrainingConfig(epochs=1, batch_size=8, progress=False))
    before = Scorer(model, tokenizer).predict_proba(["red shoe"], ["a red shoe"])
    model.save(tmp_path / "m", tokenizer)
    after = Scorer.from_folder(tmp_path / "m").predict_proba(["red shoe"], ["a red shoe"])
    assert np.array_equal(before, after)


def test_entropy_and_disagreement_by_hand():
    assert np.allclose(entropy(np.array([[1, 0, 0, 0], [0.25] * 4])), [0.0, np.log(4)])
    assert np.allclose(disagreement(np.array([[1.0, 2.5, 2.0], [1.0, 1.0, 1.0]])), [1.5, 0.0])


def test_ndcg_and_accuracy_by_hand():
    frame = pd.DataFrame({
        "query": ["q1"] * 3 + ["q2"] * 2 + ["q3"] * 2, "language": "en",
        "doc_id": ["a", "b", "c", "a", "b", "a", "b"],
        "label": [3, 0, 2, 1, 2, 0, 0], "score": [0.5, 2.0, 1.0, 2.0, 1.0, 1.0, 0.0],
        "pred_label": [3, 0, 1, 1, 2, 0, 1],
    })
    # q1 ranks b(0), c(2), a(3): DCG@1 = 0, so NDCG@1 = 0. q2 ranks a(1) first: (2^1-1)/(2^2-1) = 1/3.
    # q3 has no relevant document: skipped. Mean over q1, q2 = 1/6.
    assert ndcg_at_k(frame, 1) == pytest.approx(100 / 6)
    # q1 @4: DCG = 0 + 3/log2(3) + 7/2; IDCG = 7 + 3/log2(3); q2 @4: DCG = 1 + 3/log2(3); IDCG = 3 + 1/log2(3)
    q1 = (3 / np.log2(3) + 7 / 2) / (7 + 3 / np.log2(3))
    q2 = (1 + 3 / np.log2(3)) / (3 + 1 / np.log2(3))
    assert ndcg_at_k(frame, 4) == pytest.approx(100 * (q1 + q2) / 2)
    assert accuracy(frame) == pytest.approx(100 * 5 / 7)
    table = evaluate(frame.assign(language=["en", "en", "en", "tr", "tr", "de", "de"]))
    overall = table[(table.slice_type == "overall") & (table.metric == "accuracy")]
    assert overall["value"].iat[0] == pytest.approx(100 * 5 / 7)
    assert set(table[table.slice_type == "family"]["slice"]) == {"germanic", "minor"}
    assert family_of("pt-BR") == "romance" and family_of("xx") == "other"


def test_mixing_keeps_the_newest_label_and_weights_sources():
    seed = pd.DataFrame({"query": ["q", "r"], "doc_id": ["a", "a"], "language": "en", "doc_text": "t", "label": [0, 1]})
    first = pd.DataFrame({"query": ["q"], "doc_id": ["a"], "language": "en", "doc_text": "t", "label": [2]})
    second = pd.DataFrame({"query": ["s"], "doc_id": ["b"], "language": "en", "doc_text": "t", "label": [3]})
    mixed = mix_training_set(seed, {1: first, 2: second}, 2, MixWeights(seed=0.5, earlier=1.0, current=2.0))
    rows = {(r.query, r.doc_id): r for r in mixed.itertuples()}
    assert len(mixed) == 3
    assert (rows[("q", "a")].label, rows[("q", "a")].iteration, rows[("q", "a")].weight) == (2, 1, 1.0)
    assert (rows[("r", "a")].source, rows[("r", "a")].weight) == ("seed", 0.5)
    assert rows[("s", "b")].weight == 2.0


def test_backbone_resolution(tmp_path):
    default = resolve_backbone(None)
    assert (resolve_backbone("all-MiniLM-L6-v2") == default) and default.endswith("model")
    assert resolve_backbone(str(tmp_path)) == str(tmp_path)
    with pytest.raises(BackboneNotAvailable, match="not downloaded at run time"):
        resolve_backbone("nobody/no-such-model")


def test_the_packaged_minilm_backbone_scores_pairs():
    model, tokenizer = RelevanceModel.from_backbone(None)
    assert model.encoder.config.hidden_size == 384
    probs = Scorer(model, tokenizer).predict_proba(["red running shoes"], ["Red running shoes for women"])
    assert probs.shape == (1, 4) and np.isclose(probs.sum(), 1.0)

"""`serm score` and `serm export --onnx` end to end: a catalogue ingested by `serm ingest`, tiny random models
registered in the real MLflow registry under SERM_HOME as champion and seed, pairs files in every format."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from models.backbone import tiny_backbone
from models.export import CONFIG_FILE, OnnxScorer
from models.inference import Scorer, native_cpu_bf16
from models.relevance import RelevanceModel
from serm_dagster.cli import app
from serm_dagster.registry import CHAMPION, Registry
from serm_dagster.settings import SermPaths

CATALOG = ('doc_id,language,title,description,attributes\n'
           'D1,en,USB-C cable,"Two metres, braided",\n'
           '007,en,Desk lamp,,\n'
           'D3,de,Laufschuh,Atmungsaktives Obermaterial. Gedämpfte Sohle,\n')
# the text the model reads for each document: title, then description (spark_jobs.training.document_texts)
TEXTS = {"D1": "USB-C cable. Two metres, braided", "007": "Desk lamp",
         "D3": "Laufschuh. Atmungsaktives Obermaterial. Gedämpfte Sohle"}
# `serm score` scores as ModelSettings says: fp32 here, bf16 autocast on a CPU that has it natively
TOLERANCE = 2e-2 if native_cpu_bf16() else 1e-5
PAIRS = pd.DataFrame({"query": ["usb cable", "lamp", "usb cable", "laufschuhe damen"],
                      "doc_id": ["D1", "007", "007", "D3"]})


def tiny_model(folder, seed: int):
    """A tiny random model whose head is scaled up (its distributions differ from model to model)."""
    model, _ = RelevanceModel.from_backbone(tiny_backbone(folder / "backbone"), max_length=48)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=generator) * 3.0)
    return model.save(folder / "model_dir")


def expected_probs(model_dir, queries, texts) -> np.ndarray:
    return Scorer.from_folder(model_dir, device="cpu", mixed_precision=False).predict_proba(queries, texts)


@pytest.fixture(scope="module")
def served(spark, tmp_path_factory):
    """SERM_HOME with the catalogue ingested by `serm ingest` and two tiny models registered, as champion and as
    seed; returns (folder of the models, invoke)."""
    tmp = tmp_path_factory.mktemp("served")
    paths = SermPaths.from_env(tmp / "serm").ensure()
    (paths.landing_catalog / "catalog.csv").write_text(CATALOG)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SERM_HOME", str(paths.home))
        patch.setenv("DAGSTER_HOME", str(paths.dagster_home))
        ingested = invoke("ingest")
        assert ingested.exit_code == 0, ingested.output
        registry = Registry.under(paths.home)
        for seed, alias in ((1, CHAMPION), (2, "seed")):
            _, version = registry.log_model(tiny_model(tmp / alias, seed), run_name=alias, params={}, metrics={})
            registry.set_alias(alias, version)
        yield tmp, invoke


def test_no_champion_yet_says_what_to_run(home, tmp_path):
    PAIRS.to_csv(tmp_path / "pairs.csv", index=False)
    runner = CliRunner()
    for args in (["score", str(tmp_path / "pairs.csv")], ["export", "--onnx", str(tmp_path / "onnx")]):
        stopped = runner.invoke(app, args)
        assert stopped.exit_code == 2 and "no champion yet" in stopped.output and "serm train" in stopped.output
    assert not (tmp_path / "onnx").exists()


def test_score_and_export_with_the_champion(served, tmp_path):
    models, invoke = served
    champion_dir, seed_dir = models / CHAMPION / "model_dir", models / "seed" / "model_dir"
    PAIRS.to_csv(tmp_path / "pairs.csv", index=False)

    # doc_id pairs (CSV in, Parquet out): the catalogue's texts, the champion's distribution, rows in file order
    scored = invoke("score", tmp_path / "pairs.csv", "--output", tmp_path / "scored.parquet")
    assert scored.exit_code == 0, scored.output
    frame = pd.read_parquet(tmp_path / "scored.parquet")
    assert frame.columns.tolist() == ["query", "doc_id", "score", "p0", "p1", "p2", "p3"]
    assert frame["doc_id"].tolist() == ["D1", "007", "007", "D3"]  # "007" stays a string id
    probs = expected_probs(champion_dir, PAIRS["query"], [TEXTS[d] for d in PAIRS["doc_id"]])
    np.testing.assert_allclose(frame[["p0", "p1", "p2", "p3"]].to_numpy(), probs, atol=TOLERANCE)
    np.testing.assert_allclose(frame["score"], frame[["p0", "p1", "p2", "p3"]].to_numpy() @ [0, 1, 2, 3], atol=1e-9)

    # text pairs (JSON Lines in, printed): no catalogue needed; --alias scores with the seed model instead
    texts = pd.DataFrame({"query": ["usb cable", "lamp"], "text": ["a cable", "a very long lamp text " * 20]})
    texts.to_json(tmp_path / "texts.jsonl", orient="records", lines=True)
    printed = invoke("score", tmp_path / "texts.jsonl", "--output", tmp_path / "texts.csv", "--alias", "seed")
    assert printed.exit_code == 0, printed.output
    by_seed = pd.read_csv(tmp_path / "texts.csv")
    np.testing.assert_allclose(by_seed[["p0", "p1", "p2", "p3"]].to_numpy(),
                               expected_probs(seed_dir, texts["query"], texts["text"]), atol=TOLERANCE)
    table = invoke("score", tmp_path / "texts.jsonl")
    assert table.exit_code == 0 and "| query" in table.output and "p3" in table.output

    # the champion as ONNX: its files, the version it holds, and onnxruntime's distribution
    exported = invoke("export", "--onnx", tmp_path / "onnx")
    assert exported.exit_code == 0, exported.output
    assert {"model.onnx", CONFIG_FILE, "tokenizer.json"} <= {p.name for p in (tmp_path / "onnx").iterdir()}
    config = json.loads((tmp_path / "onnx" / CONFIG_FILE).read_text())
    assert (config["model_version"], config["alias"], config["max_length"]) == ("1", CHAMPION, 48)
    onnx_probs = OnnxScorer(tmp_path / "onnx").predict_proba(PAIRS["query"], [TEXTS[d] for d in PAIRS["doc_id"]])
    np.testing.assert_allclose(onnx_probs, probs, atol=1e-5)


def test_score_names_what_is_wrong(served, tmp_path):
    _, invoke = served
    pd.DataFrame({"query": ["a", "b", "c"], "doc_id": ["D1", "nope", "D9"]}).to_csv(tmp_path / "ids.csv", index=False)
    unknown = invoke("score", tmp_path / "ids.csv")
    assert unknown.exit_code == 2
    assert "'nope' (row 2), 'D9' (row 3) not in the catalogue" in unknown.output and "serm ingest" in unknown.output

    pd.DataFrame({"query": ["a"], "document": ["x"]}).to_parquet(tmp_path / "cols.parquet")
    missing = invoke("score", tmp_path / "cols.parquet")
    assert missing.exit_code == 2
    assert f"pairs file {tmp_path / 'cols.parquet'} has no doc_id or text column" in missing.output

    pd.DataFrame({"query": ["a", ""], "text": ["x", "y"]}).to_csv(tmp_path / "blank.csv", index=False)
    assert "query is empty in row 2" in invoke("score", tmp_path / "blank.csv").output
    pd.DataFrame({"query": ["a"], "text": ["x"]}).to_csv(tmp_path / "text.csv", index=False)
    assert "no version of serm-relevance has the alias 'nightly'; aliases: champion, seed" in \
        invoke("score", tmp_path / "text.csv", "--alias", "nightly").output
    assert "format is taken from the extension" in invoke("score", tmp_path / "ids.csv", "--output",
                                                          tmp_path / "out.xlsx").output

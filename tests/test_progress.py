"""Long steps report their progress through one helper (models.progress): items done of the total, on a terminal
as one line with the rate and the time left, and nothing where there is no terminal or it is turned off."""

import io

import numpy as np
import pandas as pd
import pytest
from dagster import AssetExecutionContext, DagsterInstance, asset, materialize

from models import progress
from models.agents import AgreementSettings, PairToJudge, ReasoningPath, annotate
from models.backbone import tiny_backbone
from models.evaluation import score_pairs
from models.inference import Scorer
from models.relevance import RelevanceModel
from models.training import TrainingConfig, train


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> Scorer:
    model, tokenizer = RelevanceModel.from_backbone(tiny_backbone(tmp_path_factory.mktemp("tiny")))
    return Scorer(model, tokenizer, device="cpu", batch_size=8, mixed_precision=False)


def pairs(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    words = ["red", "shoe", "lamp", "desk", "phone", "green"]
    return pd.DataFrame({"query": [" ".join(rng.choice(words, 2)) for _ in range(n)],
                         "doc_text": [" ".join(rng.choice(words, 5)) for _ in range(n)], "label": np.arange(n) % 4})


def finished(seen: list, step: str) -> tuple[int, int]:
    """(done, total) of the last update of ``step``, after checking it only ever counted up."""
    updates = [(done, total) for name, done, total in seen if name == step]
    assert updates, f"no progress reported for {step!r}: {sorted({s for s, _, _ in seen})}"
    assert [d for d, _ in updates] == sorted(d for d, _ in updates)
    return updates[-1]


def test_scoring_reports_its_pairs(scorer):
    frame = pairs(21)
    with progress.watching() as seen:
        scorer.judge(frame["query"].tolist(), frame["doc_text"].tolist(), k=2, step="mining: the model agents")
        score_pairs(scorer, frame, "evaluating version 3")
    assert finished(seen, "mining: the model agents") == (21, 21)
    assert finished(seen, "evaluating version 3") == (21, 21)
    # a batch at a time: 8, 16, 21 (and 0 at the start)
    assert [d for s, d, _ in seen if s == "evaluating version 3"] == [0, 8, 16, 21]


def test_training_reports_its_steps(tmp_path):
    model, tokenizer = RelevanceModel.from_backbone(tiny_backbone(tmp_path / "tiny"))
    with progress.watching() as seen:
        report = train(model, tokenizer, pairs(20), TrainingConfig(epochs=2, batch_size=8, max_length=16,
                                                                    progress=False), device="cpu")
    assert finished(seen, "training") == (report.steps, report.steps) == (6, 6)


class Panelist:
    """A judge that always answers ``label``: a pair's majority is certain after two of three paths."""

    backend, model, prompt_version = "fake", "fixed", "test"

    def __init__(self, name: str, label: int):
        self.name, self.label = name, label

    def config_key(self) -> str:
        return self.name

    def judge(self, batch, path_index):
        return [ReasoningPath(self.label, "fixed", "ok") for _ in batch]


def test_annotation_reports_paths_and_pairs_judged_per_agent():
    to_judge = [PairToJudge(pair_id=f"p{i}", query="red shoe", language="en", doc_id=f"d{i}", title="Red shoe",
                            description="a red shoe", attributes={}, knowledge={}) for i in range(10)]
    with progress.watching() as seen:
        result = annotate(to_judge, [Panelist("a", 2), Panelist("b", 2)], AgreementSettings(n_paths=3, batch_size=4))
    done, total = finished(seen, "annotation")
    # at most 10 pairs x 2 agents x 3 paths; early stopping settled every pair after 2 paths: 40 asked, 40 in all
    assert seen[0][1:] == (0, 60)
    assert (done, total) == (len(result.votes), len(result.votes)) == (40, 40)


def test_the_line_goes_to_the_terminal_with_items_rate_and_time_left(monkeypatch, capsys):
    terminal = Terminal()
    monkeypatch.setattr(progress, "TERMINAL", terminal)
    with progress.Progress(40, "mining: the model agents", "pair") as bar:
        bar.advance(40)
    line = terminal.getvalue()
    assert "mining: the model agents" in line and "/40" in line and "pair/s" in line and "<" in line  # ETA
    assert capsys.readouterr() == ("", "")  # nothing on stdout, nor on the (captured) stderr
    terminal.truncate(0)
    with progress.Progress(40, "turned off", "pair", enabled=False) as bar:
        bar.advance(40)
    assert terminal.getvalue() == ""


def test_no_terminal_no_line(monkeypatch, capsys):
    monkeypatch.setattr(progress, "TERMINAL", None)
    with progress.watching() as seen, progress.Progress(3, "step") as bar:
        bar.advance(3)
    assert capsys.readouterr() == ("", "") and seen[-1] == ("step", 3, 3)


def test_a_run_log_hears_how_far_a_step_is_at_its_start_and_end_and_at_most_every_interval(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    lines: list[str] = []
    with progress.reporting_to(lines.append, every_s=60.0):
        with progress.Progress(1000, "annotation", "path", enabled=False) as bar:
            for _ in range(9):
                clock[0] += 10.0
                bar.advance(50)  # 10 s per 50 paths: a line once a minute, not per update
            bar.discount(100)  # settled early
            bar.advance(450, postfix="pairs judged: knowledge 300")
    assert lines == ["annotation: 0/1000 paths (0%), ?path/s, ? left",
                     "annotation: 300/1000 paths (30%), 5.00path/s, 02:20 left",
                     "annotation: 900/900 paths (100%), 10.00path/s, 00:00 left, pairs judged: knowledge 300"]


def test_a_dagster_runs_log_gets_the_progress_of_its_step(scorer):
    frame = pairs(20)

    @asset
    def scored(context: AssetExecutionContext) -> int:
        with progress.reporting_to(context.log.info):
            return len(score_pairs(scorer, frame, "evaluating version 7"))

    instance = DagsterInstance.ephemeral()
    result = materialize([scored], instance=instance)
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert "evaluating version 7: 0/20 pairs (0%), ?pair/s, ? left" in messages
    assert any(m.startswith("evaluating version 7: 20/20 pairs (100%), ") for m in messages)

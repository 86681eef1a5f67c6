"""`serm bootstrap`: seed judgments from the panel's LLM judges (the fake OpenAI-compatible server of
tests/test_agents.py) on the pairs of ingested logs, then read by `serm ingest` like any judgments file."""

from datetime import date

import pandas as pd
import pytest
from typer.testing import CliRunner

from serm_dagster.bootstrap import BOOTSTRAP_FILE, BootstrapSettings, sample_shown_pairs
from serm_dagster.cli import app
from serm_dagster.storage import DeltaStore
from test_agents import FakeChatServer
from tests.conftest import write_logs_csv

CATALOG = "doc_id,language,title,description,attributes\nD0,en,Red running shoe,Mesh upper,\nD1,en,Blue sandal,,\n"
# the fake server answers by query: "good" -> label 3, "reasoning" -> label 2, "abstain" -> no label
DAYS = ["2026-01-01", "2026-01-02"]
LOGS = {day: [f"r{day}-{q}{d},{day}T10:00:00Z,s{q},{query},en,{doc},{d + 1},false,"
              for q, query in enumerate(["good", "reasoning", "abstain"])
              for d, doc in enumerate(["D0", "D1", "D9"])]  # D9 is not in the catalogue: never sent to the judges
        for day in DAYS}


@pytest.fixture()
def server():
    fake = FakeChatServer()
    yield fake
    fake.close()


def panel_file(path, server) -> str:
    judges = "".join(f"  - name: judge-{x}\n    base_url: {server.base_url}\n    model: model-{x}\n"
                     f"    api_key_env: null\n    timeout_s: 5\n" for x in "ab")
    path.write_text(f"judges:\n  - embedded: knowledge\n{judges}agreement:\n  min_voters: 2\n")
    return str(path)


def test_bootstrap_labels_shown_pairs_into_seed_judgments(home, spark, server, tmp_path):
    runner = CliRunner()
    panel = panel_file(tmp_path / "panel.yaml", server)
    missing = runner.invoke(app, ["bootstrap", "--panel", panel])
    assert missing.exit_code == 2 and "no logs ingested yet" in missing.output and "serm ingest" in missing.output

    for day, rows in LOGS.items():
        write_logs_csv(home / "landing" / "logs" / f"{day}.csv", rows)
    (home / "landing" / "catalog" / "catalog.csv").write_text(CATALOG)
    assert runner.invoke(app, ["ingest"]).exit_code == 0

    no_llm = runner.invoke(app, ["bootstrap"])  # the built-in panel: embedded judges only
    assert no_llm.exit_code == 2 and "has no LLM judges" in no_llm.output

    done = runner.invoke(app, ["bootstrap", "--panel", panel])
    assert done.exit_code == 0, done.output
    assert "4 of 6 pairs labelled" in done.output and "judge-a, judge-b" in done.output
    written = pd.read_csv(home / "landing" / "judgments" / BOOTSTRAP_FILE).sort_values(["query", "doc_id"])
    assert written.to_dict("records") == [
        {"query": q, "doc_id": d, "language": "en", "label": label, "split": "seed", "ts": "2026-01-02"}
        for q, label in (("good", 3), ("reasoning", 2)) for d in ("D0", "D1")]
    asked = {r["scenario"] for r in server.requests}
    assert asked == {"good", "reasoning", "abstain"} and {r["model"] for r in server.requests} == {"model-a", "model-b"}

    again = runner.invoke(app, ["bootstrap", "--panel", panel])
    assert again.exit_code == 2 and "--replace" in again.output
    calls = len(server.requests)
    assert runner.invoke(app, ["bootstrap", "--panel", panel, "--replace"]).exit_code == 0
    assert len(server.requests) == calls  # every answer came from the vote cache
    until = runner.invoke(app, ["bootstrap", "--panel", panel, "--replace", "--until", "2026-01-01"])
    assert until.exit_code == 0, until.output
    assert set(pd.read_csv(home / "landing" / "judgments" / BOOTSTRAP_FILE)["ts"]) == {"2026-01-01"}
    assert "not an ISO date" in runner.invoke(app, ["bootstrap", "--panel", panel, "--until", "soon"]).output

    # `serm ingest` reads them: the seed judgments the seed model trains on
    assert runner.invoke(app, ["ingest"]).exit_code == 0
    judgments = DeltaStore(home / "lakehouse").read_arrow("bronze/judgments").to_pandas()
    assert sorted(judgments.loc[judgments["split"] == "seed", "label"].tolist()) == [2, 2, 3, 3]


def test_sample_takes_whole_queries_best_placed_first():
    rows = [{"query": f"q{q}", "language": "en", "doc_id": f"d{d}", "date": date(2026, 1, 1 + day),
             "mean_position": float(5 - d)} for q in range(6) for d in range(5) for day in range(2)]
    impressions = pd.DataFrame(rows)
    sample = sample_shown_pairs(impressions, BootstrapSettings(pairs=7, per_query=2, seed=3))
    assert len(sample) == 7 and sample["query"].nunique() == 4  # 3 whole queries and one cut by the cap
    assert set(sample["doc_id"]) == {"d4", "d3"}  # the two best-placed documents of each query
    assert set(sample["ts"]) == {date(2026, 1, 2)}  # the last day each pair was shown
    assert sample.equals(sample_shown_pairs(impressions, BootstrapSettings(pairs=7, per_query=2, seed=3)))
    assert not sample.equals(sample_shown_pairs(impressions, BootstrapSettings(pairs=7, per_query=2, seed=4)))

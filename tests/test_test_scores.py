"""gold/test_scores: a model version scores each judged test pair once. A later evaluation on more pairs (the
evolving set grows with every window) scores only the new ones, and a pair whose document text changed, and gives
the same evaluation rows as scoring every pair afresh."""

from datetime import date, datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from assets.evaluation import TestPairs, pairs_digest, score_table, score_version
from assets.evaluation import test_pairs as read_test_pairs
from models.backbone import tiny_backbone
from models.evaluation import evaluate_on_test_sets
from models.inference import Scorer
from models.relevance import RelevanceModel
from serm_dagster.storage import DeltaStore
from spark_jobs.schemas import check_table
from spark_jobs.training import TestWindows

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tests/conftest.py


class Counting:
    """A real scorer that records which pairs it was asked to score."""

    def __init__(self, scorer: Scorer):
        self.scorer, self.seen = scorer, []

    def predict_proba(self, queries, docs, step="scoring"):
        self.seen += list(zip(queries, docs))
        return self.scorer.predict_proba(queries, docs, step)


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> Scorer:
    model, tokenizer = RelevanceModel.from_backbone(tiny_backbone(tmp_path_factory.mktemp("tiny")))
    return Scorer(model, tokenizer, device="cpu", batch_size=8, mixed_precision=False)


def judged(n: int, start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(start)
    words = ["red", "shoe", "lamp", "desk", "phone", "green", "cable"]
    rows = range(start, start + n)
    return pd.DataFrame({
        "query": [f"q{i // 4} " + " ".join(rng.choice(words, 2)) for i in rows], "language": "en",
        "doc_id": [f"d{i}" for i in rows], "doc_text": [" ".join(rng.choice(words, 6)) for _ in rows],
        "label": [i % 4 for i in rows], "test_set": ["static" if i % 3 else "evolving" for i in rows],
        "part": ["validation" if (i // 4) % 2 else "test" for i in rows]})


def as_test_pairs(pairs: pd.DataFrame) -> TestPairs:
    return TestPairs(pairs.reset_index(drop=True), None, 1, pairs_digest(pairs))


def evaluate(store: DeltaStore, scorer, pairs: pd.DataFrame):
    scored = score_version(store, lambda: scorer, as_test_pairs(pairs), "1", "champion", "run")
    table, replace = score_table(store, [scored])
    store.write("gold/test_scores", table, lineage={"test": "score cache"}, partition_by=["model_version"],
                replace=replace)
    return scored


def test_a_version_scores_each_pair_once(tmp_path, scorer):
    store = DeltaStore(tmp_path / "lakehouse")
    first = judged(24)
    counting = Counting(scorer)
    evaluate(store, counting, first)
    assert len(counting.seen) == len(first)

    # the next window: 12 pairs judged since, and one document's text changed
    grown = pd.concat([first, judged(12, start=24)], ignore_index=True)
    grown.loc[3, "doc_text"] = "a new title for this product"
    counting = Counting(scorer)
    again = evaluate(store, counting, grown)
    assert sorted(counting.seen) == sorted(zip(grown["query"][[3, *range(24, 36)]], grown["doc_text"][[3, *range(24, 36)]]))
    assert len(again.new_scores) == 13

    # what the cache gives is what scoring every pair afresh gives
    fresh = evaluate_on_test_sets(scorer, grown).sort_values(["test_set", "part", "slice_type", "slice", "metric"])
    cached = again.rows.sort_values(["test_set", "part", "slice_type", "slice", "metric"])
    assert cached["value"].to_numpy() == pytest.approx(fresh["value"].to_numpy(), nan_ok=True)
    assert (cached[["slice", "metric", "n_pairs"]].to_numpy() == fresh[["slice", "metric", "n_pairs"]].to_numpy()).all()

    # nothing new: no scoring at all, and the stored rows are kept, not repeated
    counting = Counting(scorer)
    evaluate(store, counting, grown)
    assert counting.seen == []
    stored = store.read_arrow("gold/test_scores").to_pandas()
    assert len(stored) == 24 + 13 and check_table("gold/test_scores", stored).empty


class CountingStore(DeltaStore):
    """A real Delta store that counts what Spark reads from it."""

    reads = 0

    def read_spark(self, *args, **kwargs):
        CountingStore.reads += 1
        return super().read_spark(*args, **kwargs)


def test_test_pairs_are_read_once_per_table_versions_and_windows(tmp_path, spark):
    store = CountingStore(tmp_path / "lakehouse")
    catalog = pa.table({"doc_id": ["d1", "d2"], "language": ["en", "en"], "title": ["red lamp", "desk"],
                        "description": [None, "oak"]})
    day = lambda d: datetime(2026, 1, d, tzinfo=timezone.utc)  # noqa: E731
    judgments = pa.table({"query": ["lamp", "lamp", "desk"], "language": ["en"] * 3, "doc_id": ["d1", "d2", "d2"],
                          "label": [3, 0, 3], "split": ["seed", "test", "test"], "ts": [day(2), day(1), day(5)]})
    store.write("bronze/catalog", catalog, lineage={})
    store.write("bronze/judgments", judgments, lineage={})
    windows = TestWindows(3, date(2026, 1, 5))
    first = read_test_pairs(spark, store, windows)
    assert CountingStore.reads == 2 and sorted(first["test_set"]) == ["evolving", "static"]
    read = first.copy()
    first.loc[0, "label"] = 9  # a caller's change does not reach the next reader
    assert read_test_pairs(spark, store, windows).equals(read)
    assert CountingStore.reads == 2  # the same versions and windows: not read again
    store.write("bronze/judgments", judgments.slice(0, 2), lineage={})  # a new version of the judgments
    assert len(read_test_pairs(spark, store, windows)) == 1 and CountingStore.reads == 4
    assert len(read_test_pairs(spark, store, TestWindows(3, date(2026, 1, 4)))) == 1 and CountingStore.reads == 6

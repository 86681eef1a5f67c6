"""The DuckDB analytics (sql/*.sql via serm_dagster.analytics) against small tables with known answers.

Every dataset is written as real Delta tables, run through ``materialize_analytics`` and read back
from the DuckDB file with a read-only connection, as a user of ``analytics.duckdb`` would.
The expected numbers are computed by hand in the comments (fractions), or for Krippendorff's alpha
and Fleiss' kappa also by plain Python implementations written here, independent of the SQL.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections import Counter, defaultdict
from fractions import Fraction as F

import duckdb
import pyarrow as pa
import pytest

from serm_dagster.analytics import (
    SOURCE_SCHEMAS,
    SOURCE_TABLES,
    SQL_DIR,
    list_analytics,
    materialize_analytics,
    register_tables,
    run_analytic,
    run_query,
)
from serm_dagster.storage import DeltaStore

REQUIRED = {
    "pairwise_kappa", "fleiss_kappa", "krippendorff_alpha", "acceptance_rate", "label_distribution",
    "agent_consensus_confusion", "agent_accuracy", "agent_cost_latency", "disagreement_queries",
}
FAMILY = {"en": "germanic", "de": "germanic", "es": "romance", "fr": "romance", "tr": "minor"}


# --- helpers -----------------------------------------------------------------------------------


def _schema(name: str, int32: bool) -> pa.Schema:
    schema = SOURCE_SCHEMAS[name]
    if not int32:
        return schema
    # what Spark writes for `int` columns
    return pa.schema([pa.field(f.name, pa.int32()) if f.type == pa.int64() else f for f in schema])


def build(root, int32: bool = False, **tables: list[dict]) -> duckdb.DuckDBPyConnection:
    """Write the given source tables (short name -> rows) as Delta, materialize, open read-only."""
    store = DeltaStore(root / "lakehouse")
    for name, rows in tables.items():
        store.write(SOURCE_TABLES[name], pa.Table.from_pylist(rows, schema=_schema(name, int32)), lineage={})
    db = root / "analytics.duckdb"
    rows = materialize_analytics(db, store)
    assert set(rows) >= REQUIRED
    return duckdb.connect(str(db), read_only=True)


def rows(con, sql: str) -> list[dict]:
    frame = con.execute(sql).df()
    return [{k: (None if _isnull(v) else v) for k, v in r.items()} for r in frame.to_dict("records")]


def _isnull(value) -> bool:
    try:
        return value is None or value != value or value is __import__("pandas").NA
    except (TypeError, ValueError):
        return False


def label_row(iteration, pair_id, agent, label, status="decided", query="q", language="en", doc_id=None):
    return {"iteration": iteration, "pair_id": pair_id, "query": query, "language": language,
            "language_family": FAMILY.get(language, "other"), "doc_id": doc_id or f"d-{pair_id}",
            "agent": agent, "label": label,
            "status": status, "paths_used": 3, "paths_agreeing": 2, "stopped_early": False, "rationale": "r"}


def approx(value, expected, rel=1e-9):
    return value == pytest.approx(float(expected), rel=rel, abs=1e-12)


# --- plumbing ----------------------------------------------------------------------------------


def test_sql_files_are_single_documented_statements():
    assert REQUIRED <= set(list_analytics())
    for name in list_analytics():
        text = (SQL_DIR / f"{name}.sql").read_text()
        assert text.startswith(f"-- {name}:"), f"{name}.sql must start with a comment naming it"
        statements = duckdb.extract_statements(text)
        assert len(statements) == 1 and statements[0].type == duckdb.StatementType.SELECT, name


def test_a_fresh_lakehouse_gives_empty_analytics_and_records_absent_sources(tmp_path):
    con = build(tmp_path)
    for name in REQUIRED:
        assert con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == 0, name
    # the source copies exist with the expected columns
    for name, schema in SOURCE_SCHEMAS.items():
        columns = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
        assert columns == schema.names
    refreshed = rows(con, "SELECT * FROM _analytics_refreshed WHERE kind = 'source' ORDER BY name")
    assert [r["name"] for r in refreshed] == sorted(SOURCE_TABLES)
    assert all(r["delta_version"] is None and r["rows"] == 0 for r in refreshed)


def test_analytic_columns_have_plain_types(run_db):
    # counts must be BIGINT: DuckDB's count_if/sum give HUGEINT, which pandas reads as float
    for name in REQUIRED:
        types = {column: kind for column, kind, *_ in run_db.execute(f"DESCRIBE {name}").fetchall()}
        assert "HUGEINT" not in types.values(), (name, types)


def test_refresh_records_delta_versions_and_replaces_tables(tmp_path):
    store = DeltaStore(tmp_path / "lakehouse")
    table = pa.Table.from_pylist([label_row(1, "p1", "A", 2), label_row(1, "p1", "B", 2)],
                                 schema=SOURCE_SCHEMAS["agent_labels"])
    store.write("gold/agent_labels", table, lineage={})
    store.write("gold/agent_labels", table, lineage={})  # version 1
    db = tmp_path / "analytics.duckdb"
    first = materialize_analytics(db, store)
    second = materialize_analytics(db, store)  # idempotent: CREATE OR REPLACE
    assert first == second and first["pairwise_kappa"] == 2  # iteration 1 + overall
    with duckdb.connect(str(db), read_only=True) as con:
        version = con.execute("SELECT delta_version, \"rows\" FROM _analytics_refreshed "
                              "WHERE name = 'agent_labels'").fetchall()
        assert version == [(1, 2)]
        assert con.execute("SELECT count(*) FROM agent_labels").fetchone()[0] == 2


def test_in_memory_registration_run_analytic_and_run_query(tmp_path):
    store = DeltaStore(tmp_path)
    store.write("gold/agent_labels", pa.Table.from_pylist(
        [label_row(1, "p1", "A", 2), label_row(1, "p1", "B", 3)], schema=SOURCE_SCHEMAS["agent_labels"]),
        lineage={})
    con = duckdb.connect()
    info = register_tables(con, store)
    assert info["agent_labels"]["delta_version"] == 0 and info["judgments"]["delta_version"] is None
    assert len(run_analytic(con, "pairwise_kappa")) == 2
    assert run_query(con, "SELECT count(*) AS n FROM agent_labels")["n"][0] == 2
    assert len(run_query(con, "FROM judgments")) == 0
    with pytest.raises(ValueError):
        run_query(con, "DROP TABLE agent_labels")
    with pytest.raises(KeyError):
        run_analytic(con, "nope")


def test_missing_columns_are_added_as_nulls(tmp_path):
    # an older agent_labels without language_family (and int32 ids, as Spark writes them)
    store = DeltaStore(tmp_path / "lakehouse")
    data = pa.table({"iteration": pa.array([1, 1], pa.int32()), "pair_id": ["p1", "p1"], "agent": ["A", "B"],
                     "label": pa.array([2, 2], pa.int32()), "status": ["decided", "decided"]})
    store.write("gold/agent_labels", data, lineage={})
    materialize_analytics(tmp_path / "a.duckdb", store)
    with duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True) as con:
        assert rows(con, "SELECT language_family, pairs_annotated FROM acceptance_rate "
                         "WHERE iteration = 1 AND language_family <> 'all'") == [
            {"language_family": "other", "pairs_annotated": 1}]


# --- pairwise Cohen's kappa ----------------------------------------------------------------------

# Iteration 1, agents A and B on 10 pairs (A label, B label):
#   (0,0) (0,0) (1,1) (1,2) (2,2) (2,2) (2,3) (3,3) (3,3) (0,1)
# agreements: 7 -> p_o = 7/10
# A marginals 0:3 1:2 2:3 3:2, B marginals 0:2 1:2 2:3 3:3
# p_e = (3*2 + 2*2 + 3*3 + 2*3) / 100 = 25/100;  kappa = (0.7 - 0.25) / 0.75 = 0.6
# quadratic: observed sum (x-y)^2 = 1 + 1 + 1 = 3 -> 3/10
#   expected sum_ij r_i c_j (i-j)^2 / n^2:
#     i=0 (r=3): 2*1 + 3*4 + 3*9 = 41 -> 123;  i=1 (r=2): 2*1 + 3*1 + 3*4 = 17 -> 34
#     i=2 (r=3): 2*4 + 2*1 + 3*1 = 13 -> 39;   i=3 (r=2): 2*9 + 2*4 + 3*1 = 29 -> 58
#     total 254 / 100 = 2.54;  kappa_w = 1 - 0.3 / 2.54 = 112/127
# Agent C decides pairs 1-3 (0, 0, 1) like A and B: kappa 1 with both. C abstains on 5-10 and
# "failed" on pair 4 with a stray label 3 that must be ignored.
# Iteration 2: A and B agree on two pairs (3,3), (0,0): p_o = 1, p_e = (1+1)/4 = 1/2, kappa 1.
# Overall A-B: n = 12, p_o = 9/12; A 0:4 1:2 2:3 3:3, B 0:3 1:2 2:3 3:4
#   p_e = (12 + 4 + 9 + 12) / 144 = 37/144;  kappa = (108 - 37) / (144 - 37) = 71/107
#   quadratic: observed 3/12; sx = 14+3 = 17, sy = 17+3 = 20, sxx = 32+9 = 41, syy = 41+9 = 50
#   expected = 91/12 - 2*17*20/144 = 1092/144 - 680/144 = 412/144; kappa_w = 1 - (36/144)/(412/144) = 94/103
PAIRS_AB = [(0, 0), (0, 0), (1, 1), (1, 2), (2, 2), (2, 2), (2, 3), (3, 3), (3, 3), (0, 1)]


@pytest.fixture(scope="module")
def kappa_db(tmp_path_factory):
    labels = []
    for i, (a, b) in enumerate(PAIRS_AB, start=1):
        labels += [label_row(1, f"p{i}", "A", a), label_row(1, f"p{i}", "B", b)]
        if i <= 3:
            labels.append(label_row(1, f"p{i}", "C", a))
        elif i == 4:
            labels.append(label_row(1, f"p{i}", "C", 3, status="failed"))
        else:
            labels.append(label_row(1, f"p{i}", "C", None, status="abstained"))
    for pair, (a, b) in {"p1": (3, 3), "p2": (0, 0)}.items():  # same pair ids, another iteration
        labels += [label_row(2, pair, "A", a), label_row(2, pair, "B", b)]
    return build(tmp_path_factory.mktemp("kappa"), agent_labels=labels)


def test_pairwise_kappa_by_hand(kappa_db):
    got = {(r["iteration"], r["agent_a"], r["agent_b"]): r for r in rows(kappa_db, "SELECT * FROM pairwise_kappa")}
    assert set(got) == {(1, "A", "B"), (1, "A", "C"), (1, "B", "C"), (2, "A", "B"),
                        (None, "A", "B"), (None, "A", "C"), (None, "B", "C")}
    ab = got[(1, "A", "B")]
    assert ab["n"] == 10
    assert approx(ab["observed_agreement"], F(7, 10)) and approx(ab["expected_agreement"], F(1, 4))
    assert approx(ab["kappa"], F(3, 5))
    assert approx(ab["observed_sq_disagreement"], F(3, 10)) and approx(ab["expected_sq_disagreement"], F(254, 100))
    assert approx(ab["kappa_quadratic"], F(112, 127))
    ac = got[(1, "A", "C")]
    assert ac["n"] == 3 and approx(ac["kappa"], 1) and approx(ac["expected_agreement"], F(5, 9))
    it2 = got[(2, "A", "B")]
    assert it2["n"] == 2 and approx(it2["kappa"], 1) and approx(it2["kappa_quadratic"], 1)
    overall = got[(None, "A", "B")]
    assert overall["n"] == 12 and approx(overall["kappa"], F(71, 107))
    assert approx(overall["kappa_quadratic"], F(94, 103))
    # the overall rows come last
    order = [r["iteration"] for r in rows(kappa_db, "SELECT iteration FROM pairwise_kappa")]
    assert order[-3:] == [None, None, None]


def test_pairwise_kappa_matches_sklearn(kappa_db):
    metrics = pytest.importorskip("sklearn.metrics")
    a, b = zip(*PAIRS_AB)
    row = rows(kappa_db, "SELECT * FROM pairwise_kappa WHERE iteration = 1 AND agent_b = 'B'")[0]
    assert approx(row["kappa"], metrics.cohen_kappa_score(a, b, labels=[0, 1, 2, 3]))
    assert approx(row["kappa_quadratic"], metrics.cohen_kappa_score(a, b, labels=[0, 1, 2, 3], weights="quadratic"))


def test_constant_labels_give_null_kappa(tmp_path):
    # both agents always say 2: p_e = 1 and the expected disagreement is 0 -> undefined, NULL
    labels = [label_row(1, f"p{i}", agent, 2) for i in range(3) for agent in "AB"]
    con = build(tmp_path, agent_labels=labels)
    row = rows(con, "SELECT * FROM pairwise_kappa WHERE iteration = 1")[0]
    assert row["observed_agreement"] == 1 and row["kappa"] is None and row["kappa_quadratic"] is None


# --- Fleiss' kappa -----------------------------------------------------------------------------

# Iteration 1, agents A, B, C (and D on one item).
# germanic: g1 0,0,0   g2 1,1,2   g3 2,2,2   g4 3,2,1   g5 3,3 (2 raters)   g6 0 (1 rater)
#   rater counts among items with >= 2: m=3 x4, m=2 x1 -> m = 3, items g1-g4, 1 excluded
#   P_i = (sum_j n_ij^2 - 3) / 6: g1 (9-3)/6 = 1, g2 (4+1-3)/6 = 1/3, g3 1, g4 (1+1+1-3)/6 = 0
#   p_bar = (7/3) / 4 = 7/12
#   12 ratings: 0:3 1:3 2:5 3:1 -> p_e = (9 + 9 + 25 + 1) / 144 = 11/36
#   kappa = (21/36 - 11/36) / (25/36) = 2/5
# romance: r1 1,1   r2 1,2   r3 0,0   r4 3,3,3 -> m=2 x3, m=3 x1 -> m = 2, items r1-r3
#   P_i = (sum n_ij^2 - 2) / 2: 1, 0, 1 -> p_bar = 2/3; 6 ratings 0:2 1:3 2:1 -> p_e = 14/36 = 7/18
#   kappa = (12/18 - 7/18) / (11/18) = 5/11
# minor: m1 0,1   m2 2,2,2,2 (A, B, C, D) -> tie 1 item each: the larger m = 4 wins
#   p_bar = 1, p_e = 1 -> kappa NULL
# all families: m=3 x5 (g1-g4, r4), m=2 x5 (g5, r1-r3, m1), m=4 x1 -> tie between 3 and 2: m = 3
#   P_i: 1, 1/3, 1, 0, 1 -> p_bar = (10/3) / 5 = 2/3
#   15 ratings 0:3 1:3 2:5 3:4 -> p_e = (9 + 9 + 25 + 16) / 225 = 59/225
#   kappa = (150/225 - 59/225) / (166/225) = 91/166
FLEISS_ITEMS = {
    ("germanic", "en"): [[0, 0, 0], [1, 1, 2], [2, 2, 2], [3, 2, 1], [3, 3], [0]],
    ("romance", "es"): [[1, 1], [1, 2], [0, 0], [3, 3, 3]],
    ("minor", "tr"): [[0, 1], [2, 2, 2, 2]],
}

# Fleiss (1971) as reproduced on Wikipedia ("Fleiss' kappa", worked example): 10 items, 14 raters,
# 5 categories (here labels 0-4): p_bar = 0.378, p_e = 0.2128, kappa = 0.210 (0.20993 exactly).
WIKIPEDIA_FLEISS = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def fleiss_python(items: list[list[int]]) -> tuple[float, float, float]:
    """Textbook Fleiss' kappa; every item must have the same number of ratings."""
    m = len(items[0])
    assert all(len(i) == m for i in items)
    counts = [Counter(i) for i in items]
    p_bar = sum((sum(c * c for c in cnt.values()) - m) / (m * (m - 1)) for cnt in counts) / len(items)
    total = Counter()
    for cnt in counts:
        total.update(cnt)
    p_e = sum((v / (len(items) * m)) ** 2 for v in total.values())
    return p_bar, p_e, (p_bar - p_e) / (1 - p_e)


@pytest.fixture(scope="module")
def fleiss_db(tmp_path_factory):
    labels = []
    for (family, language), items in FLEISS_ITEMS.items():
        for n, item in enumerate(items):
            for agent, label in zip("ABCD", item):
                labels.append(label_row(1, f"{family}{n}", agent, label, language=language))
            # an abstaining agent never counts as a rater
            labels.append(label_row(1, f"{family}{n}", "E", None, status="abstained", language=language))
    for n, row in enumerate(WIKIPEDIA_FLEISS):  # iteration 2, language 'de'
        ratings = [label for label, count in enumerate(row) for _ in range(count)]
        for r, label in enumerate(ratings):
            labels.append(label_row(2, f"w{n}", f"rater{r:02d}", label, language="de"))
    return build(tmp_path_factory.mktemp("fleiss"), int32=True, agent_labels=labels)


def test_fleiss_kappa_by_hand(fleiss_db):
    got = {(r["iteration"], r["language_family"]): r for r in rows(fleiss_db, "SELECT * FROM fleiss_kappa")}
    g = got[(1, "germanic")]
    assert (g["n_raters"], g["n_items"], g["n_items_2plus"], g["n_items_excluded"]) == (3, 4, 5, 1)
    assert approx(g["p_bar"], F(7, 12)) and approx(g["p_e"], F(11, 36)) and approx(g["kappa"], F(2, 5))
    r = got[(1, "romance")]
    assert (r["n_raters"], r["n_items"], r["n_items_excluded"]) == (2, 3, 1)
    assert approx(r["p_bar"], F(2, 3)) and approx(r["kappa"], F(5, 11))
    m = got[(1, "minor")]
    assert (m["n_raters"], m["n_items"]) == (4, 1) and m["kappa"] is None
    a = got[(1, "all")]
    assert (a["n_raters"], a["n_items"], a["n_items_2plus"]) == (3, 5, 11)
    assert approx(a["p_bar"], F(2, 3)) and approx(a["p_e"], F(59, 225)) and approx(a["kappa"], F(91, 166))
    # romance only occurs in iteration 1: the all-iterations row is the same
    assert approx(got[(None, "romance")]["kappa"], F(5, 11))


def test_fleiss_kappa_on_the_classic_example(fleiss_db):
    row = rows(fleiss_db, "SELECT * FROM fleiss_kappa WHERE iteration = 2 AND language_family = 'germanic'")[0]
    items = [[label for label, count in enumerate(r) for _ in range(count)] for r in WIKIPEDIA_FLEISS]
    p_bar, p_e, kappa = fleiss_python(items)
    assert row["n_raters"] == 14 and row["n_items"] == 10
    assert approx(row["p_bar"], p_bar) and approx(row["p_e"], p_e) and approx(row["kappa"], kappa)
    assert round(row["p_bar"], 3) == 0.378 and round(row["p_e"], 4) == 0.2128 and round(row["kappa"], 3) == 0.210


# --- Krippendorff's alpha ------------------------------------------------------------------------


def alpha_python(units: list[list[int]], metric: str) -> float:
    """Krippendorff's alpha straight from the definition: enumerate ordered value pairs per unit."""
    units = [u for u in units if len(u) >= 2]
    values = sorted({v for u in units for v in u})
    o = defaultdict(float)
    for u in units:
        for i, j in itertools.permutations(range(len(u)), 2):
            o[(u[i], u[j])] += 1 / (len(u) - 1)
    n_c = {c: sum(o[(c, k)] for k in values) for c in values}
    n = sum(n_c.values())

    def delta2(c, k):
        if metric == "nominal":
            return float(c != k)
        if metric == "interval":
            return float((c - k) ** 2)
        lo, hi = min(c, k), max(c, k)  # ordinal
        return (sum(n_c[g] for g in values if lo <= g <= hi) - (n_c[c] + n_c[k]) / 2) ** 2

    d_o = sum(o[(c, k)] * delta2(c, k) for c in values for k in values)
    d_e = sum(n_c[c] * n_c[k] * delta2(c, k) for c in values for k in values) / (n - 1)
    return 1 - d_o / d_e


# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the example with missing
# values: 4 observers, 12 units, values 1-5 (None = missing). Published: nominal 0.743,
# ordinal 0.815, interval 0.849. Unit 12 has one value and is not pairable.
KRIPPENDORFF_2011 = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def test_krippendorff_alpha_on_the_published_example(tmp_path):
    labels = []
    for agent, values in KRIPPENDORFF_2011.items():
        for unit, value in enumerate(values):
            status = "decided" if value is not None else "abstained"
            labels.append(label_row(1, f"u{unit}", agent, value, status=status))
    con = build(tmp_path, agent_labels=labels)
    row = rows(con, "SELECT * FROM krippendorff_alpha WHERE iteration = 1 AND language_family = 'germanic'")[0]
    units = [[v[i] for v in KRIPPENDORFF_2011.values() if v[i] is not None] for i in range(12)]
    assert row["n_units"] == 11 and row["n_values"] == 40
    for metric, published in (("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)):
        assert round(row[f"alpha_{metric}"], 3) == published, metric
        assert approx(row[f"alpha_{metric}"], alpha_python(units, metric)), metric


def test_krippendorff_ordinal_alpha_tiny_example_by_hand(tmp_path):
    # units: (0,0) (1,1) (0,1): coincidences o_00 = 2, o_11 = 2, o_01 = o_10 = 1; n_0 = n_1 = 3, n = 6
    # ordinal delta_01 = (n_0 + n_1) - (n_0 + n_1)/2 = 3 -> delta^2 = 9
    # D_o = (1 + 1) * 9 / 6 = 3;  D_e = 2 * 3 * 3 * 9 / (6 * 5) = 162/30 = 27/5
    # alpha = 1 - 3 / (27/5) = 1 - 15/27 = 4/9
    labels = []
    for unit, (a, b) in enumerate([(0, 0), (1, 1), (0, 1)]):
        labels += [label_row(1, f"u{unit}", "A", a), label_row(1, f"u{unit}", "B", b)]
    con = build(tmp_path, agent_labels=labels)
    row = rows(con, "SELECT * FROM krippendorff_alpha WHERE iteration IS NULL AND language_family = 'all'")[0]
    assert approx(row["observed_disagreement"], 3) and approx(row["expected_disagreement"], F(27, 5))
    assert approx(row["alpha_ordinal"], F(4, 9))


def test_krippendorff_alpha_matches_python_on_random_data_with_rollups(tmp_path):
    rng = random.Random(11)
    labels, units = [], defaultdict(list)  # (iteration, family) -> list of unit value lists
    for iteration in (1, 2):
        for language in ("en", "es", "tr"):
            for u in range(25):
                truth = rng.randint(0, 3)
                values = []
                for agent in "ABCD":
                    if rng.random() < 0.25:
                        labels.append(label_row(iteration, f"{language}{u}", agent, None, status="failed",
                                                language=language))
                        continue
                    value = min(3, max(0, truth + rng.choice([-1, 0, 0, 0, 1, 2])))
                    values.append(value)
                    labels.append(label_row(iteration, f"{language}{u}", agent, value, language=language))
                family = FAMILY[language]
                for key in ((iteration, family), (iteration, "all"), (None, family), (None, "all")):
                    units[key].append(values)
    con = build(tmp_path, agent_labels=labels)
    got = {(r["iteration"], r["language_family"]): r for r in rows(con, "SELECT * FROM krippendorff_alpha")}
    assert set(got) == set(units)
    for key, unit_values in units.items():
        pairable = [u for u in unit_values if len(u) >= 2]
        assert got[key]["n_units"] == len(pairable) and got[key]["n_values"] == sum(map(len, pairable))
        for metric in ("ordinal", "nominal", "interval"):
            assert approx(got[key][f"alpha_{metric}"], alpha_python(unit_values, metric), rel=1e-9), (key, metric)


# --- acceptance, label distribution, confusion, accuracy (one annotation run) -------------------

# Agents A, B, C; quorum 2/3 (so C can be outvoted). (A, B, C) labels, '-' = abstained, 'x' = failed:
# iteration 1
#   p1 en "Red  Shoes" d1   2 2 2    accepted 2
#   p2 en "blue hat"   d2   1 3 -    discarded: disagreement
#   p3 en "blue hat"   d3   2 - x    discarded: fewer than 2 decided (C failed, stray label 3)
#   p4 en "blue hat"   d4   1 1 -    discarded: other (not in consensus though agreeing)
#   p5 es "zapatos"    d5   0 0 1    accepted 0 (C outvoted)
#   p6 es "zapatos"    d6   3 3 x    accepted 3
# iteration 2
#   p1 en "red shoes"  d1   3 3 2    accepted 3 (C outvoted)
RUN = {
    1: [("p1", "en", "Red  Shoes", "d1", (2, 2, 2), 2), ("p2", "en", "blue hat", "d2", (1, 3, "-"), None),
        ("p3", "en", "blue hat", "d3", (2, "-", "x"), None), ("p4", "en", "blue hat", "d4", (1, 1, "-"), None),
        ("p5", "es", "zapatos", "d5", (0, 0, 1), 0), ("p6", "es", "zapatos", "d6", (3, 3, "x"), 3)],
    2: [("p1", "en", "red shoes", "d1", (3, 3, 2), 3)],
}
# Judgments: (query, language, doc, label, split, day). The pair red shoes/d1 is judged twice; the
# newest judgment (label 2, seed) wins over the older (label 0, test).
JUDGMENTS = [
    (" RED shoes", "en", "d1", 0, "test", 1), ("red   shoes", "en", "d1", 2, "seed", 5),
    ("blue hat", "en", "d2", 3, "test", 1), ("zapatos", "es", "d5", 1, "test", 1),
    ("zapatos", "es", "d6", 3, "test", 1), ("unlabelled", "en", "d9", 1, "test", 1),
]


@pytest.fixture(scope="module")
def run_db(tmp_path_factory):
    labels, consensus = [], []
    for iteration, pairs in RUN.items():
        for pair, language, query, doc, verdicts, accepted in pairs:
            for agent, verdict in zip("ABC", verdicts):
                if verdict == "-":
                    labels.append(label_row(iteration, pair, agent, None, "abstained", query, language, doc))
                elif verdict == "x":
                    labels.append(label_row(iteration, pair, agent, 3, "failed", query, language, doc))
                else:
                    labels.append(label_row(iteration, pair, agent, verdict, "decided", query, language, doc))
            if accepted is not None:
                agreeing = [a for a, v in zip("ABC", verdicts) if v == accepted]
                consensus.append({"iteration": iteration, "pair_id": pair, "query": query, "language": language,
                                  "language_family": FAMILY[language], "doc_id": doc, "label": accepted,
                                  "agreeing_agents": agreeing, "n_voters": 3, "rationale": "merged"})
    judgments = [{"query": q, "language": lang, "doc_id": d, "label": label, "split": split,
                  "ts": dt.datetime(2026, 1, day, tzinfo=dt.timezone.utc), "source_file": f"{split}.parquet",
                  "source_row": n + 1} for n, (q, lang, d, label, split, day) in enumerate(JUDGMENTS)]
    return build(tmp_path_factory.mktemp("run"), agent_labels=labels, consensus_labels=consensus,
                 judgments=judgments)


def test_acceptance_rate_by_hand(run_db):
    cols = ("pairs_annotated", "pairs_2plus_decided", "accepted", "acceptance_rate", "acceptance_rate_2plus_decided",
            "discarded", "discarded_disagreement", "discarded_few_voters", "discarded_other")
    got = {(r["iteration"], r["language_family"]): tuple(r[c] for c in cols)
           for r in rows(run_db, "SELECT * FROM acceptance_rate")}
    expected = {
        (1, "germanic"): (4, 3, 1, 1 / 4, 1 / 3, 3, 1, 1, 1),  # p1 accepted; p2, p3, p4 discarded
        (1, "romance"): (2, 2, 2, 1.0, 1.0, 0, 0, 0, 0),
        (1, "all"): (6, 5, 3, 3 / 6, 3 / 5, 3, 1, 1, 1),
        (2, "germanic"): (1, 1, 1, 1.0, 1.0, 0, 0, 0, 0),
        (2, "all"): (1, 1, 1, 1.0, 1.0, 0, 0, 0, 0),
        (None, "germanic"): (5, 4, 2, 2 / 5, 2 / 4, 3, 1, 1, 1),  # p1 counts once per iteration
        (None, "romance"): (2, 2, 2, 1.0, 1.0, 0, 0, 0, 0),
        (None, "all"): (7, 6, 4, 4 / 7, 4 / 6, 3, 1, 1, 1),
    }
    assert set(got) == set(expected)
    for key, values in expected.items():
        assert got[key] == pytest.approx(values), key


def test_a_pair_one_agent_alone_labelled_is_counted_apart(tmp_path):
    labels = [label_row(1, "p1", "A", 2), label_row(1, "p1", "B", 2), label_row(1, "p2", "A", 3),
              label_row(1, "p2", "B", None, "abstained"), label_row(1, "p3", "A", 1), label_row(1, "p3", "B", 0)]
    consensus = [{"iteration": 1, "pair_id": p, "query": "q", "language": "en", "language_family": FAMILY["en"],
                  "doc_id": f"d-{p}", "label": label, "agreeing_agents": agents, "n_voters": len(agents),
                  "rationale": "r"} for p, label, agents in (("p1", 2, ["A", "B"]), ("p2", 3, ["A"]))]
    con = build(tmp_path, agent_labels=labels, consensus_labels=consensus)
    row = rows(con, "SELECT * FROM acceptance_rate WHERE iteration IS NULL AND language_family = 'all'")[0]
    assert (row["pairs_annotated"], row["pairs_2plus_decided"], row["accepted"], row["accepted_alone"]) == (3, 2, 2, 1)
    assert approx(row["acceptance_rate"], 2 / 3) and approx(row["acceptance_rate_2plus_decided"], 1 / 2)
    assert (row["discarded_disagreement"], row["discarded_few_voters"], row["discarded_other"]) == (1, 0, 0)


def test_label_distribution_by_hand(run_db):
    got = {(r["source"], r["agent"], r["iteration"], r["label"]): (r["n"], r["share"])
           for r in rows(run_db, "SELECT * FROM label_distribution")}

    def check(key, counts, shares):
        assert [got[(*key, label)][0] for label in range(4)] == counts, key
        assert [got[(*key, label)][1] for label in range(4)] == pytest.approx(shares), key

    # consensus: iteration 1 -> 2, 0, 3; iteration 2 -> 3; all -> 0:1 2:1 3:2
    check(("consensus", None, 1), [1, 0, 1, 1], [1 / 3, 0, 1 / 3, 1 / 3])
    check(("consensus", None, 2), [0, 0, 0, 1], [0, 0, 0, 1])
    check(("consensus", None, None), [1, 0, 1, 2], [.25, 0, .25, .5])
    # agent A, iteration 1: 2 1 2 1 0 3 -> 0:1 1:2 2:2 3:1 of 6
    check(("agent", "A", 1), [1, 2, 2, 1], [1 / 6, 1 / 3, 1 / 3, 1 / 6])
    # agent C decided only p1 (2) and p5 (1) in iteration 1 (its failed label 3 does not count), 2 in it. 2
    check(("agent", "C", 1), [0, 1, 1, 0], [0, .5, .5, 0])
    check(("agent", "C", None), [0, 1, 2, 0], [0, 1 / 3, 2 / 3, 0])
    assert len(got) == 4 * (3 + 3 * 3)  # (consensus + agents A, B, C) x (it. 1, 2, all) x 4 labels
    first = rows(run_db, "SELECT source FROM label_distribution LIMIT 1")[0]["source"]
    assert first == "consensus"


def test_agent_consensus_confusion_by_hand(run_db):
    def table(agent, iteration_clause):
        return {(r["consensus_label"], r["agent_status"], r["agent_label"]): (r["n"], r["share_of_consensus"],
                                                                                r["agrees"])
                for r in rows(run_db, f"SELECT * FROM agent_consensus_confusion "
                                      f"WHERE agent = '{agent}' AND {iteration_clause}")}

    # C, iteration 1 on accepted p1 (2 vs 2), p5 (1 vs 0), p6 (failed vs 3)
    assert table("C", "iteration = 1") == {
        (2, "decided", 2): (1, 1.0, True), (0, "decided", 1): (1, 1.0, False), (3, "failed", None): (1, 1.0, False)}
    # C overall adds iteration 2 p1 (2 vs 3)
    assert table("C", "iteration IS NULL") == {
        (2, "decided", 2): (1, 1.0, True), (0, "decided", 1): (1, 1.0, False),
        (3, "failed", None): (1, 0.5, False), (3, "decided", 2): (1, 0.5, False)}
    # A agrees with every accepted label: 2, 0, 3 (iteration 1) and 3 (iteration 2)
    assert table("A", "iteration IS NULL") == {
        (0, "decided", 0): (1, 1.0, True), (2, "decided", 2): (1, 1.0, True), (3, "decided", 3): (2, 1.0, True)}


def test_agent_accuracy_by_hand(run_db):
    got = {(r["agent"], r["iteration"], r["split"], r["language_family"]): r
           for r in rows(run_db, "SELECT * FROM agent_accuracy")}
    # Agent A on judged pairs (label x, judged y): it1 p1 (2, 2) p2 (1, 3) p5 (0, 1) p6 (3, 3), it2 p1 (3, 2)
    #   n = 5, accuracy 2/5, MAE (0+2+1+0+1)/5 = 4/5, mean diff (0-2-1+0+1)/5 = -2/5
    #   x marginals 0:1 1:1 2:1 3:2, y marginals 1:1 2:2 3:2 -> p_e = (0 + 1 + 2 + 4)/25 = 7/25
    #   kappa = (10/25 - 7/25) / (18/25) = 1/6
    #   quadratic: observed 6/5; sx 9, sy 11, sxx 23, syy 27 -> expected 50/5 - 2*99/25 = 52/25
    #   kappa_w = 1 - (6/5) / (52/25) = 1 - 30/52 = 11/26
    a = got[("A", None, "all", "all")]
    assert a["n"] == 5 and approx(a["accuracy"], F(2, 5)) and approx(a["mean_abs_error"], F(4, 5))
    assert approx(a["mean_label_diff"], F(-2, 5)) and approx(a["kappa"], F(1, 6))
    assert approx(a["kappa_quadratic"], F(11, 26))
    # per split: seed = red shoes/d1 twice (2 vs 2, 3 vs 2) -> 1/2; test = p2, p5, p6 -> 1/3
    assert got[("A", None, "seed", "all")]["n"] == 2 and approx(got[("A", None, "seed", "all")]["accuracy"], F(1, 2))
    assert got[("A", None, "test", "all")]["n"] == 3 and approx(got[("A", None, "test", "all")]["accuracy"], F(1, 3))
    # per iteration and family
    assert got[("A", 2, "all", "all")]["n"] == 1 and got[("A", 2, "all", "all")]["accuracy"] == 0
    assert got[("A", None, "all", "romance")]["n"] == 2 and approx(got[("A", None, "all", "romance")]["accuracy"], .5)
    # the consensus: it1 p1 (2, 2) p5 (0, 1) p6 (3, 3), it2 p1 (3, 2) -> n 4, accuracy 1/2
    c = got[("(consensus)", None, "all", "all")]
    assert c["n"] == 4 and approx(c["accuracy"], F(1, 2))
    # C decided it1 p1 (2, 2), p5 (1, 1), it2 p1 (2, 2): all right
    assert got[("C", None, "all", "all")]["n"] == 3 and got[("C", None, "all", "all")]["accuracy"] == 1
    # the consensus rows come last
    assert rows(run_db, "SELECT agent FROM agent_accuracy")[-1]["agent"] == "(consensus)"


def test_agent_accuracy_is_empty_without_judgments(kappa_db):
    assert kappa_db.execute("SELECT count(*) FROM agent_accuracy").fetchone()[0] == 0


# --- cost and latency -----------------------------------------------------------------------------


def vote(iteration, pair, agent, path, latency, prompt, completion, status="ok", cached=False,
         backend="openai", model="gpt-4o"):
    return {"iteration": iteration, "pair_id": pair, "query": "q", "language": "en", "language_family": "germanic",
            "doc_id": "d", "agent": agent, "path": path, "label": 2 if status == "ok" else None, "status": status,
            "rationale": "r", "backend": backend, "model": model, "prompt_version": "v1", "config_key": "k",
            "latency_ms": latency, "prompt_tokens": prompt, "completion_tokens": completion,
            "error": "boom" if status == "failed" else None, "cached": cached}


def test_agent_cost_latency_by_hand(tmp_path):
    votes = [
        # A, iteration 1: calls with latency 100, 200, 300 (failed), 400 (abstain); one cached vote
        vote(1, "p1", "A", 0, 100.0, 10, 5), vote(1, "p1", "A", 1, 200.0, 10, 5),
        vote(1, "p2", "A", 0, 300.0, 20, 10, status="failed"),
        vote(1, "p2", "A", 1, 999.0, 50, 50, cached=True),  # cached: no cost, no latency
        vote(1, "p3", "A", 0, 400.0, 10, 0, status="abstain"),
        # A, iteration 2: only a cached answer
        vote(2, "p1", "A", 0, 50.0, 7, 7, cached=True),
        # B, another backend
        vote(1, "p1", "B", 0, 80.0, 3, 2, backend="local", model="qwen"),
    ]
    con = build(tmp_path, agent_votes=votes)
    got = {(r["iteration"], r["agent"]): r for r in rows(con, "SELECT * FROM agent_cost_latency")}
    a1 = got[(1, "A")]
    # calls 4, failed 1 -> 1/4; mean latency (100+200+300+400)/4 = 250
    # p95 (linear): position 0.95 * 3 = 2.85 -> 300 + 0.85 * 100 = 385
    # tokens over calls: prompt 10+10+20+10 = 50, completion 5+5+10+0 = 20; pairs p1 p2 p3
    assert (a1["votes"], a1["calls"], a1["cached_votes"], a1["failed_calls"], a1["abstains"]) == (5, 4, 1, 1, 1)
    assert approx(a1["failure_rate"], .25) and approx(a1["mean_latency_ms"], 250) and approx(a1["p95_latency_ms"], 385)
    assert (a1["prompt_tokens"], a1["completion_tokens"], a1["pairs"]) == (50, 20, 3)
    assert approx(a1["calls_per_pair"], F(4, 3)) and approx(a1["prompt_tokens_per_pair"], F(50, 3))
    assert approx(a1["completion_tokens_per_pair"], F(20, 3))
    a2 = got[(2, "A")]
    assert (a2["votes"], a2["calls"], a2["cached_votes"], a2["prompt_tokens"], a2["pairs"]) == (1, 0, 1, 0, 1)
    assert a2["failure_rate"] is None and a2["mean_latency_ms"] is None and a2["calls_per_pair"] == 0
    a = got[(None, "A")]  # pairs: it1 p1 p2 p3 + it2 p1 = 4
    assert (a["votes"], a["calls"], a["cached_votes"], a["pairs"]) == (6, 4, 2, 4)
    assert approx(a["mean_latency_ms"], 250) and approx(a["prompt_tokens_per_pair"], 12.5)
    b = got[(None, "B")]
    assert (b["backend"], b["model"], b["calls"]) == ("local", "qwen", 1) and approx(b["p95_latency_ms"], 80)
    assert [r["iteration"] for r in rows(con, "SELECT iteration FROM agent_cost_latency")][-2:] == [None, None]


# --- disagreement ranking -------------------------------------------------------------------------


def test_disagreement_queries_by_hand(run_db):
    # voted pairs (>= 2 decided): blue hat p2 (1,3 differ, spread 2) p4 (1,1);
    # red shoes it1 p1 (2,2,2), it2 p1 (3,3,2 spread 1); zapatos p5 (0,0,1 spread 1), p6 (3,3)
    # all three: 1 of 2 disagreeing -> tie on share, count and voted pairs: alphabetical
    got = rows(run_db, "SELECT * FROM disagreement_queries")
    assert [(r["rank"], r["query"]) for r in got] == [(1, "blue hat"), (2, "red shoes"), (3, "zapatos")]
    blue, red, zap = got
    assert (blue["voted_pairs"], blue["disagreeing_pairs"], blue["disagreement_share"]) == (2, 1, .5)
    assert (blue["mean_spread"], blue["max_spread"]) == (2, 2)
    assert [blue[f"labels_{k}"] for k in range(4)] == [0, 3, 0, 1]
    assert list(blue["disagreeing_doc_ids"]) == ["d2"] and list(blue["iterations"]) == [1]
    assert [red[f"labels_{k}"] for k in range(4)] == [0, 0, 4, 2] and list(red["iterations"]) == [1, 2]
    assert (zap["language"], zap["language_family"], zap["mean_spread"]) == ("es", "romance", 1)


def test_disagreement_queries_ranking_and_top_50(tmp_path):
    # 60 queries with 4 voted pairs each (labels 1 vs 2 where they disagree):
    #   q00-q09: 4/4 disagreeing (share 1)        q10-q29: 2/4 (share .5)
    #   q30-q49: 1/4 (share .25)                  q50-q59: 0/4 -> not listed
    # plus "solo" with 1/1 (share 1, but 1 pair): after q00-q09 (same share, fewer disagreeing pairs)
    # Half of each query's pairs spell it " QNN  ": normalized and merged with "qNN".
    labels = []

    def pair(query, pid, a, b):
        labels.extend([label_row(1, pid, "A", a, query=query), label_row(1, pid, "B", b, query=query)])

    for q in range(60):
        disagreeing = 4 if q < 10 else 2 if q < 30 else 1 if q < 50 else 0
        for p in range(4):
            pair(f"q{q:02d}" if p % 2 else f" Q{q:02d}  ", f"q{q}p{p}", 1, 2 if p < disagreeing else 1)
    pair("solo", "solo0", 0, 3)
    con = build(tmp_path, agent_labels=labels)
    got = rows(con, "SELECT * FROM disagreement_queries")
    assert len(got) == 50 and [r["rank"] for r in got] == list(range(1, 51))
    assert [r["query"] for r in got[:11]] == [f"q{q:02d}" for q in range(10)] + ["solo"]
    assert got[10]["max_spread"] == 3 and got[0]["voted_pairs"] == 4 and got[0]["disagreeing_pairs"] == 4
    assert [r["query"] for r in got[11:31]] == [f"q{q:02d}" for q in range(10, 30)]
    assert {r["disagreement_share"] for r in got[31:]} == {.25}
    assert [r["query"] for r in got[31:]] == [f"q{q:02d}" for q in range(30, 49)]  # cut at 50

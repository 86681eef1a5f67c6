"""Analytics stage: the agreement analytics in sql/, materialized by DuckDB into SERM_HOME/analytics.duckdb."""

from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from assets.annotation import AGENT_LABELS, AGENT_VOTES
from assets.ingest import BRONZE_JUDGMENTS
from assets.training import CONSENSUS_LABELS
from serm_dagster.analytics import connect, list_analytics, materialize_analytics, run_analytic
from serm_dagster.resources import LakehouseResource

AGREEMENT_ANALYTICS = AssetKey(["analytics", "agent_agreement"])


@asset(
    key=AGREEMENT_ANALYTICS,
    deps=[AGENT_VOTES, AGENT_LABELS, CONSENSUS_LABELS, BRONZE_JUDGMENTS],
    group_name="analytics",
    kinds={"duckdb", "sql"},
    owners=["team:serm"],
    code_version="1",
    description="How the annotator's agents agree, as DuckDB tables in SERM_HOME/analytics.duckdb (one per file in "
                "sql/): Cohen's kappa between agents, Fleiss' kappa and Krippendorff's alpha per iteration and "
                "language family, acceptance rate, label distribution, agent-versus-consensus confusion, agent "
                "accuracy against judged pairs, cost and latency per agent, the most disputed queries. "
                "`serm sql NAME` prints one; `duckdb SERM_HOME/analytics.duckdb` opens them all.",
)
def agent_agreement(context: AssetExecutionContext, lakehouse: LakehouseResource) -> MaterializeResult:
    paths, store = lakehouse.paths, lakehouse.store
    rows = materialize_analytics(paths.analytics_db, store)
    con = connect(store)
    try:
        previews = {f"{name}": MetadataValue.md(run_analytic(con, name).head(12).to_markdown(index=False))
                    for name in ("pairwise_kappa", "acceptance_rate", "agent_accuracy") if name in list_analytics()}
    finally:
        con.close()
    return MaterializeResult(metadata={"duckdb_file": MetadataValue.path(str(paths.analytics_db)),
                                       "rows_per_analytic": MetadataValue.json(rows), **previews})


analytics_assets = [agent_agreement]

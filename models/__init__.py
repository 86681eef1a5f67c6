"""The relevance model SERM evolves: torch and transformers only (no Dagster, no Spark)."""

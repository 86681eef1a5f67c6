"""The relevance model SERM evolves: torch and transformers only (no Dagster, no Spark)."""

from dataclasses import field


def about(default, description: str):
    """A dataclass field with its description: the plain settings dataclasses (here and in ``spark_jobs``) are the
    one definition of each setting, and the Dagster resources show this text for it."""
    return field(default=default, metadata={"description": description})

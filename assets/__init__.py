"""Dagster asset definitions, one module per stage of the SERM loop."""

import warnings

from dagster import BetaWarning

# single-run backfills (one Spark job for a range of days) are what we want; the beta note is noise
warnings.filterwarnings("ignore", category=BetaWarning, message=".*backfill_policy.*")

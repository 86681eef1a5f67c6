"""Daily partitions of the query stream (start configurable: ``SERM_PARTITIONS_START``)."""

import os

from dagster import DailyPartitionsDefinition

PARTITIONS_START = os.environ.get("SERM_PARTITIONS_START", "2024-01-01")

# end_offset=1: today's partition exists, so a file landing today can be ingested today.
daily_partitions = DailyPartitionsDefinition(start_date=PARTITIONS_START, end_offset=1)

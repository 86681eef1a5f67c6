"""Deterministic, drifting, multilingual product-search stream simulator.

``simulate(home, SimulationConfig(...))`` writes into ``home`` (SERM_HOME):

- ``landing/catalog/catalog.parquet``       doc_id, language, title, description, attributes (JSON)
- ``landing/logs/logs-YYYY-MM-DD.parquet``  one row per impression (query x shown result)
- ``landing/judgments/seed.parquet``, ``test.parquet``   graded 0-3 judgments (true labels)
- ``landing/knowledge/glossary.parquet``    taxonomy / synonyms, lagging the stream
- ``simulator/truth/truth.parquet``         hidden true label of every logged pair
- ``simulator/manifest.json``               config, windows, drift events, counts, statistics

The scenario ``no-category`` shows the same stream through another catalogue style (no category,
other attribute names, no glossary). ``replay.replay(home, judged.load_judged_set(...))`` writes a
judged set (ESCI, or any catalogue + judgments) as a drifting stream into the same files.
"""

import json
from pathlib import Path

from .config import SCENARIOS, DriftScenario, SimulationConfig, register_scenario
from .core import simulate
from .vocab import FAMILIES, FAMILY_OF, LANGUAGES

__all__ = [
    "SimulationConfig", "DriftScenario", "SCENARIOS", "register_scenario", "simulate",
    "load_manifest", "LANGUAGES", "FAMILIES", "FAMILY_OF",
]


def load_manifest(home: str | Path) -> dict:
    """The manifest of the last simulation written into ``home``."""
    return json.loads((Path(home) / "simulator" / "manifest.json").read_text(encoding="utf-8"))

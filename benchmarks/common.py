"""What the stream-scale benchmarks share: their data folder and a simulated stream sized by its newest window.

The benchmarks run as scripts (``python benchmarks/<name>.py``), so this folder is on ``sys.path`` and they
``import common``. Project modules are imported inside the functions: ``SERM_HOME`` must be set first.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

RESULTS_PER_QUERY = 10


def use_home(home: Path | None, prefix: str) -> Path:
    """Point ``SERM_HOME`` and the Dagster instance (``DAGSTER_HOME``) at ``home``, or at a new temporary folder
    named ``prefix...`` when it is None, never at the user's ./.serm; quiet the libraries as ``serm`` does. Returns
    the folder."""
    home = (home or Path(tempfile.mkdtemp(prefix=prefix))).resolve()
    os.environ["SERM_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster_home")
    from serm_dagster.cli import quiet_libraries
    from serm_dagster.settings import SermPaths

    quiet_libraries()  # MLflow's INFO lines and Hugging Face's progress bars, as the command line quiets them
    SermPaths.from_env(home).ensure()  # the Dagster instance's folder and its dagster.yaml
    return home


def simulate_window(home: Path, window_rows: int, window_days: int = 3, seed_days: int = 2,
                    seed_judgments: int = 1500, test_judgments: int = 300) -> None:
    """Write into ``home``'s landing/ a stream of ``seed_days`` days of history then a window of ``window_days``
    days holding about ``window_rows`` logged rows (one row per query and shown document), every day as busy."""
    from serm_dagster.simulator import SimulationConfig, simulate

    queries_per_day = -(-window_rows // (window_days * RESULTS_PER_QUERY))
    simulate(home, SimulationConfig(days=seed_days + window_days, queries_per_day=queries_per_day, seed=11,
                                    seed_days=seed_days, evolving_window_days=window_days,
                                    seed_judgments=seed_judgments, test_judgments=test_judgments,
                                    results_per_query=RESULTS_PER_QUERY))

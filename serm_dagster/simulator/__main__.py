"""``python -m serm_dagster.simulator --home .serm --days 14 ...``: write a simulated stream."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from .config import SCENARIOS, SimulationConfig
from .core import simulate


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m serm_dagster.simulator", description=__doc__)
    parser.add_argument("--home", default=os.environ.get("SERM_HOME", ".serm"))
    for f in dataclasses.fields(SimulationConfig):
        kw = {"choices": sorted(SCENARIOS)} if f.name == "scenario" else {}
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=f.default,
                            type=type(f.default), **kw)
    args = vars(parser.parse_args(argv))
    home = args.pop("home")
    summary = simulate(home, SimulationConfig(**args))
    brief = {k: summary[k] for k in ("home", "seed_period", "evolving_window", "elapsed_s")}
    brief["rows"] = {k: (sum(v.values()) if isinstance(v, dict) else v)
                     for k, v in summary["counts"]["rows"].items()}
    brief["label_distribution"] = summary["stats"]["label_distribution"]
    print(json.dumps(brief, indent=2))
    return summary


if __name__ == "__main__":
    main()

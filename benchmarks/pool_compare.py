"""One comparison over several replays of a small judged set: their evolving test queries pooled.

A judged set of a few dozen queries (ESCI's development part: 60) leaves a replay only a handful of evolving
test queries (5 there), and one query moves NDCG@1 by up to 20 points. Replaying the same set under other
replay seeds (``serm simulate --from-judgments DIR --seed N``) puts other queries on the late side, so each
replay's comparison is scored on other queries. This pools the ``gold/evolution_report`` of each replay's home
(``assets.comparison.pooled_reports``) and gives SERM minus self-training and minus the seed model as
``serm report`` does (evolving test part, last iteration, per query the difference averaged over training
seeds, paired bootstrap over queries), each (replay, query) one unit.

    python benchmarks/pool_compare.py HOME [HOME ...]

Each HOME has run ``serm evolve --compare`` (any training seeds). Nothing is trained or written here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from assets.comparison import EVOLUTION_REPORT, differences_text, paired_differences, pooled_reports
from serm_dagster.storage import DeltaStore
from serm_dagster.tables import table_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("homes", nargs="+", type=Path, help="SERM homes, one per replay")
    homes = [home.resolve() for home in parser.parse_args().homes]
    reports = {str(home): DeltaStore(home / "lakehouse").read_arrow(table_name(EVOLUTION_REPORT)).to_pandas()
               for home in homes}
    for home, rows in reports.items():
        print(f"{home}:\n  " + differences_text(paired_differences(rows)).replace("\n", "\n  "))
    pooled = paired_differences(pooled_reports(reports))
    print(f"pooled over {len(homes)} replays:\n  " + differences_text(pooled).replace("\n", "\n  "))


if __name__ == "__main__":
    main()

"""Benchmark: the service layer with PostgreSQL's cached generic plans against fresh plans.

    uv run python bench/plan_cache_mode.py [--pairs 8] [--records 50000] [--accounts 500]

Every ledger session runs with `plan_cache_mode=force_custom_plan` (docs/operations.md: a
generic plan cached while a table was empty stayed a sequential scan as it grew). This measures
what planning every statement costs on the hot path: `Ledger.record_usage_batch`, batches of
1000, each round in a fresh database on one embedded PostgreSQL (fsync on), in pairs of one
round under `plan_cache_mode=auto` (PostgreSQL's default: generic plans after five executions)
and one under `force_custom_plan`, alternating which goes first. Prints each pair's ratio
(custom / auto) and their median. The auto rounds start on empty tables, so they may meet the
cliff itself; a pair where auto fell below `CLIFF_RATE` is shown and left out of the median, so
that the figure is planning's cost, not the cliff's.
"""

from __future__ import annotations

import argparse
import os
import statistics

from ingest_common import bench_servers, machine
from ingest_sustained import bench_service
from rich.console import Console

from adapters.runtime.settings import POSTGRES_OPTIONS_VARIABLE

console = Console()
MODES = ("auto", "force_custom_plan")
PAIRS_MAX = 30
# An auto round this slow met the cached-plan cliff (~1,000 records/s when it did).
CLIFF_RATE = 5_000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--accounts", type=int, default=500)
    args = parser.parse_args()
    if not 1 <= args.pairs <= PAIRS_MAX:
        parser.error(f"--pairs must be 1 to {PAIRS_MAX}, got {args.pairs}")
    console.print(f"machine: {machine()}")
    ratios = []
    with bench_servers() as servers:
        for pair in range(args.pairs):
            rates = {}
            order = MODES if pair % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                # libpq reads it at each connect; the ledger keeps one that names the mode.
                os.environ[POSTGRES_OPTIONS_VARIABLE] = f"-c plan_cache_mode={mode}"
                rates[mode] = bench_service(servers.database(f"plans_{pair}_{mode}"),
                                            args.accounts, args.records, warm=False).rate
            ratio = rates["force_custom_plan"] / rates["auto"]
            cliff = rates["auto"] < CLIFF_RATE
            if not cliff:
                ratios.append(ratio)
            console.print(f"pair {pair + 1} ({order[0]} first): auto {rates['auto']:,.0f}, "
                          f"force_custom_plan {rates['force_custom_plan']:,.0f} records/s, "
                          f"ratio {ratio:.3f}" + ("  (auto met the cliff: left out)" if cliff
                                                  else ""))
    if ratios:
        console.print(f"force_custom_plan / auto, median of {len(ratios)} pairs: "
                      f"{statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()

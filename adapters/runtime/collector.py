"""The cyclic garbage collector's settings for the processes that record usage or project it.

CPython frees almost every object of the usage path by reference counting; the cyclic collector
only finds reference cycles, and it runs whenever allocations of container objects outnumber
deallocations by its youngest generation's threshold (700 by default). A consumer draining a
backlog holds up to partitions x 2 x batch size deliveries (each a message, a header dict and a
record), so with the default every few dozen records a collection scanned much of that live
set again. Measured (issue 10, 2-core VM, BENCHMARKS.md): `bench/bus_path.py`, six alternating
rounds, the bus path (feed + decode) took a median 34.4 us of CPU per record with these settings
against 40.3 us with CPython's defaults, lower in every round; in `bench/ingest_sustained.py`
the consumer processes' CPU per record fell 5-22% in eight same-run comparisons. Projection
catch-up, which holds whole pages of events alive, gained the most: `bench/projections_catchup.py`
(200,000 events, three alternating pairs) 32,600-37,100 events/s against 21,700-26,100.

`ledger replay` and `ledger audit verify` read the whole log too: 7-19% and 14-23% less time on a
200,000-event log (two alternating pairs each).

`ledger serve` (and each of its HTTP workers): `POST /v1/usage` parses, decodes and records
whole batches, as the consumer does: `bench/http_usage.py`, three alternating pairs with the
baseline under the same settings, 11,245-11,965 against 9,366-10,222 records/s (0.54-0.55x the
service layer against 0.45-0.47x); reads (`bench/http_reads.py --wrk --paced 500`) unchanged.

Used by `ledger consume`, `ledger up` (the consumer, the projections and, with one worker, the
HTTP API run in it), `ledger serve`, `ledger project`, `ledger replay` and `ledger audit verify`.

`tune_collector()`:
- freezes what exists at start-up (modules, pydantic models, settings: alive for the whole
  process), so no full collection scans it again;
- raises the youngest generation's threshold to `YOUNG_GENERATION_ALLOCATIONS`. Cycles are still
  collected, only less often: between collections at most that many net container allocations
  can accumulate as cyclic garbage (a few tens of MiB at worst; `bench/ingest_latency.py`
  measured `ledger consume` at 82 MiB steady and 112 MiB at the peak of a 10x burst, as before).
"""

from __future__ import annotations

import gc

# Net container allocations between two collections of the youngest generation (default 700).
YOUNG_GENERATION_ALLOCATIONS = 100_000


def tune_collector() -> None:
    """Freeze start-up's objects and collect the youngest generation less often (see above)."""
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_ALLOCATIONS, middle, oldest)

"""`ledger replay`: rebuild every read model from the log and prove it equals the live one.

1. Open a consistent snapshot of the live read models (`ViewReader.snapshot`) and take their
   tracking position P: every later read through it sees the live tables exactly as they were at
   P, even while the projections keep writing.
2. Rebuild into a fresh store (made by the factory the caller passes: a new schema in
   PostgreSQL, a new store in memory) with the same runner, from position 0 up to exactly P.
3. Stream both sides table by table in key order (`ComparableViews.table_rows`) into a SHA-256
   per table; the canonical hash is the SHA-256 of the per-table hashes. The first differing rows
   are kept to show.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import zip_longest

from projections.decoding import EventDecoder
from projections.ports import ComparableViews, NotificationLog, ReplayTarget
from projections.runner import ProjectionRunner
from projections.views import READ_MODEL_TABLES

DIFFERENCES_SHOWN_MAX = 5


@dataclass
class TableComparison:
    table: str
    live_rows: int = 0
    replay_rows: int = 0
    live_hash: str = ""
    replay_hash: str = ""
    differences: list[tuple[str | None, str | None]] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return self.live_hash == self.replay_hash and self.live_rows == self.replay_rows


@dataclass
class ReplayReport:
    position: int
    tables: list[TableComparison]

    @property
    def equal(self) -> bool:
        return all(t.equal for t in self.tables)

    def canonical_hash(self, side: str) -> str:
        digest = hashlib.sha256()
        for table in self.tables:
            digest.update(f"{table.table}:{getattr(table, side + '_hash')}\n".encode())
        return digest.hexdigest()


def compare_tables(live_rows: Iterator[str], replay_rows: Iterator[str],
                   table: str) -> TableComparison:
    result = TableComparison(table)
    live_digest, replay_digest = hashlib.sha256(), hashlib.sha256()
    for live, replay in zip_longest(live_rows, replay_rows):
        if live is not None:
            result.live_rows += 1
            live_digest.update(live.encode() + b"\n")
        if replay is not None:
            result.replay_rows += 1
            replay_digest.update(replay.encode() + b"\n")
        if live != replay and len(result.differences) < DIFFERENCES_SHOWN_MAX:
            result.differences.append((live, replay))
    result.live_hash, result.replay_hash = live_digest.hexdigest(), replay_digest.hexdigest()
    return result


class ReplayShortError(RuntimeError):
    """The log ends before the position the live read models reflect."""


def replay_and_compare(live: ComparableViews, new_target: Callable[[], ReplayTarget],
                       log: NotificationLog, decoder: EventDecoder,
                       on_start: Callable[[int], None] | None = None,
                       on_batch: Callable[[int], None] | None = None) -> ReplayReport:
    """Rebuild the read models into `new_target()` up to the live position and compare."""
    with live.snapshot() as (position, _):
        if on_start is not None:
            on_start(position)
        target = new_target()
        try:
            runner = ProjectionRunner(log, target, decoder)
            runner.catch_up(stop_position=position, on_batch=on_batch)
            if runner.position != position:
                raise ReplayShortError(
                    f"replay reached position {runner.position}, not the live {position}: "
                    "the log ends before the live read models do")
            with target.snapshot():
                tables = [compare_tables(live.table_rows(table), target.table_rows(table), table)
                          for table in READ_MODEL_TABLES]
        finally:
            target.close()
    return ReplayReport(position, tables)

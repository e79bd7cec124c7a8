"""`ledger audit verify` and `ledger audit export`.

Verify walks the stored events and the audit trail side by side, by log position:

- each stored event must decode through the Ledger's mapper (else: unreadable);
- each audited event must still be in the log (else: removed), under the same aggregate id and
  version (else: moved), with the same bytes (the SHA-256 of topic and state must equal the
  digest taken when it was audited; else: changed);
- each audit row's hash must equal H(previous row's hash, every other column of the row: position,
  time, team, aggregate, version, type, actor, summary, balances, digest), and the last one the
  chain head kept with the tracking position (else: the audit trail was altered at that row);
- an event at or below the audited position without an audit row was inserted afterwards.
Positions missing from both the log and the audit trail are gaps the database left when an
inserting transaction rolled back; they are counted, not treated as tampering.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any
from uuid import UUID

import psycopg

from adapters.postgres.view_store import EVENTS_TABLE, LIVE_SCHEMA
from adapters.postgres.view_writes import TRACKING_NAME
from projections.decoding import EventDecoder, LogEntry
from projections.fold import GENESIS_HASH, audit_row_bytes, event_digest, link_hash

FETCH_ROWS = 5000
PROBLEMS_KEPT_MAX = 1000

EXPORT_COLUMNS = ("position", "recorded_at", "team_id", "aggregate_id", "aggregate_version",
                  "event_type", "actor", "summary", "balance_before_nanos",
                  "balance_after_nanos", "event_digest", "hash")


@dataclass(frozen=True)
class Problem:
    position: int
    kind: str  # unreadable, removed, moved, changed, chain_broken, unaudited, head_mismatch
    aggregate_id: UUID | None
    detail: str

    def __str__(self) -> str:
        return f"position {self.position} [{self.kind}] aggregate {self.aggregate_id}: " \
               f"{self.detail}"


@dataclass
class VerifyReport:
    events: int = 0
    audit_rows: int = 0
    audited_position: int = 0
    gaps: int = 0
    problems: list[Problem] = field(default_factory=list)
    problems_total: int = 0

    @property
    def ok(self) -> bool:
        return self.problems_total == 0

    def add(self, problem: Problem) -> None:
        self.problems_total += 1
        if len(self.problems) < PROBLEMS_KEPT_MAX:
            self.problems.append(problem)


def _stream(conn: psycopg.Connection[Any], name: str, query: str,
            params: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    with conn.cursor(name=name, binary=True) as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(query, params)
        yield from cur


def verify(database_url: str, decoder: EventDecoder,
           on_progress: Callable[[int], None] | None = None) -> VerifyReport:
    report = VerifyReport()
    with psycopg.connect(database_url) as conn_events, psycopg.connect(database_url) as conn_audit:
        conn_audit.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        tracking = conn_audit.execute(
            f"SELECT notification_id, audit_head FROM {LIVE_SCHEMA}.tracking WHERE name = %s",
            (TRACKING_NAME,)).fetchone()
        audited_position, chain_head = (int(tracking[0]), bytes(tracking[1])) if tracking \
            else (0, GENESIS_HASH)
        report.audited_position = audited_position
        events = _stream(conn_events, "verify_events",
                         "SELECT notification_id, originator_id, originator_version, topic, state "
                         f"FROM public.{EVENTS_TABLE} ORDER BY notification_id")
        audit = _stream(conn_audit, "verify_audit",
                        f"SELECT {', '.join(EXPORT_COLUMNS)} "
                        f"FROM {LIVE_SCHEMA}.audit WHERE position <= %s ORDER BY position",
                        (audited_position,))
        previous_hash = GENESIS_HASH
        last_position = 0
        event = next(events, None)
        row = next(audit, None)
        while event is not None or row is not None:
            position = min(x[0] for x in (event, row) if x is not None)
            if position > last_position + 1:
                report.gaps += position - last_position - 1
            last_position = position
            entry = LogEntry._make(event) if event is not None and event[0] == position else None
            audited = row if row is not None and row[0] == position else None
            if entry is not None:
                report.events += 1
                _check_readable(report, decoder, entry)
                if audited is None and position <= audited_position:
                    report.add(Problem(position, "unaudited", entry.originator_id,
                                       "event is in the log but not in the audit trail: it was "
                                       "inserted after the fact, or its audit row was removed"))
                event = next(events, None)
                if on_progress is not None and report.events % FETCH_ROWS == 0:
                    on_progress(FETCH_ROWS)
            if audited is not None:
                report.audit_rows += 1
                previous_hash = _check_audited(report, entry, audited, previous_hash)
                row = next(audit, None)
        if previous_hash != chain_head:
            report.add(Problem(audited_position, "head_mismatch", None,
                               f"audit chain ends in {previous_hash.hex()}, but the read models "
                               f"recorded {chain_head.hex()} as its head"))
    return report


def _check_readable(report: VerifyReport, decoder: EventDecoder, entry: LogEntry) -> None:
    """The event decodes as the projections decode it: through the application's mapper, or
    for `UsageRecorded` the checked fast path (equal to the mapper, tested; anything it does not
    recognise goes to the mapper)."""
    try:
        decoder.decode(entry)
    except Exception as error:
        report.add(Problem(entry.position, "unreadable", entry.originator_id,
                           f"version {entry.originator_version} ({entry.topic}) does not "
                           f"decode: {error}"))


def _check_audited(report: VerifyReport, entry: LogEntry | None, audited: tuple[Any, ...],
                   previous_hash: bytes) -> bytes:
    (position, recorded_at, team_id, aggregate_id, version, event_type, actor, summary,
     before, after, digest, stored_hash) = audited
    digest, stored_hash = bytes(digest), bytes(stored_hash)
    if entry is None:
        report.add(Problem(position, "removed", aggregate_id,
                           f"audited event (version {version}) is no longer in the log"))
    elif (entry.originator_id, entry.originator_version) != (aggregate_id, version):
        report.add(Problem(position, "moved", entry.originator_id,
                           f"log holds version {entry.originator_version} of "
                           f"{entry.originator_id}, audit recorded version {version} of "
                           f"{aggregate_id}"))
    else:
        recomputed = event_digest(entry)
        if recomputed != digest:
            report.add(Problem(position, "changed", aggregate_id,
                               f"stored bytes of version {version} ({entry.topic}) changed "
                               f"since audited: digest {recomputed.hex()[:16]}..., audited "
                               f"{digest.hex()[:16]}..."))
    expected = link_hash(previous_hash, audit_row_bytes(
        position, recorded_at, team_id, aggregate_id.bytes, version, event_type, actor, summary,
        None if before is None else int(before), None if after is None else int(after), digest))
    if expected != stored_hash:
        report.add(Problem(position, "chain_broken", aggregate_id,
                           "audit row's hash does not follow from its columns and the row "
                           "before it: this row was altered (or a row before it removed)"))
    return stored_hash


def team_audit_rows(database_url: str, team_id: UUID) -> Iterator[dict[str, Any]]:
    with psycopg.connect(database_url) as conn, conn.cursor(name="audit_export") as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(f"SELECT {', '.join(EXPORT_COLUMNS)} FROM {LIVE_SCHEMA}.audit "
                    "WHERE team_id = %s ORDER BY position", (team_id,))
        for row in cur:
            yield dict(zip(EXPORT_COLUMNS, row, strict=True))


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if value is None or isinstance(value, bool | int | str):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "as_integer_ratio") and not isinstance(value, float):
        return int(value)  # numeric money columns: Decimal with no fraction
    return str(value)


def export(rows: Iterator[dict[str, Any]], out: IO[str], fmt: str) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(EXPORT_COLUMNS)
        for row in rows:
            writer.writerow(["" if v is None else _plain(v) for v in row.values()])
            count += 1
    elif fmt == "jsonl":
        for row in rows:
            out.write(json.dumps({k: _plain(v) for k, v in row.items()}) + "\n")
            count += 1
    else:
        raise ValueError(f"export format must be csv or jsonl, not {fmt!r}")
    return count

"""`ledger audit verify`: prove the audit trail still matches the log, on two ports.

Walks the stored events (a `LogReader`) and the audit trail (an `AuditTrail`) side by side, by log
position:

- each stored event must decode as the projections decode it (else: unreadable);
- each audited event must still be in the log (else: removed), under the same aggregate id and
  version (else: moved), with the same bytes (the SHA-256 of topic and state must equal the
  digest taken when it was audited; else: changed);
- each audit row's hash must equal H(previous row's hash, every other column of the row), and the
  last one the chain head kept with the tracking position (else: the trail was altered there);
- an event at or below the audited position without an audit row was inserted afterwards.
Positions missing from both the log and the audit trail are gaps the database left when an
inserting transaction rolled back; they are counted, not treated as tampering.

Each aggregate's versions must also follow one another along the log (1, 2, 3...): an event
whose version does not follow the one before it of the same aggregate is a `version_gap` (an
event removed before it, or a writer that stored an event on top of one it never stored; such
an aggregate cannot be loaded). The walk keeps the last version of every aggregate it met.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from uuid import UUID

from projections.audit_chain import GENESIS_HASH, AuditRow, event_digest, expected_hash
from projections.decoding import LogEntry
from projections.ports import AuditTrail, Decoder, LogReader

# Events read from the log per page (and reported to `on_progress` per page).
EVENTS_PAGE_SIZE = 5000
PROBLEMS_KEPT_MAX = 1000


@dataclass(frozen=True)
class Problem:
    position: int
    kind: str  # unreadable, removed, moved, changed, chain_broken, unaudited, head_mismatch,
    # version_gap
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


def _every_event(log: LogReader) -> Iterator[LogEntry]:
    position = 0
    while page := log.read_after(position, EVENTS_PAGE_SIZE):
        yield from page
        position = page[-1].position


def verify_audit(log: LogReader, trail: AuditTrail, decoder: Decoder,
                 on_progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check every stored event and every audit row; the report lists what is wrong."""
    report = VerifyReport()
    audited_position, chain_head = trail.audited()
    report.audited_position = audited_position
    events = _every_event(log)
    audit = iter(trail.audit_rows(audited_position))
    previous_hash = GENESIS_HASH
    last_position = 0
    versions: dict[UUID, int] = {}  # each aggregate's last version met in the log
    entry, row = next(events, None), next(audit, None)
    while entry is not None or row is not None:
        position = min(x.position for x in (entry, row) if x is not None)
        if position > last_position + 1:
            report.gaps += position - last_position - 1
        last_position = position
        stored = entry if entry is not None and entry.position == position else None
        audited = row if row is not None and row.position == position else None
        if stored is not None:
            report.events += 1
            _check_readable(report, decoder, stored)
            _check_version_follows(report, versions, stored)
            if audited is None and position <= audited_position:
                report.add(Problem(position, "unaudited", stored.originator_id,
                                   "event is in the log but not in the audit trail: it was "
                                   "inserted after the fact, or its audit row was removed"))
            entry = next(events, None)
            if on_progress is not None and report.events % EVENTS_PAGE_SIZE == 0:
                on_progress(EVENTS_PAGE_SIZE)
        if audited is not None:
            report.audit_rows += 1
            previous_hash = _check_audited(report, stored, audited, previous_hash)
            row = next(audit, None)
    if previous_hash != chain_head:
        report.add(Problem(audited_position, "head_mismatch", None,
                           f"audit chain ends in {previous_hash.hex()}, but the read models "
                           f"recorded {chain_head.hex()} as its head"))
    return report


def _check_readable(report: VerifyReport, decoder: Decoder, entry: LogEntry) -> None:
    """The event decodes as the projections decode it: through the application's mapper, or
    for `UsageRecorded` the checked fast path (equal to the mapper, tested; anything it does not
    recognise goes to the mapper)."""
    try:
        decoder.decode(entry)
    except Exception as error:
        report.add(Problem(entry.position, "unreadable", entry.originator_id,
                           f"version {entry.originator_version} ({entry.topic}) does not "
                           f"decode: {error}"))


def _check_version_follows(report: VerifyReport, versions: dict[UUID, int],
                           entry: LogEntry) -> None:
    before = versions.get(entry.originator_id, 0)
    if entry.originator_version != before + 1:
        report.add(Problem(entry.position, "version_gap", entry.originator_id,
                           f"version {entry.originator_version} follows version {before} of "
                           "this aggregate in the log; the aggregate cannot be loaded"))
    versions[entry.originator_id] = entry.originator_version


def _check_audited(report: VerifyReport, entry: LogEntry | None, row: AuditRow,
                   previous_hash: bytes) -> bytes:
    position, aggregate_id, version = row.position, row.aggregate_id, row.aggregate_version
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
        if recomputed != row.event_digest:
            report.add(Problem(position, "changed", aggregate_id,
                               f"stored bytes of version {version} ({entry.topic}) changed "
                               f"since audited: digest {recomputed.hex()[:16]}..., audited "
                               f"{row.event_digest.hex()[:16]}..."))
    if expected_hash(previous_hash, row) != row.hash:
        report.add(Problem(position, "chain_broken", aggregate_id,
                           "audit row's hash does not follow from its columns and the row "
                           "before it: this row was altered (or a row before it removed)"))
    return row.hash

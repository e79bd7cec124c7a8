"""The audit chain: one row per event, each hashed over every column and the row before it.

`event_digest = SHA-256(topic || 0x00 || state)` fixes the stored bytes of the event; the row's
`hash = SHA-256(previous hash || every other column of the row)` from a zero genesis links the
rows, so an edit of any column, or a removed row, breaks the chain at its position. The fold
(`projections.fold`) makes rows with `audit_row`; the auditor (`projections.audit_verify`)
recomputes them with `audit_row_bytes` and `link_hash` from what a store gives back.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

from projections.decoding import LogEntry

GENESIS_HASH = bytes(32)


class AuditRow(NamedTuple):
    """One audit row, fields in the table's column order (written with COPY as is)."""

    position: int
    recorded_at: datetime
    team_id: UUID | None
    aggregate_id: UUID
    aggregate_version: int
    event_type: str
    actor: str | None
    summary: str
    balance_before_nanos: int | None
    balance_after_nanos: int | None
    event_digest: bytes
    hash: bytes


def event_digest(entry: LogEntry) -> bytes:
    """A digest of the stored event's bytes exactly as stored: topic, a zero byte, state."""
    prefix = _digest_prefixes.get(entry.topic)
    if prefix is None:
        prefix = _digest_prefixes[entry.topic] = hashlib.sha256(entry.topic.encode() + b"\x00")
    digest = prefix.copy()
    digest.update(entry.state)
    return digest.digest()


# The digest of each topic's prefix, taken once: topics are few, events many.
_digest_prefixes: dict[str, Any] = {}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_ABSENT = b"\x00"
_PRESENT = b"\x01"


def _text_bytes(value: str | None) -> bytes:
    """A nullable text value, length-prefixed so that no two rows share an encoding."""
    if value is None:
        return _ABSENT
    encoded = value.encode()
    return _PRESENT + len(encoded).to_bytes(4, "big") + encoded


def audit_row_bytes(position: int, recorded_at: datetime, team_id: UUID | None,
                    aggregate_id: bytes, aggregate_version: int, event_type: str,
                    actor: str | None, summary: str, balance_before_nanos: int | None,
                    balance_after_nanos: int | None, digest: bytes) -> bytes:
    """Every column of an audit row but its hash, in one unambiguous encoding.

    Fixed-width fields first (position, aggregate id bytes, version, event digest, the instant
    in microseconds since the epoch, as PostgreSQL keeps it), then the nullable ones, each
    marked present or absent and length-prefixed. Money goes in as decimal text: it may outgrow
    eight bytes. The same row read back from the database encodes to the same bytes.
    """
    micros = (recorded_at - _EPOCH) // _MICROSECOND
    return b"".join((
        position.to_bytes(8, "big"), aggregate_id, aggregate_version.to_bytes(8, "big"), digest,
        micros.to_bytes(8, "big", signed=True),
        _ABSENT if team_id is None else _PRESENT + team_id.bytes,
        _text_bytes(event_type), _text_bytes(actor), _text_bytes(summary),
        _text_bytes(None if balance_before_nanos is None else str(balance_before_nanos)),
        _text_bytes(None if balance_after_nanos is None else str(balance_after_nanos)),
    ))


def link_hash(previous: bytes, row_bytes: bytes) -> bytes:
    """Link one audit row to the one before: H(previous || every column of the row)."""
    return hashlib.sha256(previous + row_bytes).digest()


def expected_hash(previous: bytes, row: AuditRow) -> bytes:
    """The hash a stored row must carry, recomputed from its other columns."""
    return link_hash(previous, audit_row_bytes(
        row.position, row.recorded_at, row.team_id, row.aggregate_id.bytes,
        row.aggregate_version, row.event_type, row.actor, row.summary,
        row.balance_before_nanos, row.balance_after_nanos, row.event_digest))


def audit_row(previous: bytes, position: int, recorded_at: datetime, team_id: UUID | None,
              aggregate_id: UUID, aggregate_id_bytes: bytes, aggregate_version: int,
              event_type: str, actor: str | None, summary: str,
              balance_before_nanos: int | None, balance_after_nanos: int | None,
              digest: bytes) -> AuditRow:
    """The audit row with its chain hash over every column."""
    row_hash = link_hash(previous, audit_row_bytes(
        position, recorded_at, team_id, aggregate_id_bytes, aggregate_version, event_type,
        actor, summary, balance_before_nanos, balance_after_nanos, digest))
    return AuditRow(position, recorded_at, team_id, aggregate_id, aggregate_version, event_type,
                    actor, summary, balance_before_nanos, balance_after_nanos, digest, row_hash)


def event_type_of(topic: str) -> str:
    """`domain.team:Team.TopUpCredited` -> `Team.TopUpCredited`."""
    return topic.rpartition(":")[2]

"""The messages that announce a committed batch on `ledger.views.*`, one per view and team, and
the outbox they wait in until a relay has put them on the bus.

The store writes a batch's messages into its outbox in the batch's own transaction (so a message
exists exactly when its change committed); a relay (adapters/nats/views_relay.py) reads the
outbox in order, publishes each row and then marks it relayed. `ViewOutbox` is that relay's side
of the outbox, kept by the PostgreSQL and the in-memory store alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from projections.views import BatchChanges

# Unrelayed outbox rows kept at most (NATS down for a long time, or no relay running). Past it,
# rows superseded by a newer one on the same subject are dropped first (the stream keeps the last
# value per subject, so a late consumer still gets every team's current state), then the oldest.
OUTBOX_ROWS_MAX = 100_000


@dataclass(frozen=True)
class OutboxRow:
    """One view message waiting to be relayed: `seq` orders the outbox (commit order)."""

    seq: int
    position: int
    subject: str
    payload: bytes

    @property
    def message_id(self) -> str:
        """The bus's deduplication id: a row relayed twice (a crash between publish and mark)
        carries the same id both times, and the subject holds one message per position."""
        return f"{self.subject}:{self.position}"


class ViewOutbox(Protocol):
    def pending(self, limit: int) -> list[OutboxRow]:
        """The oldest unrelayed rows, in `seq` order, at most `limit`."""
        ...

    def mark_relayed(self, up_to_seq: int) -> None:
        """Every row with `seq <= up_to_seq` was relayed: prune them."""
        ...


def _money_as_text(fields: dict[str, Any]) -> dict[str, Any]:
    """Nanos as decimal strings, as everywhere our JSON leaves the process: they exceed 2**53,
    which a JavaScript number (the dashboard, most consumers) cannot hold exactly."""
    return {key: str(value) if key.endswith("_nanos") and isinstance(value, int) else value
            for key, value in fields.items()}


def view_messages(changes: BatchChanges) -> list[tuple[str, dict[str, Any]]]:
    """The messages announcing a committed batch, one per view and team it changed."""
    position = changes.last_position
    days: dict[UUID, set[str]] = {}
    for team_id, _, _, day in changes.usage:
        days.setdefault(team_id, set()).add(day.isoformat())
    audit: dict[UUID, list[int]] = {}  # team -> [rows, last position]
    for row in changes.audit:
        if row.team_id is not None:
            counts = audit.setdefault(row.team_id, [0, 0])
            counts[0] += 1
            counts[1] = row.position
    messages: list[tuple[str, dict[str, Any]]] = []
    for team_id, team in changes.teams.items():
        messages.append((f"ledger.views.balance.{team_id}",
                         {"position": position, **_money_as_text(team.as_dict())}))
    for team_id, team_days in days.items():
        messages.append((f"ledger.views.usage.{team_id}",
                         {"position": position, "team_id": str(team_id),
                          "dates": sorted(team_days)}))
    # A batch with audit rows has a chain head: the hash of its last row.
    chain_head = changes.audit_head.hex() if changes.audit_head else None
    for team_id, (rows, last_row_position) in audit.items():
        messages.append((f"ledger.views.audit.{team_id}", {
            "position": position, "team_id": str(team_id), "new_rows": rows,
            "last_row_position": last_row_position, "chain_head": chain_head,
        }))
    return messages


def encoded_view_messages(changes: BatchChanges) -> list[tuple[str, bytes]]:
    """`view_messages` as they go on the bus: JSON bytes (money as the views give it)."""
    return [(subject, json.dumps(payload, default=str).encode())
            for subject, payload in view_messages(changes)]

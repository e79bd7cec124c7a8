"""The messages that announce a committed batch on `ledger.views.*`, one per view and team."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from projections.fold import ViewFolder
from projections.views import BatchChanges


def view_messages(changes: BatchChanges, folder: ViewFolder) -> list[tuple[str, dict[str, Any]]]:
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
                         {"position": position, **team.as_dict()}))
    for team_id, team_days in days.items():
        messages.append((f"ledger.views.usage.{team_id}",
                         {"position": position, "team_id": str(team_id),
                          "dates": sorted(team_days)}))
    for team_id, (rows, last_row_position) in audit.items():
        messages.append((f"ledger.views.audit.{team_id}", {
            "position": position, "team_id": str(team_id), "new_rows": rows,
            "last_row_position": last_row_position, "chain_head": folder.audit_head.hex(),
        }))
    return messages

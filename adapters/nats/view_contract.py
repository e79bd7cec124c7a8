"""The bus contract of the read-model changes on `ledger.views.<view>.<team_id>`: pydantic models.

The projections write these messages (projections/view_messages.py) into their outbox in the
batch's own transaction; the relay puts them on the JetStream stream `LEDGER_VIEWS`, which keeps
the last message per subject (docs/projections.md). Downstream consumers (the dashboard, other
services) read them with these schemas: they are in the AsyncAPI document
(docs/bus-asyncapi.json), and tests/adapters/test_view_contract.py validates every message a
realistic history produces against them, every key described, nothing left over.

Every message carries `position`: the event log position the team's views reflect after the
batch that changed them; a consumer keeps the message with the highest. Money is in nanos as a
decimal string (amounts exceed 2^53, which a JSON number read by JavaScript cannot hold).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

# Nanos as a decimal string: 1 USD = "1000000000"; negative for a balance below zero.
Nanos = Annotated[str, Field(pattern=r"^-?[0-9]+$", max_length=40,
                             description="nanos (10^-9 of the currency unit), decimal string")]
Position = Annotated[int, Field(ge=1, description="event log position the change reflects")]
# The audit chain's head: a SHA-256, hex.
CHAIN_HEAD_HEX_DIGITS = 64


class _ViewMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    position: Position
    team_id: UUID


class BalanceViewMessage(_ViewMessage):
    """`ledger.views.balance.<team_id>`: the team's whole balance row after the change."""

    name: str
    currency: Annotated[str, Field(min_length=3, max_length=3, description="ISO 4217")]
    timezone: Annotated[str, Field(description="IANA zone of the team's usage days")]
    balance_nanos: Nanos
    available_nanos: Nanos  # balance plus credit limit: what may still be spent
    credit_limit_nanos: Nanos
    low_balance_threshold_nanos: Nanos
    low_balance: bool
    suspended: bool
    credited_nanos: Nanos
    refunded_nanos: Nanos
    adjusted_nanos: Nanos
    spent_nanos: Nanos


class UsageViewMessage(_ViewMessage):
    """`ledger.views.usage.<team_id>`: the team's usage changed on these days (its time zone);
    read the windows over HTTP (`/v1/teams/{team_id}/usage`)."""

    dates: Annotated[list[date], Field(min_length=1)]


class AuditViewMessage(_ViewMessage):
    """`ledger.views.audit.<team_id>`: new rows in the team's audit trail."""

    new_rows: Annotated[int, Field(ge=1, description="the team's rows added by the batch")]
    last_row_position: Annotated[int, Field(
        ge=1, description="log position of the team's newest row")]
    chain_head: Annotated[str | None, Field(
        pattern=f"^[0-9a-f]{{{CHAIN_HEAD_HEX_DIGITS}}}$",
        description="the whole audit chain's head after the batch: SHA-256 (hex) of its last "
                    "row, to check against `ledger audit verify`")]


VIEW_MESSAGES: dict[str, type[_ViewMessage]] = {
    "balance": BalanceViewMessage,
    "usage": UsageViewMessage,
    "audit": AuditViewMessage,
}

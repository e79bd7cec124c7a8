"""What the command mixins need from the `Ledger` application: loading, authorizing, running.

The mixins of `services.commands` annotate `self` with this Protocol (mypy's pattern for mixins),
so each module type-checks on its own under mypy strict and names exactly what it relies on;
`services.ledger.Ledger` provides all of it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from domain.account import Account
from domain.invoice import Invoice
from domain.package import Package
from domain.roles import Action
from domain.team import Team
from services.actor import Actor
from services.command_runs import Attempt
from services.usage.recording import UsageRecording


class LedgerCore(Protocol):
    clock: Callable[[], datetime]
    usage: UsageRecording  # commands that change an account make it forget its cached copy

    def get_team(self, team_id: UUID) -> Team: ...

    def get_account(self, account_id: UUID) -> Account: ...

    def get_package(self, package_id: UUID) -> Package: ...

    def get_invoice(self, invoice_id: UUID) -> Invoice: ...

    def authorize(self, team: Team, actor: Actor, action: Action) -> None:
        """Raise unless `actor` may do `action` on `team`."""

    def exists(self, aggregate_id: UUID) -> bool:
        """Whether any event was stored for this id."""

    def _run(self, name: str, scope: str, actor: Actor, idempotency_key: str | None,
             arguments: dict[str, Any], attempt: Callable[[], Attempt]) -> str:
        """Run a command's attempt once per idempotency key, retried on version conflicts."""

    def _team_command(self, team_id: UUID, actor: Actor, action: Action,
                      idempotency_key: str | None, name: str, arguments: dict[str, Any],
                      apply: Callable[[Team], object]) -> str:
        """Run `apply` on the freshly loaded, authorized team; its result as text."""

"""Account and package commands: price lists (packages and their versions), opening accounts in
a team's pool, assigning a package or a holder, suspending, reactivating and closing accounts.

Packages are team-less and managed by operators; an account command runs in its team's scope and
makes the usage cache forget the account, whose in-memory copy may now be stale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.account import Account, AccountKind
from domain.errors import InvalidInputError, PermissionDeniedError
from domain.package import Package
from domain.pricing import PriceTerms
from domain.roles import Action
from services.actor import Actor
from services.command_runs import Attempt, package_scope, principal_scope, team_scope
from services.commands.ledger_core import LedgerCore


def _check_operator(actor: Actor) -> None:
    if not actor.is_operator:
        raise PermissionDeniedError(
            f"user {actor.user_id!r} is not an operator; only operators manage packages"
        )


def _account_command(ledger: LedgerCore, account_id: UUID, actor: Actor, action: Action,
                     idempotency_key: str | None, name: str, arguments: dict[str, Any],
                     apply: Callable[[Account], None]) -> None:
    """Run `apply` on the freshly loaded account, authorized on its team."""
    def attempt() -> Attempt:
        account = ledger.get_account(account_id)
        team = ledger.get_team(account.team_id)
        ledger.authorize(team, actor, action)
        apply(account)
        return Attempt([account], "", after_save=lambda: ledger.usage.forget(account_id))

    # An account never changes team, so its team (the key's scope) is read once up front.
    team_id = ledger.get_account(account_id).team_id
    ledger._run(name, team_scope(team_id), actor, idempotency_key,
                {"account_id": str(account_id), **arguments}, attempt)
    ledger.usage.forget(account_id)  # a conflict may have left a stale copy in the cache


class AccountCommands:
    # Packages ------------------------------------------------------------------------------

    def create_package(self: LedgerCore, *, package_key: str, name: str, currency: str,
                       terms: PriceTerms, actor: Actor,
                       idempotency_key: str | None = None) -> UUID:
        _check_operator(actor)

        def attempt() -> Attempt:
            if self.exists(Package.create_id(package_key)):
                raise InvalidInputError(f"package key {package_key!r} already exists")
            package = Package.create(package_key=package_key, name=name, currency=currency,
                                     terms=terms, actor=actor.user_id)
            return Attempt([package], str(package.id))

        arguments = {"package_key": package_key, "name": name, "currency": currency,
                     "terms": asdict(terms)}
        return UUID(self._run("create_package", principal_scope(actor.user_id), actor,
                              idempotency_key, arguments, attempt))

    def publish_package_version(self: LedgerCore, package_id: UUID, terms: PriceTerms,
                                actor: Actor, idempotency_key: str | None = None) -> int:
        _check_operator(actor)

        def attempt() -> Attempt:
            package = self.get_package(package_id)
            return Attempt([package], str(package.publish_version(terms, actor.user_id)))

        return int(self._run("publish_package_version", package_scope(package_id), actor,
                             idempotency_key, {"package_id": str(package_id),
                                               "terms": asdict(terms)}, attempt))

    # Accounts ------------------------------------------------------------------------------

    def open_account(self: LedgerCore, team_id: UUID, *, account_key: str, name: str,
                     kind: str = AccountKind.SEAT.value, holder_user_id: str | None = None,
                     actor: Actor, idempotency_key: str | None = None) -> UUID:
        try:
            account_kind = AccountKind(kind)
        except ValueError:
            allowed = ", ".join(k.value for k in AccountKind)
            raise InvalidInputError(f"kind {kind!r} is not one of: {allowed}") from None

        def attempt() -> Attempt:
            team = self.get_team(team_id)
            self.authorize(team, actor, Action.OPEN_ACCOUNT)
            team.check_active()
            if Account.create_id(team_id, account_key) in team.account_ids:
                raise InvalidInputError(
                    f"account key {account_key!r} is already in use in this team"
                )
            account = Account.open(team_id=team_id, account_key=account_key, name=name,
                                   kind=account_kind, holder_user_id=holder_user_id,
                                   actor=actor.user_id)
            team.add_account_to_pool(account.id, actor.user_id)
            return Attempt([team, account], str(account.id))

        arguments = {"team_id": str(team_id), "account_key": account_key, "name": name,
                     "kind": kind, "holder_user_id": holder_user_id}
        return UUID(self._run("open_account", team_scope(team_id), actor, idempotency_key,
                              arguments, attempt))

    def assign_package(self: LedgerCore, account_id: UUID, package_id: UUID, actor: Actor, *,
                       package_version: int | None = None,
                       effective_from: datetime | None = None,
                       idempotency_key: str | None = None) -> None:
        """Assign a package version (the latest by default) from a moment (now by default)."""
        starts = effective_from or self.clock()

        def apply(account: Account) -> None:
            package = self.get_package(package_id)
            terms = package.terms(package_version)
            version = package_version or package.latest_version
            team = self.get_team(account.team_id)
            if package.currency != team.currency:
                raise InvalidInputError(
                    f"package {package.name!r} is priced in {package.currency}, "
                    f"team is billed in {team.currency}"
                )
            account.assign_package(package_id=package_id, package_version=version,
                                   package_name=package.name, terms=terms,
                                   effective_from=starts, actor=actor.user_id)

        # The moment is part of the command only when the caller chose it: "from now" retried
        # later is still the same command.
        _account_command(self, account_id, actor, Action.ASSIGN_PACKAGE, idempotency_key,
                         "assign_package",
                         {"package_id": str(package_id), "package_version": package_version,
                          "effective_from": effective_from}, apply)

    def suspend_account(self: LedgerCore, account_id: UUID, reason: str, actor: Actor,
                        idempotency_key: str | None = None) -> None:
        _account_command(self, account_id, actor, Action.SUSPEND_ACCOUNT, idempotency_key,
                         "suspend_account", {"reason": reason},
                         lambda a: a.suspend(reason, actor.user_id))

    def reactivate_account(self: LedgerCore, account_id: UUID, actor: Actor,
                           idempotency_key: str | None = None) -> None:
        _account_command(self, account_id, actor, Action.REACTIVATE_ACCOUNT, idempotency_key,
                         "reactivate_account", {}, lambda a: a.reactivate(actor.user_id))

    def close_account(self: LedgerCore, account_id: UUID, reason: str, actor: Actor,
                      idempotency_key: str | None = None) -> None:
        _account_command(self, account_id, actor, Action.CLOSE_ACCOUNT, idempotency_key,
                         "close_account", {"reason": reason},
                         lambda a: a.close(reason, actor.user_id))

    def assign_account_holder(self: LedgerCore, account_id: UUID, user_id: str | None,
                              actor: Actor, idempotency_key: str | None = None) -> None:
        """Give an account of the pool to a member of its team (None: to nobody)."""
        def apply(account: Account) -> None:
            team = self.get_team(account.team_id)
            if user_id is not None and team.role_of(user_id) is None:
                raise InvalidInputError(
                    f"user {user_id!r} is not a member of team {team.name!r}; add them first"
                )
            account.assign_holder(user_id, actor.user_id)

        _account_command(self, account_id, actor, Action.OPEN_ACCOUNT, idempotency_key,
                         "assign_account_holder", {"user_id": user_id}, apply)

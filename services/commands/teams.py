"""Team commands: register a team, add, re-role and remove members, suspend and reactivate."""

from __future__ import annotations

from uuid import UUID

from domain.errors import InvalidInputError
from domain.roles import Action, Role, parse_role
from domain.team import Team
from services.actor import Actor
from services.command_runs import Attempt, principal_scope
from services.commands.ledger_core import LedgerCore


class TeamCommands:
    def register_team(self: LedgerCore, *, team_key: str, name: str, currency: str,
                      timezone: str, actor: Actor, idempotency_key: str | None = None) -> UUID:
        """Register a team; the registering user becomes its first owner."""
        def attempt() -> Attempt:
            if self.exists(Team.create_id(team_key)):
                raise InvalidInputError(f"team key {team_key!r} is already registered")
            team = Team.register(team_key=team_key, name=name, currency=currency,
                                 timezone=timezone, owner_user_id=actor.user_id,
                                 actor=actor.user_id)
            return Attempt([team], str(team.id))

        arguments = {"team_key": team_key, "name": name, "currency": currency,
                     "timezone": timezone}
        return UUID(self._run("register_team", principal_scope(actor.user_id), actor,
                              idempotency_key, arguments, attempt))

    def add_member(self: LedgerCore, team_id: UUID, user_id: str, role: str, actor: Actor,
                   idempotency_key: str | None = None) -> None:
        parsed = parse_role(role)

        def apply(team: Team) -> None:
            if parsed == Role.OWNER:
                self.authorize(team, actor, Action.GRANT_OWNER)
            team.add_member(user_id, parsed, actor.user_id)

        self._team_command(team_id, actor, Action.ADD_MEMBER, idempotency_key, "add_member",
                           {"user_id": user_id, "role": role}, apply)

    def change_member_role(self: LedgerCore, team_id: UUID, user_id: str, role: str,
                           actor: Actor, idempotency_key: str | None = None) -> None:
        parsed = parse_role(role)

        def apply(team: Team) -> None:
            if Role.OWNER in (parsed, team.role_of(user_id)):
                self.authorize(team, actor, Action.GRANT_OWNER)
            team.change_member_role(user_id, parsed, actor.user_id)

        self._team_command(team_id, actor, Action.CHANGE_MEMBER_ROLE, idempotency_key,
                           "change_member_role", {"user_id": user_id, "role": role}, apply)

    def remove_member(self: LedgerCore, team_id: UUID, user_id: str, actor: Actor,
                      idempotency_key: str | None = None) -> None:
        def apply(team: Team) -> None:
            if team.role_of(user_id) == Role.OWNER:
                self.authorize(team, actor, Action.GRANT_OWNER)
            team.remove_member(user_id, actor.user_id)

        self._team_command(team_id, actor, Action.REMOVE_MEMBER, idempotency_key,
                           "remove_member", {"user_id": user_id}, apply)

    def suspend_team(self: LedgerCore, team_id: UUID, reason: str, actor: Actor,
                     idempotency_key: str | None = None) -> None:
        self._team_command(team_id, actor, Action.SUSPEND_TEAM, idempotency_key,
                           "suspend_team", {"reason": reason},
                           lambda t: t.suspend(reason, actor.user_id))

    def reactivate_team(self: LedgerCore, team_id: UUID, actor: Actor,
                        idempotency_key: str | None = None) -> None:
        self._team_command(team_id, actor, Action.REACTIVATE_TEAM, idempotency_key,
                           "reactivate_team", {}, lambda t: t.reactivate(actor.user_id))

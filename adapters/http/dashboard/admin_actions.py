"""The admin page's forms: parsing what people type, and the ledger command each form runs.

Every command goes through `services.ledger.Ledger` with the signed-in actor, so the role matrix
and every domain rule apply exactly as for the API; the page only hides or disables what the role
may not do. Amounts are typed in the team's currency ("25", "-12.50") and converted to nanos with
integer arithmetic; anything else is refused with a message that says what to type.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from domain.errors import InvalidInputError
from domain.money import NANOS_PER_UNIT
from domain.package import Package
from domain.roles import Action
from services.actor import Actor
from services.ledger import Ledger

AMOUNT_PATTERN = re.compile(r"^([+-]?)(\d{1,13})(?:\.(\d{1,9}))?$")
TEXT_LENGTH_MAX = 200
NANO_DIGITS = 9


class FormError(ValueError):
    """What the person typed cannot be used; the message says what to fix."""


def parse_amount(field: str, text: str, *, allow_negative: bool = False) -> int:
    """'12.50' -> 12_500_000_000 nanos; no float on the way."""
    cleaned = text.strip().replace(",", "").replace("_", "")
    match = AMOUNT_PATTERN.match(cleaned)
    if not match:
        raise FormError(f"{field}: type an amount like 25 or 12.50 (up to 9 decimals), "
                        f"got {text[:40]!r}")
    sign, units, fraction = match.groups()
    nanos = int(units) * NANOS_PER_UNIT + int((fraction or "").ljust(NANO_DIGITS, "0"))
    if sign == "-":
        if not allow_negative:
            raise FormError(f"{field} must not be negative")
        nanos = -nanos
    return nanos


def required_text(form: Mapping[str, Any], field: str) -> str:
    value = str(form.get(field, "")).strip()
    if not value or len(value) > TEXT_LENGTH_MAX:
        raise FormError(f"{field.replace('_', ' ')} must be 1 to {TEXT_LENGTH_MAX} characters")
    return value


def parse_uuid(form: Mapping[str, Any], field: str) -> UUID:
    try:
        return UUID(str(form.get(field, "")))
    except ValueError:
        raise FormError(f"choose an {field.replace('_', ' ')}") from None


def parse_moment(form: Mapping[str, Any], field: str) -> datetime | None:
    """A `datetime-local` value read in UTC; empty means now."""
    value = str(form.get(field, "")).strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise FormError(f"{field.replace('_', ' ')} must be a date and time like "
                        f"2026-12-01T09:00, got {value[:40]!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class AdminAction:
    """One form: the role-matrix action it needs and how it runs."""

    label: str
    action: Action
    run: Callable[[Ledger, UUID, Mapping[str, Any], Actor], None]
    money: bool = False


def _adjust(ledger: Ledger, team_id: UUID, form: Mapping[str, Any], actor: Actor) -> None:
    amount = parse_amount("amount", str(form.get("amount", "")), allow_negative=True)
    if amount == 0:
        raise FormError("amount must not be zero")
    # The form's nonce makes a double-submitted form one adjustment, not two.
    adjustment_id = str(form.get("nonce", "")).strip() or secrets.token_hex(16)
    ledger.record_adjustment(team_id, f"dashboard:{adjustment_id}", amount,
                             required_text(form, "reason"), actor)


def _credit_limit(ledger: Ledger, team_id: UUID, form: Mapping[str, Any], actor: Actor) -> None:
    ledger.set_credit_limit(team_id, parse_amount("credit limit", str(form.get("amount", ""))),
                            actor)


def _threshold(ledger: Ledger, team_id: UUID, form: Mapping[str, Any], actor: Actor) -> None:
    ledger.set_low_balance_threshold(
        team_id, parse_amount("threshold", str(form.get("amount", ""))), actor)


def _account(ledger: Ledger, team_id: UUID, form: Mapping[str, Any]) -> UUID:
    account_id = parse_uuid(form, "account_id")
    if ledger.get_account(account_id).team_id != team_id:
        raise InvalidInputError("that account is not in this team's pool")
    return account_id


def _suspend_account(ledger: Ledger, team_id: UUID, form: Mapping[str, Any],
                     actor: Actor) -> None:
    ledger.suspend_account(_account(ledger, team_id, form), required_text(form, "reason"), actor)


def _reactivate_account(ledger: Ledger, team_id: UUID, form: Mapping[str, Any],
                        actor: Actor) -> None:
    ledger.reactivate_account(_account(ledger, team_id, form), actor)


def _assign_package(ledger: Ledger, team_id: UUID, form: Mapping[str, Any],
                    actor: Actor) -> None:
    key = str(form.get("package_key", "")).strip()
    package_id = Package.create_id(key) if key else parse_uuid(form, "package_id")
    ledger.assign_package(_account(ledger, team_id, form), package_id, actor,
                          effective_from=parse_moment(form, "effective_from"))


def _assign_holder(ledger: Ledger, team_id: UUID, form: Mapping[str, Any],
                   actor: Actor) -> None:
    holder = str(form.get("user_id", "")).strip() or None
    ledger.assign_account_holder(_account(ledger, team_id, form), holder, actor)


def _close_account(ledger: Ledger, team_id: UUID, form: Mapping[str, Any],
                   actor: Actor) -> None:
    ledger.close_account(_account(ledger, team_id, form), required_text(form, "reason"), actor)


def _suspend_team(ledger: Ledger, team_id: UUID, form: Mapping[str, Any], actor: Actor) -> None:
    ledger.suspend_team(team_id, required_text(form, "reason"), actor)


def _reactivate_team(ledger: Ledger, team_id: UUID, form: Mapping[str, Any],
                     actor: Actor) -> None:
    ledger.reactivate_team(team_id, actor)


def _open_account(ledger: Ledger, team_id: UUID, form: Mapping[str, Any], actor: Actor) -> None:
    holder = str(form.get("holder_user_id", "")).strip() or None
    ledger.open_account(team_id, account_key=required_text(form, "account_key"),
                        name=required_text(form, "name"),
                        kind=str(form.get("kind", "seat")), holder_user_id=holder, actor=actor)


def _add_member(ledger: Ledger, team_id: UUID, form: Mapping[str, Any], actor: Actor) -> None:
    ledger.add_member(team_id, required_text(form, "user_id"), required_text(form, "role"),
                      actor)


def _change_role(ledger: Ledger, team_id: UUID, form: Mapping[str, Any], actor: Actor) -> None:
    ledger.change_member_role(team_id, required_text(form, "user_id"),
                              required_text(form, "role"), actor)


def _remove_member(ledger: Ledger, team_id: UUID, form: Mapping[str, Any],
                   actor: Actor) -> None:
    ledger.remove_member(team_id, required_text(form, "user_id"), actor)


ADMIN_ACTIONS: dict[str, AdminAction] = {
    "adjustment": AdminAction("Manual adjustment", Action.RECORD_ADJUSTMENT, _adjust, True),
    "credit-limit": AdminAction("Credit limit", Action.SET_CREDIT_LIMIT, _credit_limit, True),
    "threshold": AdminAction("Low-balance threshold", Action.SET_LOW_BALANCE_THRESHOLD,
                             _threshold, True),
    "suspend-account": AdminAction("Suspend account", Action.SUSPEND_ACCOUNT, _suspend_account),
    "reactivate-account": AdminAction("Reactivate account", Action.REACTIVATE_ACCOUNT,
                                      _reactivate_account),
    "assign-package": AdminAction("Assign package", Action.ASSIGN_PACKAGE, _assign_package),
    "open-account": AdminAction("Open account", Action.OPEN_ACCOUNT, _open_account),
    # The service checks the same action for giving an account to a member as for opening one.
    "assign-holder": AdminAction("Give account", Action.OPEN_ACCOUNT, _assign_holder),
    "close-account": AdminAction("Close account", Action.CLOSE_ACCOUNT, _close_account),
    "suspend-team": AdminAction("Suspend team", Action.SUSPEND_TEAM, _suspend_team),
    "reactivate-team": AdminAction("Reactivate team", Action.REACTIVATE_TEAM, _reactivate_team),
    "add-member": AdminAction("Add member", Action.ADD_MEMBER, _add_member),
    "change-role": AdminAction("Change role", Action.CHANGE_MEMBER_ROLE, _change_role),
    "remove-member": AdminAction("Remove member", Action.REMOVE_MEMBER, _remove_member),
}

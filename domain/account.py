"""The Account aggregate: one entry of a team's account pool (a person's seat or a service key).

Usage is recorded here, priced by the package assignment in force at the record's `occurred_at`
(not at arrival), so a late record is priced as it would have been on time. A usage record is a
fact: it is accepted even when the team's balance is exhausted or the account is suspended;
spending is stopped before a request by the authorization query, not by refusing history. Only a
closed account refuses usage, because closing is the statement that no more usage belongs to it.

`UsageRecorded` is the hot event (one per model request), so it is an explicit event class whose
`apply` touches three attributes and nothing else.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import (
    AccountClosedError,
    InvalidInputError,
    InvalidStateError,
    NoPackageInForceError,
)
from domain.ids import account_id_for
from domain.pricing import PriceTerms, cost_nanos
from domain.usage import UsageRecord

ACCOUNT_NAME_LENGTH_MAX = 200


class AccountKind(StrEnum):
    SEAT = "seat"
    SERVICE_KEY = "service_key"


class AccountStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


class Account(Aggregate):
    @staticmethod
    def create_id(team_id: UUID, account_key: str) -> UUID:
        return account_id_for(team_id, account_key)

    @event("Opened")
    def __init__(self, team_id: UUID, account_key: str, name: str, kind: AccountKind,
                 holder_user_id: str | None, actor: str) -> None:
        self.team_id = team_id
        self.account_key = account_key
        self.name = name
        self.kind = AccountKind(kind)
        self.holder_user_id = holder_user_id
        self.status = AccountStatus.ACTIVE
        # Assignments sorted by effective moment; parallel lists keep the lookup a bisect.
        self.assignment_starts: list[datetime] = []
        self.assignments: list[dict[str, Any]] = []
        self.usage_count = 0
        self.spent_nanos = 0
        self.last_usage_occurred_at: datetime | None = None

    @classmethod
    def open(cls, *, team_id: UUID, account_key: str, name: str, kind: AccountKind,
             holder_user_id: str | None, actor: str) -> Account:
        for field, value in (("account_key", account_key), ("name", name)):
            if not value.strip() or len(value) > ACCOUNT_NAME_LENGTH_MAX:
                raise InvalidInputError(
                    f"{field} must be 1 to {ACCOUNT_NAME_LENGTH_MAX} characters"
                )
        return cls(team_id=team_id, account_key=account_key, name=name, kind=AccountKind(kind),
                   holder_user_id=holder_user_id, actor=actor)

    # Packages ------------------------------------------------------------------------------

    def assign_package(self, *, package_id: UUID, package_version: int, package_name: str,
                       terms: PriceTerms, effective_from: datetime, actor: str) -> None:
        self.check_not_closed()
        if effective_from.utcoffset() is None:
            raise InvalidInputError("effective_from must be a timestamp with a UTC offset")
        if self.last_usage_occurred_at is not None and effective_from < self.last_usage_occurred_at:
            raise InvalidStateError(
                f"effective_from {effective_from.isoformat()} is before usage already priced "
                f"(last at {self.last_usage_occurred_at.isoformat()}); history is not repriced, "
                "choose a later moment"
            )
        if self.assignment_starts and effective_from <= self.assignment_starts[-1]:
            raise InvalidStateError(
                f"effective_from must be after the latest assignment's "
                f"{self.assignment_starts[-1].isoformat()}"
            )
        self._package_assigned(package_id=package_id, package_version=package_version,
                               package_name=package_name, terms=terms.as_dict(),
                               effective_from=effective_from, actor=actor)

    @event("PackageAssigned")
    def _package_assigned(self, package_id: UUID, package_version: int, package_name: str,
                          terms: dict[str, Any], effective_from: datetime, actor: str) -> None:
        self.assignment_starts.append(effective_from)
        self.assignments.append({
            "package_id": package_id,
            "package_version": package_version,
            "package_name": package_name,
            "terms": terms,
            "effective_from": effective_from,
        })

    def assignment_at(self, at: datetime) -> dict[str, Any]:
        index = bisect_right(self.assignment_starts, at) - 1
        if index < 0:
            raise NoPackageInForceError(
                f"account {self.id} has no package in force at {at.isoformat()}; "
                "assign a package effective at or before that moment"
            )
        return self.assignments[index]

    # Usage ---------------------------------------------------------------------------------

    @dataclass(frozen=True)
    class UsageRecorded(Aggregate.Event):
        team_id: UUID
        usage_id: str
        occurred_at: datetime
        model: str
        success: bool
        input_tokens: int
        cached_input_tokens: int
        output_tokens: int
        cost_nanos: int
        package_id: UUID
        package_version: int

        def apply(self, aggregate: Aggregate) -> None:
            account = cast(Account, aggregate)
            account.usage_count += 1
            account.spent_nanos += self.cost_nanos
            last = account.last_usage_occurred_at
            if last is None or self.occurred_at > last:
                account.last_usage_occurred_at = self.occurred_at

    def record_usage(self, record: UsageRecord, recorded_at: datetime | None = None) -> int:
        """Price and record one usage record; returns its cost in nanos.

        `recorded_at` is the event's timestamp; a batch passes one moment for all its records
        (they commit together).
        """
        self.check_not_closed()
        assignment = self.assignment_at(record.occurred_at)
        cost = cost_nanos(
            assignment["terms"],
            success=record.success,
            input_tokens=record.input_tokens,
            cached_input_tokens=record.cached_input_tokens,
            output_tokens=record.output_tokens,
        )
        # Built directly rather than through trigger_event(): this is the hot path, and the
        # generic route copies keyword arguments and checks topics on every call.
        recorded = new_usage_recorded(
            originator_id=self.id,
            originator_version=self.version + 1,
            timestamp=recorded_at or Account.UsageRecorded.create_timestamp(),
            team_id=self.team_id,
            usage_id=record.usage_id,
            occurred_at=record.occurred_at,
            model=record.model,
            success=record.success,
            input_tokens=record.input_tokens,
            cached_input_tokens=record.cached_input_tokens,
            output_tokens=record.output_tokens,
            cost_nanos=cost,
            package_id=assignment["package_id"],
            package_version=assignment["package_version"],
        )
        recorded.mutate(self)
        self._pending_events.append(recorded)
        return cost

    # Holder --------------------------------------------------------------------------------

    def assign_holder(self, user_id: str | None, actor: str) -> None:
        """Give the account to a team member (None: to nobody); the caller checks membership."""
        self.check_not_closed()
        if user_id is not None and (not user_id.strip() or len(user_id) > ACCOUNT_NAME_LENGTH_MAX):
            raise InvalidInputError(f"user_id must be 1 to {ACCOUNT_NAME_LENGTH_MAX} characters")
        if user_id == self.holder_user_id:
            raise InvalidStateError(f"account {self.id} is already held by {user_id!r}")
        self._holder_assigned(user_id=user_id, previous_user_id=self.holder_user_id, actor=actor)

    @event("HolderAssigned")
    def _holder_assigned(self, user_id: str | None, previous_user_id: str | None,
                         actor: str) -> None:
        self.holder_user_id = user_id

    # Lifecycle -----------------------------------------------------------------------------

    def check_not_closed(self) -> None:
        if self.status == AccountStatus.CLOSED:
            raise AccountClosedError(f"account {self.id} is closed")

    def suspend(self, reason: str, actor: str) -> None:
        self.check_not_closed()
        if self.status == AccountStatus.SUSPENDED:
            raise InvalidStateError(f"account {self.id} is already suspended")
        self._suspended(reason=reason, actor=actor)

    @event("Suspended")
    def _suspended(self, reason: str, actor: str) -> None:
        self.status = AccountStatus.SUSPENDED

    def reactivate(self, actor: str) -> None:
        self.check_not_closed()
        if self.status != AccountStatus.SUSPENDED:
            raise InvalidStateError(f"account {self.id} is not suspended")
        self._reactivated(actor=actor)

    @event("Reactivated")
    def _reactivated(self, actor: str) -> None:
        self.status = AccountStatus.ACTIVE

    def close(self, reason: str, actor: str) -> None:
        self.check_not_closed()
        self._closed(reason=reason, actor=actor)

    @event("Closed")
    def _closed(self, reason: str, actor: str) -> None:
        self.status = AccountStatus.CLOSED


def new_usage_recorded(**fields: Any) -> Account.UsageRecorded:
    """Make an `Account.UsageRecorded` without the frozen dataclass `__init__`.

    A frozen dataclass assigns each of its 14 fields through `object.__setattr__`, about five
    microseconds per event, a tenth of the whole recording path. The event has no validation or
    defaults in `__init__`, so filling `__dict__` gives an equal object (a test holds them
    equal); the field set is checked here so a renamed field cannot slip through.
    """
    assert fields.keys() == _USAGE_RECORDED_FIELDS, sorted(fields.keys() ^ _USAGE_RECORDED_FIELDS)
    event = object.__new__(Account.UsageRecorded)
    event.__dict__.update(fields)
    return event


_USAGE_RECORDED_FIELDS = frozenset(f.name for f in fields(Account.UsageRecorded))

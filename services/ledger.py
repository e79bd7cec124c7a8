"""The ledger application: one eventsourcing `Application` for every command of the ledger.

One `Application` holds all aggregates (Team, Account, Package, Invoice) so that they share one
notification log: projections read one totally ordered history, and a command that touches two
aggregates (opening an account adds it to the team's pool) saves both atomically.

This module holds what every command shares: construction (mapper, recorder, snapshotting),
`save_events` for the usage pipeline, loading aggregates, authorization and running a command
once per idempotency key (`services.command_runs`). The commands themselves are grouped by
subject in `services.commands` (teams, accounts and packages, money, invoices) and mixed in
here; usage recording is the `services.usage` package, given the narrow ports it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import ApplicationRecorder, Mapper, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder

from domain.account import Account
from domain.errors import (
    AccountNotFoundError,
    InvoiceNotFoundError,
    LedgerError,
    PackageNotFoundError,
    TeamNotFoundError,
)
from domain.invoice import Invoice
from domain.package import Package
from domain.roles import Action
from domain.team import Team
from domain.usage import UsageRecord
from services.actor import SYSTEM_ACTIONS, Actor
from services.command_runs import Attempt, Command, CommandRunner, team_scope
from services.commands.accounts import AccountCommands
from services.commands.invoices import InvoiceCommands
from services.commands.ledger_core import LedgerCore
from services.commands.money import MoneyCommands
from services.commands.teams import TeamCommands
from services.eventsourcing_seam import complete_save
from services.keyed_recording import InMemoryLedgerRecorder, KeyedRecorder
from services.usage.mapper import LedgerMapper
from services.usage.outcomes import UsageBatchOutcome
from services.usage.recording import UsagePorts, UsageRecording

A = TypeVar("A", bound=Aggregate)
Clock = Callable[[], datetime]

# Snapshot an account every this many events, so that loading one with a long usage history
# reads at most this many events after its latest snapshot.
ACCOUNT_SNAPSHOT_INTERVAL_EVENTS = 1000
TEAM_SNAPSHOT_INTERVAL_EVENTS = 200


def utc_now() -> datetime:
    return datetime.now(UTC)


class Ledger(TeamCommands, AccountCommands, MoneyCommands, InvoiceCommands, Application[UUID]):
    name = "Ledger"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {
        Account: ACCOUNT_SNAPSHOT_INTERVAL_EVENTS,
        Team: TEAM_SNAPSHOT_INTERVAL_EVENTS,
    }

    def __init__(self, env: dict[str, str] | None = None, clock: Clock = utc_now) -> None:
        super().__init__(env)
        self.clock = clock
        self.usage = UsageRecording(UsagePorts(
            keys=self.keyed, load=lambda aggregate_id: self.repository.get(aggregate_id),
            to_stored_event=self.mapper.to_stored_event,
            # Both looked up at each call, as before the split: a test may set another clock,
            # or wrap `save_events` to inject a failed commit.
            save_events=lambda *args, **kwargs: self.save_events(*args, **kwargs),
            clock=lambda: self.clock()))
        self.commands = CommandRunner(self.save, lambda: self.keyed)

    # Infrastructure ------------------------------------------------------------------------

    def construct_mapper(self) -> Mapper[UUID]:
        return LedgerMapper(transcoder=self.construct_transcoder(),
                            compressor=self.factory.compressor(),
                            cipher=self.factory.cipher())

    def save_events(self, events: list[Any], stored_events: list[StoredEvent],
                    aggregates: Mapping[UUID, Aggregate], **kwargs: Any) -> None:
        """Store events already collected from `aggregates` and already mapped to stored form.

        This is `save()` split for the usage path. `Application.save` asks of every object
        whether it is an event or an aggregate through runtime-checkable protocols (tens of
        microseconds each) and maps events to stored form on the calling thread; the usage
        pipeline collects and maps on its preparing thread so that the committing thread does
        little but I/O (see `services.usage.recording`). After the insert, everything else
        `save()` does happens too, through `services.eventsourcing_seam.complete_save`: the
        aggregate cache is updated if one is configured, due snapshots are taken, followers
        (if this application ever leads a system) and `notify()` are told.
        """
        notification_ids = self.recorder.insert_events(stored_events, **kwargs)
        complete_save(self, events, stored_events, aggregates, notification_ids)

    def construct_recorder(self) -> ApplicationRecorder:
        recorder = super().construct_recorder()
        if type(recorder) is POPOApplicationRecorder:
            recorder = InMemoryLedgerRecorder()
        if not isinstance(recorder, KeyedRecorder):
            raise TypeError(
                f"{type(recorder).__name__} keeps no idempotency keys; configure "
                "APPLICATION_RECORDER_TOPIC=adapters.postgres.event_store:LedgerPostgresRecorder "
                "for PostgreSQL"
            )
        return recorder

    @property
    def keyed(self) -> KeyedRecorder:
        return cast(KeyedRecorder, self.recorder)

    # Loading -------------------------------------------------------------------------------

    def _get(self, aggregate_id: UUID, kind: type[A], error: type[LedgerError]) -> A:
        try:
            aggregate: object = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise error(f"{kind.__name__.lower()} {aggregate_id} does not exist") from None
        if not isinstance(aggregate, kind):
            raise error(f"{aggregate_id} is not a {kind.__name__.lower()}")
        return aggregate

    def get_team(self, team_id: UUID) -> Team:
        return self._get(team_id, Team, TeamNotFoundError)

    def get_account(self, account_id: UUID) -> Account:
        return self._get(account_id, Account, AccountNotFoundError)

    def get_package(self, package_id: UUID) -> Package:
        return self._get(package_id, Package, PackageNotFoundError)

    def get_invoice(self, invoice_id: UUID) -> Invoice:
        return self._get(invoice_id, Invoice, InvoiceNotFoundError)

    # Authorization and running commands ------------------------------------------------------

    @staticmethod
    def authorize(team: Team, actor: Actor, action: Action) -> None:
        if actor.is_system and action in SYSTEM_ACTIONS:
            return
        team.check_may(actor.user_id, action)

    def exists(self, aggregate_id: UUID) -> bool:
        """Whether any event was stored for this id (cheaper than loading the aggregate)."""
        return any(True for _ in self.events.get(aggregate_id, limit=1))

    def _run(self, name: str, scope: str, actor: Actor, idempotency_key: str | None,
             arguments: dict[str, Any], attempt: Callable[[], Attempt]) -> str:
        return self.commands.run(Command(name, scope, arguments, actor.user_id,
                                         idempotency_key), attempt)

    def _team_command(self, team_id: UUID, actor: Actor, action: Action,
                      idempotency_key: str | None, name: str, arguments: dict[str, Any],
                      apply: Callable[[Team], object]) -> str:
        """Run `apply` on the freshly loaded team; its result ("" for None) is returned."""
        def attempt() -> Attempt:
            team = self.get_team(team_id)
            self.authorize(team, actor, action)
            result = apply(team)
            return Attempt([team], "" if result is None else str(result))

        return self._run(name, team_scope(team_id), actor, idempotency_key,
                         {"team_id": str(team_id), **arguments}, attempt)

    # Usage ---------------------------------------------------------------------------------

    def record_usage_batch(self, records: list[UsageRecord]) -> UsageBatchOutcome:
        return self.usage.record_batch(records)

    def record_usage_batches(self, batches: Iterable[list[UsageRecord] | None]
                             ) -> Iterator[UsageBatchOutcome]:
        """Record a stream of batches, committing one while preparing the next (a `None`
        finishes the batch in flight: see `UsageRecording.record_batches`)."""
        return self.usage.record_batches(batches)

    def record_usage(self, record: UsageRecord) -> UsageBatchOutcome:
        return self.usage.record_batch([record])


if TYPE_CHECKING:  # mypy proves here that Ledger provides all the command mixins rely on
    _LEDGER_PROVIDES_THE_CORE: type[LedgerCore] = Ledger

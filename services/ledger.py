"""The ledger application: every command of the billing ledger as a use case with plain inputs.

One eventsourcing `Application` holds all aggregates (Team, Account, Package, Invoice) so that
they share one notification log: projections read one totally ordered history, and a command that
touches two aggregates (opening an account adds it to the team's pool) saves both atomically.

Every admin command takes the acting `Actor`, checks the role matrix, and accepts an optional
idempotency key: the same key with the same arguments returns the first result and changes
nothing; the same key with different arguments is an `IdempotencyConflictError`. Usage recording
lives in `services.usage_recording`; this module wires it in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import ApplicationRecorder, IntegrityError, Mapper, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder

from domain.account import Account, AccountKind
from domain.errors import (
    AccountNotFoundError,
    IdempotencyConflictError,
    InvalidInputError,
    InvoiceNotFoundError,
    LedgerError,
    PackageNotFoundError,
    PermissionDeniedError,
    TeamNotFoundError,
)
from domain.invoice import Invoice, InvoiceStatus
from domain.money import minor_units_to_nanos
from domain.package import Package
from domain.pricing import PriceTerms
from domain.roles import Action, Role, parse_role
from domain.team import Team
from domain.usage import UsageRecord
from services.actor import SYSTEM_ACTIONS, Actor
from services.keyed_recording import (
    COMMAND_SCOPE,
    InMemoryLedgerRecorder,
    KeyedRecorder,
    KeyRow,
)
from services.outcomes import UsageBatchOutcome
from services.usage_mapper import LedgerMapper
from services.usage_recording import UsageRecording

A = TypeVar("A", bound=Aggregate)
Clock = Callable[[], datetime]

# Snapshot an account every this many events, so that loading one with a long usage history
# reads at most this many events after its latest snapshot.
ACCOUNT_SNAPSHOT_INTERVAL_EVENTS = 1000
TEAM_SNAPSHOT_INTERVAL_EVENTS = 200


def utc_now() -> datetime:
    return datetime.now(UTC)


def command_fingerprint(name: str, arguments: dict[str, Any]) -> str:
    canonical = json.dumps([name, arguments], sort_keys=True, default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


class Ledger(Application[UUID]):
    name = "Ledger"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {
        Account: ACCOUNT_SNAPSHOT_INTERVAL_EVENTS,
        Team: TEAM_SNAPSHOT_INTERVAL_EVENTS,
    }

    def __init__(self, env: dict[str, str] | None = None, clock: Clock = utc_now) -> None:
        super().__init__(env)
        self.clock = clock
        self.usage = UsageRecording(self)

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
        little but I/O (see `services.usage_recording`). The steps after mapping are the
        library's own: insert, take the snapshots that are due, notify.
        """
        self.recorder.insert_events(stored_events, **kwargs)
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        processing_event.events.extend(events)
        processing_event.aggregates.update(aggregates)
        self._take_snapshots(processing_event)

    def construct_recorder(self) -> ApplicationRecorder:
        recorder = super().construct_recorder()
        if type(recorder) is POPOApplicationRecorder:
            recorder = InMemoryLedgerRecorder()
        if not isinstance(recorder, KeyedRecorder):
            raise TypeError(
                f"{type(recorder).__name__} keeps no idempotency keys; configure "
                "APPLICATION_RECORDER_TOPIC=adapters.postgres_recorder:LedgerPostgresRecorder "
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

    # Authorization and idempotency ---------------------------------------------------------

    @staticmethod
    def authorize(team: Team, actor: Actor, action: Action) -> None:
        if actor.is_system and action in SYSTEM_ACTIONS:
            return
        team.check_may(actor.user_id, action)

    def _idempotent(self, idempotency_key: str | None, name: str, arguments: dict[str, Any],
                    run: Callable[[], tuple[list[Aggregate], str]]) -> str:
        """Run a command once per idempotency key; return its result (an aggregate id)."""
        if idempotency_key is None:
            aggregates, result = run()
            self.save(*aggregates)
            return result
        if not 1 <= len(idempotency_key) <= 200:
            raise InvalidInputError("idempotency key must be 1 to 200 characters")
        fingerprint = command_fingerprint(name, arguments)
        earlier = self._earlier_result(idempotency_key, fingerprint)
        if earlier is not None:
            return earlier
        aggregates, result = run()
        key_row = KeyRow(COMMAND_SCOPE, idempotency_key, fingerprint, result)
        try:
            self.save(*aggregates, idempotency_keys=[key_row])
        except IntegrityError:
            # Another process ran the same key first: answer with its result.
            earlier = self._earlier_result(idempotency_key, fingerprint)
            if earlier is None:
                raise
            return earlier
        return result

    def _earlier_result(self, idempotency_key: str, fingerprint: str) -> str | None:
        row = self.keyed.select_keys(COMMAND_SCOPE, [idempotency_key]).get(idempotency_key)
        if row is None:
            return None
        if row.fingerprint != fingerprint:
            raise IdempotencyConflictError(
                f"idempotency key {idempotency_key!r} was already used for a different command; "
                "use a new key for a new command"
            )
        return row.result

    # Teams and members ---------------------------------------------------------------------

    def register_team(self, *, team_key: str, name: str, currency: str, timezone: str,
                      actor: Actor, idempotency_key: str | None = None) -> UUID:
        """Register a team; the registering user becomes its first owner."""
        def run() -> tuple[list[Aggregate], str]:
            team = Team.register(team_key=team_key, name=name, currency=currency,
                                 timezone=timezone, owner_user_id=actor.user_id,
                                 actor=actor.user_id)
            return [team], str(team.id)

        arguments = {"team_key": team_key, "name": name, "currency": currency,
                     "timezone": timezone}
        try:
            return UUID(self._idempotent(idempotency_key, "register_team", arguments, run))
        except IntegrityError:
            raise InvalidInputError(f"team key {team_key!r} is already registered") from None

    def _team_command(self, team_id: UUID, actor: Actor, action: Action,
                      idempotency_key: str | None, name: str, arguments: dict[str, Any],
                      apply: Callable[[Team], None]) -> None:
        def run() -> tuple[list[Aggregate], str]:
            team = self.get_team(team_id)
            self.authorize(team, actor, action)
            apply(team)
            return [team], str(team_id)

        self._idempotent(idempotency_key, name, {"team_id": str(team_id), **arguments}, run)

    def add_member(self, team_id: UUID, user_id: str, role: str, actor: Actor,
                   idempotency_key: str | None = None) -> None:
        parsed = parse_role(role)

        def apply(team: Team) -> None:
            if parsed == Role.OWNER:
                self.authorize(team, actor, Action.GRANT_OWNER)
            team.add_member(user_id, parsed, actor.user_id)

        self._team_command(team_id, actor, Action.ADD_MEMBER, idempotency_key, "add_member",
                           {"user_id": user_id, "role": role}, apply)

    def change_member_role(self, team_id: UUID, user_id: str, role: str, actor: Actor,
                           idempotency_key: str | None = None) -> None:
        parsed = parse_role(role)

        def apply(team: Team) -> None:
            if Role.OWNER in (parsed, team.role_of(user_id)):
                self.authorize(team, actor, Action.GRANT_OWNER)
            team.change_member_role(user_id, parsed, actor.user_id)

        self._team_command(team_id, actor, Action.CHANGE_MEMBER_ROLE, idempotency_key,
                           "change_member_role", {"user_id": user_id, "role": role}, apply)

    def remove_member(self, team_id: UUID, user_id: str, actor: Actor,
                      idempotency_key: str | None = None) -> None:
        def apply(team: Team) -> None:
            if team.role_of(user_id) == Role.OWNER:
                self.authorize(team, actor, Action.GRANT_OWNER)
            team.remove_member(user_id, actor.user_id)

        self._team_command(team_id, actor, Action.REMOVE_MEMBER, idempotency_key,
                           "remove_member", {"user_id": user_id}, apply)

    def set_credit_limit(self, team_id: UUID, credit_limit_nanos: int, actor: Actor,
                         idempotency_key: str | None = None) -> None:
        self._team_command(team_id, actor, Action.SET_CREDIT_LIMIT, idempotency_key,
                           "set_credit_limit", {"credit_limit_nanos": credit_limit_nanos},
                           lambda t: t.set_credit_limit(credit_limit_nanos, actor.user_id))

    def set_low_balance_threshold(self, team_id: UUID, threshold_nanos: int, actor: Actor,
                                  idempotency_key: str | None = None) -> None:
        self._team_command(team_id, actor, Action.SET_LOW_BALANCE_THRESHOLD, idempotency_key,
                           "set_low_balance_threshold", {"threshold_nanos": threshold_nanos},
                           lambda t: t.set_low_balance_threshold(threshold_nanos, actor.user_id))

    def link_stripe_customer(self, team_id: UUID, customer_id: str, actor: Actor,
                             idempotency_key: str | None = None) -> None:
        self._team_command(team_id, actor, Action.LINK_STRIPE_CUSTOMER, idempotency_key,
                           "link_stripe_customer", {"customer_id": customer_id},
                           lambda t: t.link_stripe_customer(customer_id, actor.user_id))

    def suspend_team(self, team_id: UUID, reason: str, actor: Actor,
                     idempotency_key: str | None = None) -> None:
        self._team_command(team_id, actor, Action.SUSPEND_TEAM, idempotency_key,
                           "suspend_team", {"reason": reason},
                           lambda t: t.suspend(reason, actor.user_id))

    def reactivate_team(self, team_id: UUID, actor: Actor,
                        idempotency_key: str | None = None) -> None:
        self._team_command(team_id, actor, Action.REACTIVATE_TEAM, idempotency_key,
                           "reactivate_team", {}, lambda t: t.reactivate(actor.user_id))

    # Money ---------------------------------------------------------------------------------

    def credit_top_up(self, team_id: UUID, top_up_id: str, amount_minor: int, currency: str,
                      actor: Actor) -> bool:
        """Credit a settled top-up (a Stripe PaymentIntent or Checkout Session id).

        The Stripe object id is the idempotency key: crediting it again returns False and
        changes nothing. Amounts arrive in minor units, as Stripe sends them, and convert exactly.
        """
        team = self.get_team(team_id)
        self.authorize(team, actor, Action.CREDIT_TOP_UP)
        if team.has_top_up(top_up_id):
            return False
        amount_nanos = minor_units_to_nanos(amount_minor, currency)
        team.credit_top_up(top_up_id, amount_nanos, amount_minor, currency, actor.user_id)
        self.save(team)
        return True

    def refund_top_up(self, team_id: UUID, top_up_id: str, refund_id: str, amount_minor: int,
                      currency: str, actor: Actor) -> bool:
        """Record a refund of a credited top-up; the Stripe refund id is the idempotency key."""
        team = self.get_team(team_id)
        self.authorize(team, actor, Action.REFUND_TOP_UP)
        if team.has_refund(refund_id):
            return False
        if currency != team.currency:
            raise InvalidInputError(f"refund is in {currency}, team is billed in {team.currency}")
        amount_nanos = minor_units_to_nanos(amount_minor, currency)
        team.refund_top_up(top_up_id, refund_id, amount_nanos, actor.user_id)
        self.save(team)
        return True

    def record_adjustment(self, team_id: UUID, adjustment_id: str, amount_nanos: int,
                          reason: str, actor: Actor) -> bool:
        """A signed manual adjustment; `adjustment_id` is its idempotency key."""
        team = self.get_team(team_id)
        self.authorize(team, actor, Action.RECORD_ADJUSTMENT)
        if team.has_adjustment(adjustment_id):
            return False
        team.record_adjustment(adjustment_id, amount_nanos, reason, actor.user_id)
        self.save(team)
        return True

    # Packages ------------------------------------------------------------------------------

    def create_package(self, *, package_key: str, name: str, currency: str, terms: PriceTerms,
                       actor: Actor) -> UUID:
        if not actor.is_operator:
            raise PermissionDeniedError(
                f"user {actor.user_id!r} is not an operator; only operators manage packages"
            )
        package = Package.create(package_key=package_key, name=name, currency=currency,
                                 terms=terms, actor=actor.user_id)
        try:
            self.save(package)
        except IntegrityError:
            raise InvalidInputError(f"package key {package_key!r} already exists") from None
        return package.id

    def publish_package_version(self, package_id: UUID, terms: PriceTerms, actor: Actor) -> int:
        if not actor.is_operator:
            raise PermissionDeniedError(
                f"user {actor.user_id!r} is not an operator; only operators manage packages"
            )
        package = self.get_package(package_id)
        version = package.publish_version(terms, actor.user_id)
        self.save(package)
        return version

    # Accounts ------------------------------------------------------------------------------

    def open_account(self, team_id: UUID, *, account_key: str, name: str,
                     kind: str = AccountKind.SEAT.value, holder_user_id: str | None = None,
                     actor: Actor, idempotency_key: str | None = None) -> UUID:
        try:
            account_kind = AccountKind(kind)
        except ValueError:
            allowed = ", ".join(k.value for k in AccountKind)
            raise InvalidInputError(f"kind {kind!r} is not one of: {allowed}") from None

        def run() -> tuple[list[Aggregate], str]:
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
            return [team, account], str(account.id)

        arguments = {"team_id": str(team_id), "account_key": account_key, "name": name,
                     "kind": kind, "holder_user_id": holder_user_id}
        try:
            return UUID(self._idempotent(idempotency_key, "open_account", arguments, run))
        except IntegrityError:
            raise InvalidInputError(
                f"account key {account_key!r} is already in use in this team"
            ) from None

    def _account_command(self, account_id: UUID, actor: Actor, action: Action,
                         apply: Callable[[Account], None]) -> None:
        account = self.get_account(account_id)
        team = self.get_team(account.team_id)
        self.authorize(team, actor, action)
        apply(account)
        self.save(account)
        self.usage.forget(account_id)

    def assign_package(self, account_id: UUID, package_id: UUID, actor: Actor, *,
                       package_version: int | None = None,
                       effective_from: datetime | None = None) -> None:
        """Assign a package version (the latest by default) from a moment (now by default)."""
        package = self.get_package(package_id)
        terms = package.terms(package_version)
        version = package_version or package.latest_version
        starts = effective_from or self.clock()

        def apply(account: Account) -> None:
            team = self.get_team(account.team_id)
            if package.currency != team.currency:
                raise InvalidInputError(
                    f"package {package.name!r} is priced in {package.currency}, "
                    f"team is billed in {team.currency}"
                )
            account.assign_package(package_id=package_id, package_version=version,
                                   package_name=package.name, terms=terms,
                                   effective_from=starts, actor=actor.user_id)

        self._account_command(account_id, actor, Action.ASSIGN_PACKAGE, apply)

    def suspend_account(self, account_id: UUID, reason: str, actor: Actor) -> None:
        self._account_command(account_id, actor, Action.SUSPEND_ACCOUNT,
                              lambda a: a.suspend(reason, actor.user_id))

    def reactivate_account(self, account_id: UUID, actor: Actor) -> None:
        self._account_command(account_id, actor, Action.REACTIVATE_ACCOUNT,
                              lambda a: a.reactivate(actor.user_id))

    def close_account(self, account_id: UUID, reason: str, actor: Actor) -> None:
        self._account_command(account_id, actor, Action.CLOSE_ACCOUNT,
                              lambda a: a.close(reason, actor.user_id))

    def assign_account_holder(self, account_id: UUID, user_id: str | None, actor: Actor) -> None:
        """Give an account of the pool to a member of its team (None: to nobody)."""
        def apply(account: Account) -> None:
            team = self.get_team(account.team_id)
            if user_id is not None and team.role_of(user_id) is None:
                raise InvalidInputError(
                    f"user {user_id!r} is not a member of team {team.name!r}; add them first"
                )
            account.assign_holder(user_id, actor.user_id)

        self._account_command(account_id, actor, Action.OPEN_ACCOUNT, apply)

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

    # Invoices ------------------------------------------------------------------------------

    def draft_invoice(self, team_id: UUID, *, period_start: str, period_end: str,
                      lines: list[dict[str, Any]], actor: Actor) -> UUID:
        team = self.get_team(team_id)
        self.authorize(team, actor, Action.MANAGE_INVOICES)
        invoice = Invoice.draft(team_id=team_id, currency=team.currency,
                                period_start=period_start, period_end=period_end,
                                lines=lines, actor=actor.user_id)
        try:
            self.save(invoice)
        except IntegrityError:
            raise InvalidInputError(
                f"an invoice for {period_start}..{period_end} already exists for this team"
            ) from None
        return invoice.id

    def _invoice_command(self, invoice_id: UUID, actor: Actor,
                         apply: Callable[[Invoice, Team], list[Aggregate]]) -> None:
        invoice = self.get_invoice(invoice_id)
        team = self.get_team(invoice.team_id)
        self.authorize(team, actor, Action.MANAGE_INVOICES)
        self.save(*apply(invoice, team))

    def finalize_invoice(self, invoice_id: UUID, actor: Actor) -> None:
        def apply(invoice: Invoice, team: Team) -> list[Aggregate]:
            invoice.check_status(InvoiceStatus.DRAFT)
            number = team.issue_invoice_number(invoice.id, actor.user_id)
            invoice.finalize(number, actor.user_id)
            return [invoice, team]

        self._invoice_command(invoice_id, actor, apply)

    def mark_invoice_paid(self, invoice_id: UUID, payment_reference: str, actor: Actor) -> None:
        def apply(invoice: Invoice, _team: Team) -> list[Aggregate]:
            invoice.mark_paid(payment_reference, actor.user_id)
            return [invoice]

        self._invoice_command(invoice_id, actor, apply)

    def void_invoice(self, invoice_id: UUID, reason: str, actor: Actor) -> None:
        def apply(invoice: Invoice, _team: Team) -> list[Aggregate]:
            invoice.void(reason, actor.user_id)
            return [invoice]

        self._invoice_command(invoice_id, actor, apply)

    def issue_credit_note(self, invoice_id: UUID, credit_note_id: str, amount_nanos: int,
                          reason: str, actor: Actor) -> None:
        def apply(invoice: Invoice, _team: Team) -> list[Aggregate]:
            invoice.issue_credit_note(credit_note_id, amount_nanos, reason, actor.user_id)
            return [invoice]

        self._invoice_command(invoice_id, actor, apply)

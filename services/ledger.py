"""The ledger application: every command of the billing ledger as a use case with plain inputs.

One eventsourcing `Application` holds all aggregates (Team, Account, Package, Invoice) so that
they share one notification log: projections read one totally ordered history, and a command that
touches two aggregates (opening an account adds it to the team's pool) saves both atomically.

Every admin and money command takes the acting `Actor`, checks the role matrix, and accepts an
optional idempotency key (scoped to its team, or to the principal or package for team-less
commands): the same key with the same arguments returns the first result and changes nothing;
the same key with different arguments is an `IdempotencyConflictError`. Each command is an
attempt function run by `services.command_runs.CommandRunner`, which re-reads the aggregates and
retries on version conflicts within a named bound. Usage recording lives in
`services.usage_recording`; this module wires it in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import ApplicationRecorder, Mapper, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder

from domain.account import Account, AccountKind
from domain.errors import (
    AccountNotFoundError,
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
from services.command_runs import (
    Attempt,
    Command,
    CommandRunner,
    package_scope,
    principal_scope,
    team_scope,
)
from services.keyed_recording import InMemoryLedgerRecorder, KeyedRecorder
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

    # Teams and members ---------------------------------------------------------------------

    def register_team(self, *, team_key: str, name: str, currency: str, timezone: str,
                      actor: Actor, idempotency_key: str | None = None) -> UUID:
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
                      actor: Actor, idempotency_key: str | None = None) -> bool:
        """Credit a settled top-up (a Stripe PaymentIntent or Checkout Session id).

        The Stripe object id is the natural key: crediting it again returns False and changes
        nothing. Amounts arrive in minor units, as Stripe sends them, and convert exactly.
        """
        def apply(team: Team) -> bool:
            if team.has_top_up(top_up_id):
                return False
            amount_nanos = minor_units_to_nanos(amount_minor, currency)
            team.credit_top_up(top_up_id, amount_nanos, amount_minor, currency, actor.user_id)
            return True

        return self._team_command(
            team_id, actor, Action.CREDIT_TOP_UP, idempotency_key, "credit_top_up",
            {"top_up_id": top_up_id, "amount_minor": amount_minor, "currency": currency},
            apply) == "True"

    def refund_top_up(self, team_id: UUID, top_up_id: str, refund_id: str, amount_minor: int,
                      currency: str, actor: Actor, idempotency_key: str | None = None) -> bool:
        """Record a refund of a credited top-up; the Stripe refund id is the natural key."""
        def apply(team: Team) -> bool:
            if team.has_refund(refund_id):
                return False
            if currency != team.currency:
                raise InvalidInputError(
                    f"refund is in {currency}, team is billed in {team.currency}")
            amount_nanos = minor_units_to_nanos(amount_minor, currency)
            team.refund_top_up(top_up_id, refund_id, amount_nanos, actor.user_id)
            return True

        return self._team_command(
            team_id, actor, Action.REFUND_TOP_UP, idempotency_key, "refund_top_up",
            {"top_up_id": top_up_id, "refund_id": refund_id, "amount_minor": amount_minor,
             "currency": currency}, apply) == "True"

    def record_adjustment(self, team_id: UUID, adjustment_id: str, amount_nanos: int,
                          reason: str, actor: Actor, idempotency_key: str | None = None) -> bool:
        """A signed manual adjustment; `adjustment_id` is its natural key."""
        def apply(team: Team) -> bool:
            if team.has_adjustment(adjustment_id):
                return False
            team.record_adjustment(adjustment_id, amount_nanos, reason, actor.user_id)
            return True

        return self._team_command(
            team_id, actor, Action.RECORD_ADJUSTMENT, idempotency_key, "record_adjustment",
            {"adjustment_id": adjustment_id, "amount_nanos": amount_nanos, "reason": reason},
            apply) == "True"

    # Packages ------------------------------------------------------------------------------

    @staticmethod
    def _check_operator(actor: Actor) -> None:
        if not actor.is_operator:
            raise PermissionDeniedError(
                f"user {actor.user_id!r} is not an operator; only operators manage packages"
            )

    def create_package(self, *, package_key: str, name: str, currency: str, terms: PriceTerms,
                       actor: Actor, idempotency_key: str | None = None) -> UUID:
        self._check_operator(actor)

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

    def publish_package_version(self, package_id: UUID, terms: PriceTerms, actor: Actor,
                                idempotency_key: str | None = None) -> int:
        self._check_operator(actor)

        def attempt() -> Attempt:
            package = self.get_package(package_id)
            return Attempt([package], str(package.publish_version(terms, actor.user_id)))

        return int(self._run("publish_package_version", package_scope(package_id), actor,
                             idempotency_key, {"package_id": str(package_id),
                                               "terms": asdict(terms)}, attempt))

    # Accounts ------------------------------------------------------------------------------

    def open_account(self, team_id: UUID, *, account_key: str, name: str,
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

    def _account_command(self, account_id: UUID, actor: Actor, action: Action,
                         idempotency_key: str | None, name: str, arguments: dict[str, Any],
                         apply: Callable[[Account], None]) -> None:
        def attempt() -> Attempt:
            account = self.get_account(account_id)
            team = self.get_team(account.team_id)
            self.authorize(team, actor, action)
            apply(account)
            return Attempt([account], "", after_save=lambda: self.usage.forget(account_id))

        # An account never changes team, so its team (the key's scope) is read once up front.
        team_id = self.get_account(account_id).team_id
        self._run(name, team_scope(team_id), actor, idempotency_key,
                  {"account_id": str(account_id), **arguments}, attempt)
        self.usage.forget(account_id)  # a conflict may have left a stale copy in the cache

    def assign_package(self, account_id: UUID, package_id: UUID, actor: Actor, *,
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
        self._account_command(account_id, actor, Action.ASSIGN_PACKAGE, idempotency_key,
                              "assign_package",
                              {"package_id": str(package_id), "package_version": package_version,
                               "effective_from": effective_from}, apply)

    def suspend_account(self, account_id: UUID, reason: str, actor: Actor,
                        idempotency_key: str | None = None) -> None:
        self._account_command(account_id, actor, Action.SUSPEND_ACCOUNT, idempotency_key,
                              "suspend_account", {"reason": reason},
                              lambda a: a.suspend(reason, actor.user_id))

    def reactivate_account(self, account_id: UUID, actor: Actor,
                           idempotency_key: str | None = None) -> None:
        self._account_command(account_id, actor, Action.REACTIVATE_ACCOUNT, idempotency_key,
                              "reactivate_account", {}, lambda a: a.reactivate(actor.user_id))

    def close_account(self, account_id: UUID, reason: str, actor: Actor,
                      idempotency_key: str | None = None) -> None:
        self._account_command(account_id, actor, Action.CLOSE_ACCOUNT, idempotency_key,
                              "close_account", {"reason": reason},
                              lambda a: a.close(reason, actor.user_id))

    def assign_account_holder(self, account_id: UUID, user_id: str | None, actor: Actor,
                              idempotency_key: str | None = None) -> None:
        """Give an account of the pool to a member of its team (None: to nobody)."""
        def apply(account: Account) -> None:
            team = self.get_team(account.team_id)
            if user_id is not None and team.role_of(user_id) is None:
                raise InvalidInputError(
                    f"user {user_id!r} is not a member of team {team.name!r}; add them first"
                )
            account.assign_holder(user_id, actor.user_id)

        self._account_command(account_id, actor, Action.OPEN_ACCOUNT, idempotency_key,
                              "assign_account_holder", {"user_id": user_id}, apply)

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
                      lines: list[dict[str, Any]], actor: Actor,
                      idempotency_key: str | None = None) -> UUID:
        def attempt() -> Attempt:
            team = self.get_team(team_id)
            self.authorize(team, actor, Action.MANAGE_INVOICES)
            if self.exists(Invoice.create_id(team_id, period_start, period_end)):
                raise InvalidInputError(
                    f"an invoice for {period_start}..{period_end} already exists for this team")
            invoice = Invoice.draft(team_id=team_id, currency=team.currency,
                                    period_start=period_start, period_end=period_end,
                                    lines=lines, actor=actor.user_id)
            return Attempt([invoice], str(invoice.id))

        arguments = {"team_id": str(team_id), "period_start": period_start,
                     "period_end": period_end, "lines": lines}
        return UUID(self._run("draft_invoice", team_scope(team_id), actor, idempotency_key,
                              arguments, attempt))

    def _invoice_command(self, invoice_id: UUID, actor: Actor, idempotency_key: str | None,
                         name: str, arguments: dict[str, Any],
                         apply: Callable[[Invoice, Team], list[Aggregate]]) -> None:
        def attempt() -> Attempt:
            invoice = self.get_invoice(invoice_id)
            team = self.get_team(invoice.team_id)
            self.authorize(team, actor, Action.MANAGE_INVOICES)
            return Attempt(apply(invoice, team), "")

        team_id = self.get_invoice(invoice_id).team_id  # an invoice never changes team
        self._run(name, team_scope(team_id), actor, idempotency_key,
                  {"invoice_id": str(invoice_id), **arguments}, attempt)

    def finalize_invoice(self, invoice_id: UUID, actor: Actor,
                         idempotency_key: str | None = None) -> None:
        def apply(invoice: Invoice, team: Team) -> list[Aggregate]:
            invoice.check_status(InvoiceStatus.DRAFT)
            number = team.issue_invoice_number(invoice.id, actor.user_id)
            invoice.finalize(number, actor.user_id)
            return [invoice, team]

        self._invoice_command(invoice_id, actor, idempotency_key, "finalize_invoice", {}, apply)

    def mark_invoice_paid(self, invoice_id: UUID, payment_reference: str, actor: Actor,
                          idempotency_key: str | None = None) -> None:
        def apply(invoice: Invoice, _team: Team) -> list[Aggregate]:
            invoice.mark_paid(payment_reference, actor.user_id)
            return [invoice]

        self._invoice_command(invoice_id, actor, idempotency_key, "mark_invoice_paid",
                              {"payment_reference": payment_reference}, apply)

    def void_invoice(self, invoice_id: UUID, reason: str, actor: Actor,
                     idempotency_key: str | None = None) -> None:
        def apply(invoice: Invoice, _team: Team) -> list[Aggregate]:
            invoice.void(reason, actor.user_id)
            return [invoice]

        self._invoice_command(invoice_id, actor, idempotency_key, "void_invoice",
                              {"reason": reason}, apply)

    def issue_credit_note(self, invoice_id: UUID, credit_note_id: str, amount_nanos: int,
                          reason: str, actor: Actor, idempotency_key: str | None = None) -> None:
        def apply(invoice: Invoice, _team: Team) -> list[Aggregate]:
            invoice.issue_credit_note(credit_note_id, amount_nanos, reason, actor.user_id)
            return [invoice]

        self._invoice_command(invoice_id, actor, idempotency_key, "issue_credit_note",
                              {"credit_note_id": credit_note_id, "amount_nanos": amount_nanos,
                               "reason": reason}, apply)

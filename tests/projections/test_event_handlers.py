"""Every domain event either moves a read model through its handler or is listed as changing none,
so a new event cannot silently fail to move a balance."""

from __future__ import annotations

from eventsourcing.domain import Aggregate

from domain.account import Account
from domain.auto_recharge import AutoRechargePolicy
from domain.invoice import Invoice
from domain.package import Package
from domain.payment import Payment, PaymentBook
from domain.team import Team
from projections.summaries import SUMMARIES
from projections.view_handlers import EVENTS_WITHOUT_VIEW_CHANGES, HANDLERS, MONEY_EVENTS

AGGREGATES = (Team, Account, Package, Invoice, Payment, PaymentBook, AutoRechargePolicy)


def _event_classes(aggregate: type[Aggregate]) -> set[type]:
    """The event classes an aggregate can store. Its `Event` base is left out, and so is the
    library's default `Created` class when the aggregate is created by a named event of its own
    (`Team.Registered`, `Account.Opened`): that default is then never stored."""
    classes = {value for value in vars(aggregate).values()
               if isinstance(value, type) and issubclass(value, Aggregate.Event)}
    classes.discard(aggregate.Event)
    creations = {cls for cls in classes if issubclass(cls, Aggregate.Created)}
    if len(creations) > 1:
        classes.discard(aggregate.Created)
    return classes


def test_every_event_of_every_aggregate_has_a_handler_or_is_listed_as_changing_no_view() -> None:
    events = set().union(*(_event_classes(aggregate) for aggregate in AGGREGATES))
    covered = set(HANDLERS) | EVENTS_WITHOUT_VIEW_CHANGES
    missing = sorted(cls.__qualname__ for cls in events - covered)
    assert not missing, (
        f"events with no read-model handler: {missing}; add a handler to "
        "projections/view_handlers.py HANDLERS, or list them in EVENTS_WITHOUT_VIEW_CHANGES")
    assert not set(HANDLERS) & EVENTS_WITHOUT_VIEW_CHANGES
    assert covered <= events, "every listed event is an event of one of the aggregates"


def test_money_events_have_handlers_and_summaries_name_handled_events() -> None:
    assert set(HANDLERS) >= MONEY_EVENTS
    assert set(SUMMARIES) <= set(HANDLERS)


def test_the_balance_moving_events_are_all_handled() -> None:
    team_events = _event_classes(Team)
    assert Team.TopUpCredited in team_events  # type: ignore[attr-defined]
    for name in ("TopUpCredited", "TopUpRefunded", "AdjustmentRecorded"):
        assert getattr(Team, name) in HANDLERS
    assert Account.UsageRecorded in HANDLERS

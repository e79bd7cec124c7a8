"""Auto-recharge: a team's standing order to charge its saved card when its balance runs low.

One `AutoRechargePolicy` per team (its id derived from the team). It holds the settings
(threshold, amount, daily cap, all in nanos of the team's currency; the saved payment method) and
the state of the trigger, so that every process that watches the balance agrees on it:

- a *crossing* is one fall of the available balance under the threshold; it is numbered, and its
  payment's id is derived from the policy and that number, so every process that sees the same
  crossing starts the same payment (and Stripe gets one idempotency key);
- a crossing stays open until its payment is final; then it closes. After a success the policy is
  *disarmed*: the next crossing needs the balance back at or above the threshold first (`rearm`)
  and falling again. After a failure it stays armed, but not before `retry_not_before` (the
  service's backoff), and after `FAILURES_IN_A_ROW_MAX` failures in a row it stops until an
  owner or billing member resumes it;
- the amounts started per day (in the team's timezone) bound the charges by the daily cap; a
  charge that failed gives its amount back (it took no money).

Every change is an event naming its actor; the trigger's events name the system actor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidInputError, InvalidStateError
from domain.ids import LEDGER_NAMESPACE
from domain.money import check_amount_nanos, check_currency

# Failures in a row after which the policy stops charging until a member resumes it.
FAILURES_IN_A_ROW_MAX = 3
# Days of started amounts kept for the daily cap (today and a margin for timezone changes).
DAYS_KEPT = 3
PAYMENT_METHOD_LENGTH_MAX = 255
PAYMENT_METHOD_PREFIX = "pm_"
ACTOR_LENGTH_MAX = 200


class AutoRechargeState(StrEnum):
    DISABLED = "disabled"
    ARMED = "armed"  # charges at the next fall under the threshold
    CHARGING = "charging"  # a crossing is open: its payment is not final yet
    BACKING_OFF = "backing_off"  # the last charge failed: armed again after retry_not_before
    WAITING_FOR_RECOVERY = "waiting_for_recovery"  # charged: the balance must rise again first
    STOPPED = "stopped"  # too many failures in a row: a member resumes it


def auto_recharge_id_for(team_id: UUID) -> UUID:
    return uuid5(LEDGER_NAMESPACE, f"auto-recharge:{team_id}")


@dataclass(frozen=True)
class RechargeSettings:
    """What a member sets. The amount is checked against the top-up limits by the service."""

    threshold_nanos: int
    amount_nanos: int
    daily_cap_nanos: int
    payment_method_id: str

    def __post_init__(self) -> None:
        check_amount_nanos("threshold_nanos", self.threshold_nanos, allow_zero=True)
        check_amount_nanos("amount_nanos", self.amount_nanos)
        check_amount_nanos("daily_cap_nanos", self.daily_cap_nanos)
        if self.daily_cap_nanos < self.amount_nanos:
            raise InvalidInputError(
                f"daily_cap_nanos ({self.daily_cap_nanos}) is below amount_nanos "
                f"({self.amount_nanos}): no recharge could ever start; raise the cap to at "
                "least the amount")
        method = self.payment_method_id
        if not isinstance(method, str) or not method.startswith(PAYMENT_METHOD_PREFIX) or \
                not 3 < len(method) <= PAYMENT_METHOD_LENGTH_MAX or not method.isprintable():
            raise InvalidInputError(
                f"payment_method_id must be a saved card's Stripe id (pm_..., at most "
                f"{PAYMENT_METHOD_LENGTH_MAX} characters)")


def _check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not 0 < len(actor) <= ACTOR_LENGTH_MAX:
        raise InvalidInputError(f"actor must be 1 to {ACTOR_LENGTH_MAX} characters")
    return actor


class AutoRechargePolicy(Aggregate):
    @staticmethod
    def create_id(team_id: UUID) -> UUID:
        return auto_recharge_id_for(team_id)

    @event("Created")
    def __init__(self, team_id: UUID, currency: str, threshold_nanos: int, amount_nanos: int,
                 daily_cap_nanos: int, payment_method_id: str, enabled: bool,
                 actor: str) -> None:
        self.team_id = team_id
        self.currency = currency
        self._set(threshold_nanos, amount_nanos, daily_cap_nanos, payment_method_id)
        self.enabled = enabled
        self.armed = True
        self.stopped = False
        self.crossings = 0
        self.open_payment_id: UUID | None = None
        self.open_amount_nanos = 0  # what the open crossing charges (the settings may change)
        self.open_payment_method_id = ""
        self.open_day = ""
        self.opened_at: datetime | None = None
        self.failures_in_row = 0
        self.retry_not_before: datetime | None = None
        self.credited_seen_nanos = 0  # the team's credits when the last crossing closed
        self.started_by_day: dict[str, int] = {}  # ISO day (team's timezone) -> nanos started
        self.cap_reached_day: str | None = None
        self.last_failure: str | None = None

    def _set(self, threshold_nanos: int, amount_nanos: int, daily_cap_nanos: int,
             payment_method_id: str) -> None:
        self.threshold_nanos = threshold_nanos
        self.amount_nanos = amount_nanos
        self.daily_cap_nanos = daily_cap_nanos
        self.payment_method_id = payment_method_id

    @classmethod
    def create(cls, team_id: UUID, currency: str, settings: RechargeSettings, enabled: bool,
               actor: str) -> AutoRechargePolicy:
        check_currency(currency)
        return cls(team_id=team_id, currency=currency, threshold_nanos=settings.threshold_nanos,
                   amount_nanos=settings.amount_nanos, daily_cap_nanos=settings.daily_cap_nanos,
                   payment_method_id=settings.payment_method_id, enabled=enabled,
                   actor=_check_actor(actor))

    # What members do -----------------------------------------------------------------------

    @property
    def settings(self) -> RechargeSettings:
        return RechargeSettings(self.threshold_nanos, self.amount_nanos, self.daily_cap_nanos,
                                self.payment_method_id)

    def configure(self, settings: RechargeSettings, enabled: bool, actor: str) -> str:
        """Enable, change or disable; returns what happened ("unchanged" for a repeat)."""
        _check_actor(actor)
        s = settings
        if enabled and not self.enabled:
            self._enabled(threshold_nanos=s.threshold_nanos, amount_nanos=s.amount_nanos,
                          daily_cap_nanos=s.daily_cap_nanos,
                          payment_method_id=s.payment_method_id, actor=actor)
            return "enabled"
        if not enabled and self.enabled:
            self._disabled(threshold_nanos=s.threshold_nanos, amount_nanos=s.amount_nanos,
                           daily_cap_nanos=s.daily_cap_nanos,
                           payment_method_id=s.payment_method_id, actor=actor)
            return "disabled"
        if settings != self.settings:
            self._changed(threshold_nanos=s.threshold_nanos, amount_nanos=s.amount_nanos,
                          daily_cap_nanos=s.daily_cap_nanos,
                          payment_method_id=s.payment_method_id, actor=actor)
            return "changed"
        return "unchanged"

    @event("Enabled")
    def _enabled(self, threshold_nanos: int, amount_nanos: int, daily_cap_nanos: int,
                 payment_method_id: str, actor: str) -> None:
        self._set(threshold_nanos, amount_nanos, daily_cap_nanos, payment_method_id)
        self.enabled = True

    @event("Changed")
    def _changed(self, threshold_nanos: int, amount_nanos: int, daily_cap_nanos: int,
                 payment_method_id: str, actor: str) -> None:
        self._set(threshold_nanos, amount_nanos, daily_cap_nanos, payment_method_id)

    @event("Disabled")
    def _disabled(self, threshold_nanos: int, amount_nanos: int, daily_cap_nanos: int,
                  payment_method_id: str, actor: str) -> None:
        self._set(threshold_nanos, amount_nanos, daily_cap_nanos, payment_method_id)
        self.enabled = False

    def resume(self, actor: str) -> None:
        _check_actor(actor)
        if not self.stopped:
            raise InvalidStateError(
                "auto-recharge is not stopped; resume is for a policy stopped after "
                f"{FAILURES_IN_A_ROW_MAX} failed charges in a row")
        self._resumed(actor=actor)

    @event("Resumed")
    def _resumed(self, actor: str) -> None:
        self.stopped = False
        self.failures_in_row = 0
        self.retry_not_before = None
        self.armed = True

    # The trigger ---------------------------------------------------------------------------

    def state(self, now: datetime) -> AutoRechargeState:
        if self.open_payment_id is not None:
            return AutoRechargeState.CHARGING
        if self.stopped:
            return AutoRechargeState.STOPPED
        if not self.enabled:
            return AutoRechargeState.DISABLED
        if self.retry_not_before is not None and now < self.retry_not_before:
            return AutoRechargeState.BACKING_OFF
        return AutoRechargeState.ARMED if self.armed else AutoRechargeState.WAITING_FOR_RECOVERY

    def started_on(self, day: date) -> int:
        return self.started_by_day.get(day.isoformat(), 0)

    def may_open(self, now: datetime) -> bool:
        return self.state(now) == AutoRechargeState.ARMED

    def open_crossing(self, payment_id: UUID, available_nanos: int, now: datetime, day: date,
                      actor: str) -> None:
        if not self.may_open(now):
            raise InvalidStateError(f"auto-recharge is {self.state(now).value}; no new crossing")
        if self.started_on(day) + self.amount_nanos > self.daily_cap_nanos:
            raise InvalidStateError("the daily cap does not allow another recharge today")
        self._crossing_opened(number=self.crossings + 1, payment_id=payment_id,
                              amount_nanos=self.amount_nanos,
                              payment_method_id=self.payment_method_id, day=day.isoformat(),
                              available_nanos=available_nanos, opened_at=now,
                              actor=_check_actor(actor))

    @event("CrossingOpened")
    def _crossing_opened(self, number: int, payment_id: UUID, amount_nanos: int,
                         payment_method_id: str, day: str, available_nanos: int,
                         opened_at: datetime, actor: str) -> None:
        self.crossings = number
        self.open_payment_id = payment_id
        self.open_amount_nanos = amount_nanos
        self.open_payment_method_id = payment_method_id
        self.open_day = day
        self.opened_at = opened_at
        recent = sorted(self.started_by_day)[-(DAYS_KEPT - 1):]
        self.started_by_day = {d: self.started_by_day[d] for d in recent}
        self.started_by_day[day] = self.started_by_day.get(day, 0) + amount_nanos

    def note_cap_reached(self, day: date, available_nanos: int, actor: str) -> bool:
        """Record once per day that the cap held a recharge back; False if already noted."""
        if self.cap_reached_day == day.isoformat():
            return False
        self._cap_reached(day=day.isoformat(), available_nanos=available_nanos,
                          started_nanos=self.started_on(day), actor=_check_actor(actor))
        return True

    @event("DailyCapReached")
    def _cap_reached(self, day: str, available_nanos: int, started_nanos: int,
                     actor: str) -> None:
        self.cap_reached_day = day

    def close_crossing(self, payment_id: UUID, outcome: str, credited_seen_nanos: int,
                       retry_not_before: datetime | None, failure: str | None,
                       actor: str) -> bool:
        """The open crossing's payment is final. False if that crossing is closed already."""
        if self.open_payment_id != payment_id:
            return False
        succeeded = outcome == "succeeded"
        failures = 0 if succeeded else self.failures_in_row + 1
        self._crossing_closed(number=self.crossings, payment_id=payment_id, outcome=outcome,
                              failures_in_row=failures,
                              retry_not_before=None if succeeded else retry_not_before,
                              credited_seen_nanos=credited_seen_nanos,
                              failure=None if succeeded else (failure or outcome)[:200],
                              actor=_check_actor(actor))
        if failures >= FAILURES_IN_A_ROW_MAX:
            self._stopped(failures_in_row=failures, actor=actor)
        return True

    @event("CrossingClosed")
    def _crossing_closed(self, number: int, payment_id: UUID, outcome: str,
                         failures_in_row: int, retry_not_before: datetime | None,
                         credited_seen_nanos: int, failure: str | None, actor: str) -> None:
        if outcome != "succeeded" and self.open_day in self.started_by_day:
            # Nothing was charged: the day's cap is given back.
            self.started_by_day[self.open_day] -= self.open_amount_nanos
        self.open_payment_id = None
        self.opened_at = None
        self.failures_in_row = failures_in_row
        self.retry_not_before = retry_not_before
        self.credited_seen_nanos = credited_seen_nanos
        self.last_failure = failure
        # A success disarms until the balance is seen back up; a failure stays armed (backoff).
        self.armed = outcome != "succeeded"

    @event("Stopped")
    def _stopped(self, failures_in_row: int, actor: str) -> None:
        self.stopped = True

    def sees_recent(self, credited_nanos: int) -> bool:
        """Whether a balance read shows at least the credits known when the last crossing
        closed: an older read (a lagging read model) must not re-arm or open anything."""
        return credited_nanos >= self.credited_seen_nanos

    def rearm(self, available_nanos: int, actor: str) -> bool:
        """The balance is back at or above the threshold: the next fall is a new crossing."""
        if self.armed or self.open_payment_id is not None:
            return False
        self._rearmed(available_nanos=available_nanos, actor=_check_actor(actor))
        return True

    @event("Rearmed")
    def _rearmed(self, available_nanos: int, actor: str) -> None:
        self.armed = True

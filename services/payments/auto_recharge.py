"""Auto-recharge: members set a team's policy; the trigger charges once per crossing.

Members (owner or billing) enable, change, disable and resume a policy (`configure`, `resume`);
each is an attributed event of the team's `AutoRechargePolicy`. The trigger (`observe`) is run by
the watcher (`services.payments.auto_recharge_watcher`) with the team's balance as the read model
shows it; every step it takes is a command on the policy attributed to `RECHARGE_ACTOR`:

1. open a crossing (numbered) when the available balance is under the threshold, the policy is
   armed, out of backoff and under today's cap. Opening is an optimistic write on the policy, so
   of two processes that see the same crossing one opens it and the other finds it open;
2. charge it through `TopUps.start_top_up` with a request key derived from the policy and the
   crossing number: the same payment id for everyone, and so one Stripe idempotency key. Only the
   process that opened the crossing charges at once; another charges (the same payment, the same
   key) only when the crossing has had no Stripe object for `resume_after`, i.e. the
   opener crashed or Stripe was unreachable;
3. follow the payment: the credit arrives through `Settlement` as for any top-up (Stripe's
   webhook, or `TopUps.refresh_payment` reading the PaymentIntent when the payment has not moved
   for `read_after`); once the payment is final the crossing closes: a success disarms
   the policy until the balance is seen back at or above the threshold, a failure sets the next
   try after `backoff` and counts towards the stop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from eventsourcing.domain import Aggregate

from domain.auto_recharge import AutoRechargePolicy, RechargeSettings, auto_recharge_id_for
from domain.errors import NotFoundError
from domain.payment import Payment, PaymentStatus, payment_id_for
from domain.roles import Action
from services.actor import Actor
from services.backoff import Backoff
from services.command_runs import Attempt, Command, team_scope
from services.ledger import Ledger
from services.payments.settlement import PaymentNotFoundError
from services.payments.top_ups import TOP_UP_ACTION, TopUps

# Who may change a policy: who may start a top-up (owner, billing); it charges the same card.
AUTO_RECHARGE_ACTION = TOP_UP_ACTION
VIEW_ACTION = Action.VIEW_BILLING
RECHARGE_ACTOR = Actor.system("auto-recharge")
# Waits after the 1st, 2nd, ... failed recharge before the next try (services/backoff.py).
RECHARGE_BACKOFF = Backoff(first_seconds=15 * 60, longest_seconds=6 * 3600)
# A crossing whose payment has no Stripe object after this long is charged again by whoever
# sees it (same payment, same idempotency key): its opener crashed or Stripe was unreachable.
# Longer than a Stripe call with its retries (30 s timeout, 2 retries).
RESUME_AFTER = timedelta(minutes=5)
# A payment that has not moved for this long is read from Stripe (a webhook that never came).
READ_AFTER = timedelta(seconds=30)


class AutoRechargeNotFoundError(NotFoundError):
    code = "auto_recharge_not_set"


@dataclass(frozen=True)
class Observation:
    """A team's balance as a read model shows it: what may be spent, and the credits it has
    seen (so that a read older than the last recharge is recognised)."""

    available_nanos: int
    credited_nanos: int


def recharge_request_key(policy_id: UUID, crossing: int) -> str:
    return f"auto-recharge:{policy_id}:{crossing}"


class AutoRecharges:
    def __init__(self, ledger: Ledger, top_ups: TopUps, backoff: Backoff = RECHARGE_BACKOFF,
                 resume_after: timedelta | None = None,
                 read_after: timedelta | None = None) -> None:
        self.ledger = ledger
        self.top_ups = top_ups
        self.backoff = backoff
        self.resume_after = RESUME_AFTER if resume_after is None else resume_after
        self.read_after = READ_AFTER if read_after is None else read_after

    # Reading -------------------------------------------------------------------------------

    def find(self, team_id: UUID) -> AutoRechargePolicy | None:
        policy_id = auto_recharge_id_for(team_id)
        if not self.ledger.exists(policy_id):
            return None
        policy: AutoRechargePolicy = self.ledger.repository.get(policy_id)
        return policy

    def get(self, team_id: UUID, actor: Actor) -> AutoRechargePolicy:
        self.ledger.authorize(self.ledger.get_team(team_id), actor, VIEW_ACTION)
        policy = self.find(team_id)
        if policy is None:
            raise AutoRechargeNotFoundError(
                f"team {team_id} has no auto-recharge; an owner or billing member sets one "
                "with PUT /v1/teams/{team_id}/auto-recharge")
        return policy

    def now(self) -> datetime:
        return self.ledger.clock()

    # What members do -----------------------------------------------------------------------

    def configure(self, team_id: UUID, settings: RechargeSettings, enabled: bool,
                  actor: Actor) -> tuple[AutoRechargePolicy, str]:
        """Enable, change or disable the team's policy; returns it and what happened."""
        def attempt() -> Attempt:
            team = self.ledger.get_team(team_id)
            self.ledger.authorize(team, actor, AUTO_RECHARGE_ACTION)
            self.top_ups.check_amount(team, settings.amount_nanos)  # the top-up limits
            policy = self.find(team_id)
            if policy is None:
                policy = AutoRechargePolicy.create(team_id, team.currency, settings, enabled,
                                                   actor.user_id)
                return Attempt([policy], "enabled" if enabled else "disabled")
            return Attempt([policy], policy.configure(settings, enabled, actor.user_id))

        result = self._run("configure_auto_recharge", team_id, actor, {
            "threshold_nanos": settings.threshold_nanos, "amount_nanos": settings.amount_nanos,
            "daily_cap_nanos": settings.daily_cap_nanos,
            "payment_method_id": settings.payment_method_id, "enabled": enabled}, attempt)
        return self.get(team_id, actor), result

    def resume(self, team_id: UUID, actor: Actor) -> AutoRechargePolicy:
        """Start charging again after the policy stopped on failures (owner or billing)."""
        def attempt() -> Attempt:
            self.ledger.authorize(self.ledger.get_team(team_id), actor, AUTO_RECHARGE_ACTION)
            policy = self.get(team_id, actor)
            policy.resume(actor.user_id)
            return Attempt([policy], "resumed")

        self._run("resume_auto_recharge", team_id, actor, {}, attempt)
        return self.get(team_id, actor)

    def _run(self, name: str, team_id: UUID, actor: Actor, arguments: dict[str, object],
             attempt: Callable[[], Attempt]) -> str:
        return self.ledger.commands.run(
            Command(name, team_scope(team_id), {"team_id": str(team_id), **arguments},
                    actor.user_id), attempt)

    # The trigger ---------------------------------------------------------------------------

    def observe(self, team_id: UUID, seen: Observation) -> str:
        """One step of the trigger for one team; returns what it did (for logs and tests)."""
        policy = self.find(team_id)
        if policy is None:
            return "no policy"
        now = self.now()
        if policy.open_payment_id is not None:
            return self._follow(policy, now)
        if not policy.sees_recent(seen.credited_nanos):
            return "balance read older than the last recharge"
        if seen.available_nanos >= policy.threshold_nanos:
            if policy.armed:
                return "above threshold"
            return self._step(policy.team_id, "rearm_auto_recharge", lambda p: "rearmed"
                              if p.rearm(seen.available_nanos, RECHARGE_ACTOR.user_id)
                              else "armed already")
        if not policy.may_open(now):
            return policy.state(now).value
        team = self.ledger.get_team(team_id)
        if team.suspended:  # a top-up would be refused: open no crossing it cannot charge
            return "team suspended"
        day = now.astimezone(ZoneInfo(team.timezone)).date()
        if policy.started_on(day) + policy.amount_nanos > policy.daily_cap_nanos:
            return self._step(team_id, "note_auto_recharge_cap", lambda p: "daily cap reached"
                              if p.note_cap_reached(day, seen.available_nanos,
                                                    RECHARGE_ACTOR.user_id)
                              else "daily cap reached (noted)")

        def open_crossing(p: AutoRechargePolicy) -> str:
            if not p.may_open(now) or not p.sees_recent(seen.credited_nanos) or \
                    p.started_on(day) + p.amount_nanos > p.daily_cap_nanos:
                return "seen by another process"
            p.open_crossing(payment_id_for(team_id, recharge_request_key(p.id, p.crossings + 1)),
                            seen.available_nanos, now, day, RECHARGE_ACTOR.user_id)
            return "opened"

        if self._step(team_id, "open_auto_recharge_crossing", open_crossing) != "opened":
            return "seen by another process"
        opened = self.find(team_id)
        assert opened is not None
        return "charged: " + self._close_if_final(opened, self._charge(opened), now)

    def _step(self, team_id: UUID, name: str,
              change: Callable[[AutoRechargePolicy], str]) -> str:
        """Run one trigger step on the freshly loaded policy (retried on a concurrent write)."""
        def attempt() -> Attempt:
            policy = self.find(team_id)
            if policy is None:
                raise AutoRechargeNotFoundError(f"team {team_id} has no auto-recharge")
            result = change(policy)
            changed: list[Aggregate] = [policy] if policy.pending_events else []
            return Attempt(changed, str(result))

        return self._run(name, team_id, RECHARGE_ACTOR, {}, attempt)

    def _charge(self, policy: AutoRechargePolicy) -> Payment:
        """Start (or resume) the open crossing's payment: always the same payment and key."""
        return self.top_ups.start_top_up(
            policy.team_id, policy.open_amount_nanos, policy.open_payment_method_id,
            RECHARGE_ACTOR, request_key=recharge_request_key(policy.id, policy.crossings))

    def _follow(self, policy: AutoRechargePolicy, now: datetime) -> str:
        payment_id = policy.open_payment_id
        assert payment_id is not None
        try:
            payment: Payment | None = self.top_ups.get_payment(payment_id)
        except PaymentNotFoundError:
            payment = None
        if payment is None or (payment.stripe_object_id is None and not payment.is_final):
            if policy.opened_at is not None and now - policy.opened_at < self.resume_after:
                return "charging"
            payment = self._charge(policy)  # the opener crashed, or Stripe was unreachable
        elif not payment.is_final and payment.modified_on is not None and \
                datetime.now(UTC) - payment.modified_on >= self.read_after:
            payment = self.top_ups.refresh_payment(payment_id)
        return self._close_if_final(policy, payment, now)

    def _close_if_final(self, policy: AutoRechargePolicy, payment: Payment,
                        now: datetime) -> str:
        if not payment.is_final:
            return f"payment {payment.status.value}"

        def close(p: AutoRechargePolicy) -> str:
            failed = payment.status != PaymentStatus.SUCCEEDED
            retry = now + timedelta(seconds=self.backoff.delay_seconds(
                p.failures_in_row + 1)) if failed else None
            credited = sum(self.ledger.get_team(p.team_id).top_ups.values())
            closed = p.close_crossing(payment.id, payment.status.value, credited, retry,
                                      payment.failure_code, RECHARGE_ACTOR.user_id)
            return f"closed {payment.status.value}" if closed else "closed already"

        return self._step(policy.team_id, "close_auto_recharge_crossing", close)

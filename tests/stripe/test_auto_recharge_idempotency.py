"""Auto-recharge at the SDK's HTTP layer (localstripe ignores idempotency keys): two processes
that pass over the same crossing at the same moment send Stripe one PaymentIntent request, and a
process that died after opening a crossing, or after Stripe answered, is followed by another that
charges the same payment with the same idempotency key."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from adapters.stripe.settings import StripeSettings
from tests.stripe.auto_recharge_support import (
    DOLLAR,
    Trigger,
    catch_up,
    open_trigger,
    policy_of,
    priced_team,
    set_policy,
)
from tests.stripe.stripe_http_double import StripeHttpDouble

SETTINGS = StripeSettings(api_key="sk_test_double", webhook_secrets=("whsec_x",),
                          network_retries=0)
ROUNDS = 6


class Crash(Exception):
    pass


@pytest.fixture
def double() -> StripeHttpDouble:
    return StripeHttpDouble()


@pytest.fixture
def triggers(database_url: str, double: StripeHttpDouble) -> Iterator[list[Trigger]]:
    catch_up(database_url)
    # The second process resumes a crossing left without a Stripe object at once.
    opened = [open_trigger(database_url, SETTINGS, double),
              open_trigger(database_url, SETTINGS, double, resume_after=timedelta(0))]
    yield opened
    for trigger in opened:
        trigger.close()


def intent_posts(double: StripeHttpDouble) -> list[str | None]:
    return [r.idempotency_key for r in double.requests
            if r.method == "post" and r.path == "/v1/payment_intents"]


def low_team(trigger: Trigger, database_url: str, key: str) -> UUID:
    team_id, _ = priced_team(trigger.ledger, key, balance_dollars=5)
    set_policy(trigger.recharges, team_id, threshold=20, amount=20, cap=100)
    catch_up(database_url)
    return team_id


def test_two_processes_passing_over_one_crossing_together_send_one_key(
        database_url: str, triggers: list[Trigger], double: StripeHttpDouble) -> None:
    # Both open nothing on their own: the second process resumes only after its delay.
    triggers[1].recharges.resume_after = timedelta(minutes=5)
    team_id = low_team(triggers[0], database_url, "together")
    for _ in range(ROUNDS):
        barrier = threading.Barrier(len(triggers))

        def one_pass(trigger: Trigger, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            trigger.watcher.run_pass()
        passes = [threading.Thread(target=one_pass, args=(t,)) for t in triggers]
        for thread in passes:
            thread.start()
        for thread in passes:
            thread.join()
        catch_up(database_url)

    [payment] = triggers[0].recharges.top_ups.payments_of(team_id)
    assert intent_posts(double) == [payment.stripe_idempotency_key]
    assert len(double.of_kind("pi_")) == 1
    assert policy_of(triggers[1].ledger, team_id).crossings == 1
    assert list(triggers[1].ledger.get_team(team_id).top_ups.values()) == [20 * DOLLAR]


def crash_once(target: Any) -> Any:
    crashed: list[bool] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not crashed:
            crashed.append(True)
            raise Crash("the process died here")
        return target(*args, **kwargs)
    return wrapper


@pytest.mark.parametrize("where", ["after opening the crossing", "after Stripe answered"])
def test_a_crossing_left_by_a_dead_process_is_charged_once_with_the_same_key(
        database_url: str, triggers: list[Trigger], double: StripeHttpDouble,
        where: str) -> None:
    dying, survivor = triggers
    team_id = low_team(dying, database_url, "crash")
    if where == "after opening the crossing":
        dying.recharges.top_ups.start_top_up = crash_once(  # type: ignore[method-assign]
            dying.recharges.top_ups.start_top_up)
    else:
        dying.recharges.top_ups.settlement.record_answer = crash_once(  # type: ignore[method-assign]
            dying.recharges.top_ups.settlement.record_answer)
    with pytest.raises(Crash):
        dying.recharges.observe(team_id, _seen(dying, team_id))
    assert policy_of(survivor.ledger, team_id).open_payment_id is not None

    assert survivor.watcher.run_pass()[team_id] == "payment processing"
    assert survivor.watcher.run_pass()[team_id] == "closed succeeded"
    [payment] = survivor.recharges.top_ups.payments_of(team_id)
    keys = intent_posts(double)
    assert set(keys) == {payment.stripe_idempotency_key}
    assert len(keys) == (1 if where == "after opening the crossing" else 2)
    assert len(double.of_kind("pi_")) == 1
    assert list(survivor.ledger.get_team(team_id).top_ups.values()) == [20 * DOLLAR]
    assert policy_of(survivor.ledger, team_id).crossings == 1


def _seen(trigger: Trigger, team_id: UUID) -> Any:
    return trigger.balances.observe([team_id])[team_id]

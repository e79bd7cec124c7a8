"""Auto-recharge against localstripe: two watchers (each with its own Ledger and connections, in
threads and in two OS processes) on one database under concurrent usage, the daily cap, a declined
card (backoff, then the stop, then resume), and quiet while the balance stays above the
threshold. The credit comes through the settlement path (a read of the PaymentIntent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from psycopg import connect

from adapters.nats.ingest_settings import IngestSettings
from adapters.postgres.view_schema import LIVE_SCHEMA
from adapters.runtime.auto_recharge_runner import run_watcher
from adapters.runtime.processes import Runtime
from domain.auto_recharge import FAILURES_IN_A_ROW_MAX, AutoRechargeState
from domain.errors import InvalidStateError
from domain.payment import PaymentStatus
from services.payments.auto_recharge_watcher import POLL_MIN
from tests.stripe.auto_recharge_support import (
    DOLLAR,
    OWNER,
    Trigger,
    catch_up,
    open_trigger,
    policy_of,
    priced_team,
    projecting,
    set_policy,
    spend,
)
from tests.stripe.conftest import API_KEY, WEBHOOK_SECRET, settings_for

WAIT_SECONDS_MAX = 30
REPO_ROOT = Path(__file__).resolve().parents[2]
PASSES_WHILE_QUIET = 10


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS_MAX
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {WAIT_SECONDS_MAX} s")
        time.sleep(0.05)


@pytest.fixture
def triggers(database_url: str, localstripe: httpx.Client,
             localstripe_url: str) -> Iterator[list[Trigger]]:
    """Two processes' triggers on the same database; the projections' tables made first."""
    catch_up(database_url)
    opened = [open_trigger(database_url, settings_for(localstripe_url)) for _ in range(2)]
    yield opened
    for trigger in opened:
        trigger.close()


def charges(trigger: Trigger, team_id: UUID) -> list[str]:
    """The succeeded charges localstripe holds for the team's customer."""
    customer = trigger.ledger.get_team(team_id).stripe_customer_id
    if customer is None:
        return []
    gateway = trigger.recharges.top_ups.gateway
    return [c.charge_id for c in gateway.list_charges(customer) if c.status == "succeeded"]


def credits(trigger: Trigger, team_id: UUID) -> list[int]:
    return list(trigger.ledger.get_team(team_id).top_ups.values())


def audit_of(database_url: str, team_id: UUID) -> list[tuple[str, str]]:
    catch_up(database_url)
    with connect(database_url) as conn:
        rows = conn.execute(f"SELECT event_type, actor FROM {LIVE_SCHEMA}.audit WHERE team_id = "
                            "%s AND event_type LIKE 'AutoRechargePolicy.%%' ORDER BY position",
                            [team_id]).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def settle(database_url: str, trigger: Trigger) -> dict[UUID, str]:
    catch_up(database_url)
    return trigger.watcher.run_pass()


def test_two_watchers_charge_once_per_crossing_under_concurrent_usage(
        database_url: str, triggers: list[Trigger]) -> None:
    first, second = triggers
    team_id, account_id = priced_team(first.ledger, "acme", balance_dollars=30)
    assert set_policy(first.recharges, team_id, threshold=20, amount=20, cap=100) == "enabled"
    stop = threading.Event()
    with projecting(database_url):
        watchers = [threading.Thread(target=t.watcher.run, args=(stop,), kwargs={
            "poll": POLL_MIN}) for t in triggers]
        for watcher in watchers:
            watcher.start()
        try:
            # Two writers spend 16 dollars together, two at a time: 30 -> 14 crosses 20 once;
            # the recharge of 20 lifts it to 34, above the threshold for good.
            spenders = [threading.Thread(target=lambda t=t: [spend(t.ledger, account_id, 2)
                                                             for _ in range(4)])
                        for t in triggers]
            for spender in spenders:
                spender.start()
            for spender in spenders:
                spender.join()
            wait_until(lambda: credits(first, team_id) == [20 * DOLLAR]
                       and policy_of(first.ledger, team_id).open_payment_id is None,
                       "the recharge credited and its crossing closed")
            wait_until(lambda: policy_of(first.ledger, team_id).armed,
                       "the policy re-armed once the balance was seen above the threshold")
            time.sleep(0.5)  # more passes of both watchers: nothing new may start
        finally:
            stop.set()
            for watcher in watchers:
                watcher.join()

    policy = policy_of(second.ledger, team_id)
    assert policy.crossings == 1
    assert len(charges(first, team_id)) == 1
    assert credits(second, team_id) == [20 * DOLLAR]
    credited_events = [e for e in first.ledger.events.get(team_id)
                       if type(e).__name__ == "TopUpCredited"]
    assert len(credited_events) == 1
    [payment] = first.recharges.top_ups.payments_of(team_id)
    assert (payment.status, payment.started_by) == (PaymentStatus.SUCCEEDED,
                                                    "system:auto-recharge")
    steps = audit_of(database_url, team_id)
    assert [s for s, _ in steps] == [
        "AutoRechargePolicy.Created", "AutoRechargePolicy.CrossingOpened",
        "AutoRechargePolicy.CrossingClosed", "AutoRechargePolicy.Rearmed"]
    assert [a for _, a in steps] == [OWNER.user_id] + ["system:auto-recharge"] * 3


def test_nothing_is_charged_while_the_balance_stays_above_the_threshold(
        database_url: str, triggers: list[Trigger]) -> None:
    trigger = triggers[0]
    team_id, account_id = priced_team(trigger.ledger, "calm", balance_dollars=30)
    set_policy(trigger.recharges, team_id, threshold=20, amount=20, cap=100)
    for _ in range(PASSES_WHILE_QUIET):
        spend(trigger.ledger, account_id, 1)
        assert settle(database_url, trigger) == {team_id: "above threshold"}
    # 30 - 10 = 20: at the threshold is not under it.
    assert policy_of(trigger.ledger, team_id).crossings == 0
    assert trigger.recharges.top_ups.payments_of(team_id) == []
    spend(trigger.ledger, account_id, 1)
    assert settle(database_url, trigger)[team_id].startswith("charged")


def test_the_daily_cap_holds_a_second_recharge_back(
        database_url: str, triggers: list[Trigger]) -> None:
    trigger = triggers[0]
    team_id, account_id = priced_team(trigger.ledger, "capped", balance_dollars=25)
    set_policy(trigger.recharges, team_id, threshold=20, amount=20, cap=30)
    spend(trigger.ledger, account_id, 10)  # 15: under
    assert settle(database_url, trigger)[team_id] == "charged: payment processing"
    assert settle(database_url, trigger)[team_id] == "closed succeeded"  # read from Stripe
    assert settle(database_url, trigger)[team_id] == "rearmed"  # 35 seen
    spend(trigger.ledger, account_id, 20)  # 15 again: a new crossing, but 20 + 20 > 30
    assert settle(database_url, trigger)[team_id] == "daily cap reached"
    assert settle(database_url, trigger)[team_id] == "daily cap reached (noted)"
    policy = policy_of(trigger.ledger, team_id)
    assert (policy.crossings, len(charges(trigger, team_id))) == (1, 1)
    assert ("AutoRechargePolicy.DailyCapReached", "system:auto-recharge") in \
        audit_of(database_url, team_id)
    # Raising the cap lets the waiting crossing charge.
    set_policy(trigger.recharges, team_id, threshold=20, amount=20, cap=40)
    assert settle(database_url, trigger)[team_id].startswith("charged")


def test_a_declined_card_backs_off_then_stops_and_resume_charges_again(
        database_url: str, triggers: list[Trigger]) -> None:
    trigger = triggers[0]
    # The ledger's clock stands still unless the test moves it: "inside the backoff" must not
    # depend on how fast a loaded machine runs the next pass.
    frozen = [trigger.ledger.clock()]
    trigger.ledger.clock = lambda: frozen[0]
    team_id, _ = priced_team(trigger.ledger, "declined", balance_dollars=10)
    set_policy(trigger.recharges, team_id, threshold=20, amount=20, cap=500,
               card="pm_card_chargeCustomerFail")
    for failure in range(1, FAILURES_IN_A_ROW_MAX + 1):
        assert settle(database_url, trigger)[team_id] == "charged: closed failed"
        policy = policy_of(trigger.ledger, team_id)
        assert policy.failures_in_row == failure
        if failure == FAILURES_IN_A_ROW_MAX:
            break
        assert policy.retry_not_before is not None
        # Inside the backoff: nothing is tried.
        assert settle(database_url, trigger)[team_id] == AutoRechargeState.BACKING_OFF.value
        frozen[0] = policy.retry_not_before  # the end of the backoff
    assert settle(database_url, trigger)[team_id] == AutoRechargeState.STOPPED.value
    payments = trigger.recharges.top_ups.payments_of(team_id)
    assert [p.status for p in payments] == [PaymentStatus.FAILED] * FAILURES_IN_A_ROW_MAX
    assert credits(trigger, team_id) == []
    assert ("AutoRechargePolicy.Stopped", "system:auto-recharge") in \
        audit_of(database_url, team_id)

    set_policy(trigger.recharges, team_id, threshold=20, amount=20, cap=500)  # a good card
    assert settle(database_url, trigger)[team_id] == AutoRechargeState.STOPPED.value
    trigger.recharges.resume(team_id, OWNER)
    with pytest.raises(InvalidStateError, match="not stopped"):
        trigger.recharges.resume(team_id, OWNER)
    assert settle(database_url, trigger)[team_id] == "charged: payment processing"
    assert settle(database_url, trigger)[team_id] == "closed succeeded"
    assert credits(trigger, team_id) == [20 * DOLLAR]
    assert policy_of(trigger.ledger, team_id).failures_in_row == 0


def test_the_ledger_up_runner_charges_with_stripe_from_the_environment(
        database_url: str, localstripe: httpx.Client, localstripe_url: str,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`run_watcher` as `ledger up` runs it: settings from the environment, the read model's
    balances, a credit read from Stripe; it returns when stopped."""
    catch_up(database_url)
    owner_side = open_trigger(database_url, settings_for(localstripe_url))
    try:
        team_id, account_id = priced_team(owner_side.ledger, "upped", balance_dollars=25)
        set_policy(owner_side.recharges, team_id, threshold=20, amount=20, cap=100)
        for name, value in (("LEDGER_STRIPE_API_KEY", API_KEY),
                            ("LEDGER_STRIPE_WEBHOOK_SECRETS", WEBHOOK_SECRET),
                            ("LEDGER_STRIPE_API_BASE", localstripe_url),
                            ("LEDGER_AUTO_RECHARGE_POLL_SECONDS", "0.05")):
            monkeypatch.setenv(name, value)
        monkeypatch.setattr("services.payments.auto_recharge.READ_AFTER", timedelta(0))
        stop = threading.Event()
        runtime = Runtime(database_url, "", tmp_path, IngestSettings())
        runner = threading.Thread(target=run_watcher, args=(runtime, stop))
        with projecting(database_url):
            runner.start()
            try:
                spend(owner_side.ledger, account_id, 10)
                wait_until(lambda: credits(owner_side, team_id) == [20 * DOLLAR],
                           "the recharge by the ledger up runner")
            finally:
                stop.set()
                runner.join(timeout=WAIT_SECONDS_MAX)
        assert not runner.is_alive()
        assert len(charges(owner_side, team_id)) == 1
    finally:
        owner_side.close()


def test_two_watcher_processes_charge_once_per_crossing(
        database_url: str, localstripe: httpx.Client, localstripe_url: str,
        tmp_path: Path) -> None:
    """As the threads test above, with two real OS processes running `ledger up`'s watcher."""
    catch_up(database_url)
    first, second = (open_trigger(database_url, settings_for(localstripe_url))
                     for _ in range(2))
    env = {**os.environ, "LEDGER_STRIPE_API_KEY": API_KEY,
           "LEDGER_STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
           "LEDGER_STRIPE_API_BASE": localstripe_url,
           "LEDGER_AUTO_RECHARGE_POLL_SECONDS": "0.05"}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        team_id, account_id = priced_team(first.ledger, "processes", balance_dollars=30)
        set_policy(first.recharges, team_id, threshold=20, amount=20, cap=100)
        with projecting(database_url):
            for name in ("one", "two"):
                with (tmp_path / f"{name}.log").open("wb") as log:
                    processes.append(subprocess.Popen(
                        [sys.executable, "-m", "tests.stripe.recharge_watcher_process",
                         database_url, str(tmp_path)], env=env, cwd=REPO_ROOT, stdout=log,
                        stderr=subprocess.STDOUT))
            spenders = [threading.Thread(target=lambda t=t: [spend(t.ledger, account_id, 2)
                                                             for _ in range(4)])
                        for t in (first, second)]
            for spender in spenders:
                spender.start()
            for spender in spenders:
                spender.join()
            wait_until(lambda: credits(first, team_id) == [20 * DOLLAR]
                       and policy_of(first.ledger, team_id).armed,
                       "the recharge credited and the policy re-armed")
            time.sleep(1.0)  # more passes of both processes: nothing new may start
            for process in processes:
                process.send_signal(signal.SIGTERM)
            assert [p.wait(WAIT_SECONDS_MAX) for p in processes] == [0, 0], [
                (tmp_path / f"{n}.log").read_text()[-2000:] for n in ("one", "two")]
        assert policy_of(second.ledger, team_id).crossings == 1
        assert len(charges(first, team_id)) == 1
        assert credits(second, team_id) == [20 * DOLLAR]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        first.close()
        second.close()

"""The authorization query and the published view changes, from the read models."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta

import nats

from adapters.postgres.view_store import PostgresViewStore
from adapters.runtime.auditor_tools import balance_as_of
from adapters.runtime.projection_process import ledger_decoder, run_projections
from tests.projections.history import (
    OWNER,
    STRIPE,
    cost_of,
    ledger_at,
    make_team,
    mixed_history,
    project,
    usage,
)


def test_authorization_flips_when_the_balance_runs_out_and_back_after_a_top_up(
        database_url: str) -> None:
    now = datetime.now(UTC)
    with ledger_at(database_url) as ledger, PostgresViewStore(database_url) as store:
        team = make_team(ledger, "spend", accounts=2)
        account = team.account_ids[0]
        project(database_url)
        answer = store.authorize(account)
        assert (answer.allowed, answer.blocked_by) == (False, "team_balance_exhausted")

        ledger.credit_top_up(team.team_id, "pi_small", 1, "USD", STRIPE)  # 0.01 USD
        project(database_url)
        answer = store.authorize(account)
        assert answer.allowed and answer.balance_nanos == 10_000_000
        assert answer.freshness.position == answer.freshness.head_position
        assert answer.freshness.lag_events == 0

        big = usage(account, "big", now, input_tokens=10_000_000)  # 0.01 USD and a bit
        ledger.record_usage_batch([big])
        stale = store.authorize(account)  # not projected yet: still yes, and says it lags
        assert stale.allowed and stale.freshness.lag_events == 1
        project(database_url)
        answer = store.authorize(account)
        assert (answer.allowed, answer.blocked_by) == (False, "team_balance_exhausted")
        assert answer.balance_nanos == 10_000_000 - cost_of(big) < 0

        ledger.credit_top_up(team.team_id, "pi_more", 100, "USD", STRIPE)
        project(database_url)
        assert store.authorize(account).allowed

        ledger.suspend_account(account, "abuse", OWNER)
        project(database_url)
        assert store.authorize(account).blocked_by == "account_suspended"
        assert store.authorize(team.account_ids[1]).allowed
        ledger.suspend_team(team.team_id, "unpaid", OWNER)
        ledger.close_account(team.account_ids[1], "gone", OWNER)
        project(database_url)
        assert store.authorize(team.account_ids[1]).blocked_by == "account_closed"
        ledger.reactivate_account(account, OWNER)
        project(database_url)
        assert store.authorize(account).blocked_by == "team_suspended"
        unknown = store.authorize(team.team_id)
        assert (unknown.allowed, unknown.blocked_by) == (False, "unknown_account")


def test_the_credit_limit_extends_what_may_be_spent(database_url: str) -> None:
    with ledger_at(database_url) as ledger, PostgresViewStore(database_url) as store:
        team = make_team(ledger, "credit", accounts=1)
        ledger.set_credit_limit(team.team_id, 1_000, OWNER)
        project(database_url)
        answer = store.authorize(team.account_ids[0])
        assert answer.allowed and (answer.balance_nanos, answer.available_nanos) == (0, 1_000)


def test_balance_as_of_a_past_moment_replays_history_to_it(database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        team = make_team(ledger, "asof", accounts=1)
        ledger.credit_top_up(team.team_id, "pi_1", 500, "USD", STRIPE)
        record = usage(team.account_ids[0], "u1", datetime.now(UTC))
        ledger.record_usage_batch([record])
        between = ledger.get_team(team.team_id).modified_on
        ledger.credit_top_up(team.team_id, "pi_2", 700, "USD", STRIPE)
    moment = between + timedelta(microseconds=1)
    # The usage event was stamped after the first top-up; find the moment after it.
    with ledger_at(database_url) as ledger:
        usage_stamp = ledger.get_account(team.account_ids[0]).modified_on
    moment = max(moment, usage_stamp)

    answer = balance_as_of(database_url, ledger_decoder(database_url), team.team_id, moment)

    assert answer["balance"]["credited_nanos"] == 500 * 10**7
    assert answer["balance"]["balance_nanos"] == 500 * 10**7 - cost_of(record)
    assert answer["usage"]["windows"]["total"]["requests"] == 1
    assert answer["lag_events"] == 1  # the second top-up came later
    project(database_url)
    with PostgresViewStore(database_url) as store:
        live = store.balance(team.team_id, datetime.now(UTC))
    assert live is not None and live["balance"]["credited_nanos"] == 1200 * 10**7


def test_view_changes_are_published_on_nats_after_commit(database_url: str,
                                                         nats_server_url: str) -> None:
    with ledger_at(database_url) as ledger:
        team = mixed_history(ledger)

    async def collect() -> list[tuple[str, dict[str, object]]]:
        client = await nats.connect(nats_server_url)
        received: list[tuple[str, dict[str, object]]] = []
        done = asyncio.Event()

        async def on_message(message: nats.aio.msg.Msg) -> None:
            received.append((message.subject, json.loads(message.data)))
            if message.subject.startswith("ledger.views.audit."):
                done.set()

        await client.subscribe(f"ledger.views.*.{team.team_id}", cb=on_message)
        await client.flush()
        stop = threading.Event()
        runner = threading.Thread(target=run_projections,
                                  args=(database_url, nats_server_url, stop))
        runner.start()
        try:
            await asyncio.wait_for(done.wait(), 30)
            await asyncio.sleep(0.2)
        finally:
            stop.set()
            await asyncio.to_thread(runner.join, 30)
            await client.close()
        return received

    received = asyncio.run(collect())

    with PostgresViewStore(database_url) as store:
        position, _ = store.freshness()
        stored = store.team(team.team_id)
    subjects = {subject.rsplit(".", 1)[0] for subject, _ in received}
    assert subjects == {"ledger.views.balance", "ledger.views.usage", "ledger.views.audit"}
    balance = [payload for subject, payload in received if "balance" in subject][-1]
    assert stored is not None
    assert balance["position"] == position and balance["balance_nanos"] == str(stored.balance_nanos)
    assert all(isinstance(payload["position"], int) for _, payload in received)

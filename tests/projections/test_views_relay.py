"""The relay of the views outbox to JetStream, on a real NATS server and PostgreSQL.

NATS is stopped while the projections commit, then started: a consumer created afterwards, asking
for the last message of every subject, gets every team's latest balance view. A relay killed
(SIGKILL) between publishing and marking its rows publishes them again and the stream keeps one
copy of each. The dashboard's live updates (a core subscription on `ledger.views.>`) hear what
the relay publishes to the stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import nats
import psycopg
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from adapters.http.dashboard.live_updates import LiveHub, Notice
from adapters.nats.views_relay import VIEWS_STREAM_NAME, NatsViewsRelay
from adapters.postgres.view_outbox import PostgresViewOutbox
from adapters.postgres.view_store import PostgresViewStore
from adapters.runtime.embedded_nats import EmbeddedNats
from adapters.runtime.projection_process import open_runner, run_projections
from tests.projections.history import OWNER, ledger_at, make_team, project

REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 60.0
TEAMS = 4
FETCH_WAIT_SECONDS = 5.0


@pytest.fixture
def nats_server() -> Iterator[EmbeddedNats]:
    """A NATS server of this test's own, which it may stop and start again."""
    folder = Path(tempfile.mkdtemp(prefix="ledger-views-nats-"))
    server = EmbeddedNats(folder / "nats").start()
    try:
        yield server
    finally:
        server.stop()


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"waited {WAIT_SECONDS:.0f}s for {what}"
        time.sleep(0.05)


def _outbox_rows(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM ledger_views.outbox").fetchone()
    return int(row[0]) if row else 0


def _tracking(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        try:
            row = conn.execute("SELECT notification_id FROM ledger_views.tracking").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


async def _latest_per_subject(url: str, subjects: str, count: int) -> list[Any]:
    """What a consumer created now gets: the last message of every subject under `subjects`."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(subjects, durable="late-dashboard", config=ConsumerConfig(
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT))
        messages = await sub.fetch(count, timeout=FETCH_WAIT_SECONDS)
        for message in messages:
            await message.ack()
        info = await sub.consumer_info()
        assert info.num_pending == 0, "one message per subject, nothing older"
        return [(m.subject, json.loads(m.data)) for m in messages]
    finally:
        await nc.close()


async def _stream_messages(url: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(VIEWS_STREAM_NAME)
        return int(info.state.messages)
    finally:
        await nc.close()


def test_views_committed_while_nats_is_down_reach_a_consumer_created_afterwards(
        database_url: str, nats_server: EmbeddedNats) -> None:
    stop = threading.Event()
    with ledger_at(database_url) as ledger:
        teams = [make_team(ledger, f"t{i}", accounts=1) for i in range(TEAMS)]
        runner = threading.Thread(target=run_projections,
                                  args=(database_url, nats_server.url, stop))
        runner.start()
        try:
            head = ledger.recorder.max_notification_id() or 0
            _wait_for(lambda: _tracking(database_url) >= head, "the first catch-up")
            _wait_for(lambda: _outbox_rows(database_url) == 0, "the first relay")

            nats_server.stop()
            for i, team in enumerate(teams):
                ledger.record_adjustment(team.team_id, f"down-{i}", 1_000 * (i + 1),
                                         "while NATS is down", OWNER)
            head = ledger.recorder.max_notification_id() or 0
            _wait_for(lambda: _tracking(database_url) >= head, "the projections, NATS down")
            assert _outbox_rows(database_url) >= TEAMS, "the views wait in the outbox"

            nats_server.start()
            _wait_for(lambda: _outbox_rows(database_url) == 0, "the relay, NATS back")
        finally:
            stop.set()
            runner.join(WAIT_SECONDS)
    latest = asyncio.run(_latest_per_subject(nats_server.url, "ledger.views.balance.>", TEAMS))
    store = PostgresViewStore(database_url)
    try:
        assert sorted(subject for subject, _ in latest) == sorted(
            f"ledger.views.balance.{team.team_id}" for team in teams)
        for _, message in latest:
            view = store.team(UUID(message["team_id"]))
            assert view is not None
            assert {k: v for k, v in message.items() if k != "position"} == {
                k: str(v) if k.endswith("_nanos") else v for k, v in view.as_dict().items()}
            assert int(message["adjusted_nanos"]) > 0  # the change made while NATS was down
    finally:
        store.close()


def test_a_relay_killed_between_publish_and_mark_publishes_again_without_a_duplicate(
        database_url: str, nats_server: EmbeddedNats) -> None:
    with ledger_at(database_url) as ledger:
        for i in range(TEAMS):
            make_team(ledger, f"k{i}", accounts=1)
    project(database_url)
    rows = _outbox_rows(database_url)
    assert rows >= TEAMS

    child = subprocess.run(
        [sys.executable, "-m", "tests.projections.relay_killed_before_mark", database_url,
         nats_server.url], cwd=REPO_ROOT, env=os.environ, capture_output=True,
        timeout=WAIT_SECONDS)
    assert child.returncode == -9, child.stderr.decode()
    assert _outbox_rows(database_url) == rows, "killed before marking: nothing marked"
    assert asyncio.run(_stream_messages(nats_server.url)) == rows

    outbox = PostgresViewOutbox(database_url)
    relay = NatsViewsRelay(nats_server.url, outbox, on_close=outbox.close)
    try:
        _wait_for(lambda: _outbox_rows(database_url) == 0, "the second relay")
        assert relay.relayed == rows, "every row was published again"
    finally:
        relay.close()
    assert asyncio.run(_stream_messages(nats_server.url)) == rows, "and the stream kept one"


def test_the_dashboards_core_subscription_hears_the_relayed_views(
        database_url: str, nats_server: EmbeddedNats) -> None:
    asyncio.run(_hear_relayed_views(database_url, nats_server.url))


async def _hear_relayed_views(database_url: str, nats_url: str) -> None:
    with ledger_at(database_url) as ledger:
        team = make_team(ledger, "live", accounts=1)
        hub = LiveHub(nats_url=nats_url, database_url=database_url)
        await hub.start()
        outbox = PostgresViewOutbox(database_url)
        relay = None
        try:
            assert hub.source == "nats"
            async with hub.stream(team.team_id) as queue:
                with open_runner(database_url) as runner:  # creates the outbox table
                    relay = NatsViewsRelay(nats_url, outbox, on_close=outbox.close)
                    runner.publisher = relay
                    await asyncio.to_thread(runner.catch_up)
                    notice = await asyncio.wait_for(queue.get(), FETCH_WAIT_SECONDS)
        finally:
            if relay is not None:
                await asyncio.to_thread(relay.close)
            await hub.stop()
    assert isinstance(notice, Notice) and notice.position > 0

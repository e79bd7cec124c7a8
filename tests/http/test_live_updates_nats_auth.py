"""The dashboard's live-update hub connects to NATS with the ledger's auth settings: against a
`nats-server` that requires a token, it subscribes (and hears a view message) with the right
token from the environment, and falls back (never subscribes) with a wrong one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from adapters.http.dashboard.live_updates import LiveHub, Notice
from adapters.nats.auth_settings import ENV_TOKEN, NatsAuthSettings
from adapters.nats.connection import close_nats, connect_nats
from adapters.runtime.loopback_nats import configured_nats_server

NOTICE_WAIT_SECONDS = 5.0
TOKEN = "dashboard-s3cret"


@pytest.fixture
def token_nats(tmp_path: Path) -> Iterator[str]:
    with configured_nats_server(tmp_path, f'authorization {{ token: "{TOKEN}" }}',
                                "token-auth nats-server") as url:
        yield url


async def test_the_hub_uses_the_token_from_the_environment_and_hears_views(
        token_nats: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_TOKEN, TOKEN)
    hub = LiveHub(nats_url=token_nats, database_url=None)
    await hub.start()
    publisher = await connect_nats(token_nats, "views-test", NatsAuthSettings(token=TOKEN))
    try:
        assert hub.source == "nats"
        team_id = uuid4()
        async with hub.stream(team_id) as queue:
            await publisher.publish(f"ledger.views.balance.{team_id}", b'{"position": 7}')
            await publisher.flush()
            notice = await asyncio.wait_for(queue.get(), NOTICE_WAIT_SECONDS)
        assert notice == Notice("balance", 7)
    finally:
        await close_nats(publisher)
        await hub.stop()


async def test_a_wrong_token_is_not_subscribed(token_nats: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_TOKEN, "wrong")
    hub = LiveHub(nats_url=token_nats, database_url=None, nats_start_timeout_seconds=2.0)
    await hub.start()
    try:
        assert hub.source != "nats"
    finally:
        await hub.stop()


async def test_without_the_setting_the_token_server_refuses_the_hub(token_nats: str) -> None:
    hub = LiveHub(nats_url=token_nats, database_url=None, nats_start_timeout_seconds=2.0,
                  nats_auth=NatsAuthSettings())
    await hub.start()
    try:
        assert hub.source != "nats", "before: the hub connected without any auth settings"
    finally:
        await hub.stop()


async def test_a_user_that_may_not_read_the_views_follows_postgres_and_says_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The server refuses the subscription to `ledger.views.>` asynchronously; the hub notices,
    says which permission is missing, and does not claim NATS as its source."""
    config = ('authorization { users: [\n'
              ' {user: narrow, password: "pw-1", permissions: '
              '{ publish: [">"], subscribe: ["_LEDGER_INBOX.>"] } }\n'
              ' {user: wide, password: "pw-2", permissions: '
              '{ publish: [">"], subscribe: ["_LEDGER_INBOX.>", "ledger.views.>"] } }\n] }')
    with configured_nats_server(tmp_path, config, "permissions nats-server") as url:
        narrow = LiveHub(nats_url=url, database_url=None,
                         nats_auth=NatsAuthSettings(user="narrow", password="pw-1"))
        with caplog.at_level("WARNING"):
            await narrow.start()
        try:
            assert narrow.source != "nats"
            assert "may not subscribe to ledger.views.>" in caplog.text
        finally:
            await narrow.stop()
        wide = LiveHub(nats_url=url, database_url=None,
                       nats_auth=NatsAuthSettings(user="wide", password="pw-2"))
        await wide.start()
        try:
            assert wide.source == "nats"
        finally:
            await wide.stop()

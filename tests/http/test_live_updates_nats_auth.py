"""The dashboard's live-update hub connects to NATS with the ledger's auth settings: against a
`nats-server` that requires a token, it subscribes (and hears a view message) with the right
token from the environment, and falls back (never subscribes) with a wrong one."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from adapters.http.dashboard.live_updates import LiveHub, Notice
from adapters.nats.auth_settings import ENV_TOKEN, NatsAuthSettings
from adapters.nats.connection import close_nats, connect_nats
from adapters.runtime.embedded_nats import nats_server_binary
from adapters.runtime.server_files import free_port
from adapters.runtime.server_processes import wait_for_port

SERVER_START_SECONDS = 30.0
NOTICE_WAIT_SECONDS = 5.0
TOKEN = "dashboard-s3cret"


@pytest.fixture
def token_nats(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(f'listen: "127.0.0.1:{port}"\nauthorization {{ token: "{TOKEN}" }}\n')
    log = tmp_path / "nats.log"
    server = subprocess.Popen([nats_server_binary(), "-c", str(conf), "-l", str(log)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, SERVER_START_SECONDS, "token-auth nats-server", log)
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(SERVER_START_SECONDS)


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

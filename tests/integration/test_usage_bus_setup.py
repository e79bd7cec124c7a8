"""The consumer's bus set-up waits for JetStream instead of exiting, within a bound.

A consumer started while a cluster elects its leaders (a node was just lost) used to exit on the
first JetStream API timeout, and its partitions never failed over to it (issue 10). Here a real
`nats-server` without JetStream stands in for "JetStream not answering yet": set-up retries, and
succeeds once a JetStream server answers on the same address; with none, it gives up after its
bound with a message that says what to check.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from adapters.nats.ingest_settings import IngestSettings
from adapters.nats.streams import delete_stream
from adapters.nats.usage_bus import JetStreamUnavailableError, NatsUsageBus
from adapters.runtime.embedded_nats import nats_server_binary
from adapters.runtime.server_files import free_port
from adapters.runtime.server_processes import wait_for_port

SERVER_START_SECONDS = 30.0
SHORT_WAIT_SECONDS = 2.0
# The bound is honoured: giving up takes the wait plus at most one request timeout and a delay.
GIVE_UP_SECONDS_MAX = 15.0
JETSTREAM_LATE_SECONDS = 1.5
SETTINGS = IngestSettings(partitions=2)


class Server:
    def __init__(self, folder: Path, port: int, *, jetstream: bool) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "nats.conf"
        js = f'jetstream {{ store_dir: "{folder / "js"}" }}\n' if jetstream else ""
        conf.write_text(f'listen: "127.0.0.1:{port}"\n{js}')
        self.log = folder / "nats.log"
        self.process = subprocess.Popen([nats_server_binary(), "-c", str(conf), "-l",
                                         str(self.log)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, SERVER_START_SECONDS, "nats-server for a set-up test", self.log)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(SERVER_START_SECONDS)


async def test_set_up_gives_up_after_its_bound_naming_jetstream(tmp_path: Path) -> None:
    port = free_port()
    server = Server(tmp_path / "plain", port, jetstream=False)
    try:
        started = time.monotonic()
        with pytest.raises(JetStreamUnavailableError,
                           match=r"JetStream enabled.*subscribe to _LEDGER_INBOX"):
            await NatsUsageBus.open(f"nats://127.0.0.1:{port}", SETTINGS,
                                    setup_wait_seconds=SHORT_WAIT_SECONDS)
        assert time.monotonic() - started < GIVE_UP_SECONDS_MAX
    finally:
        server.stop()


async def test_set_up_waits_for_jetstream_that_comes_late(tmp_path: Path) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    plain = Server(tmp_path / "plain", port, jetstream=False)
    opening = asyncio.create_task(NatsUsageBus.open(url, SETTINGS))
    jetstream: Server | None = None
    try:
        await asyncio.sleep(JETSTREAM_LATE_SECONDS)
        assert not opening.done(), "set-up must still be waiting for JetStream"
        plain.stop()
        jetstream = Server(tmp_path / "js", port, jetstream=True)
        bus = await asyncio.wait_for(opening, SERVER_START_SECONDS)
        try:
            assert bus.stream_epoch  # the stream exists and its creation time was read
            await delete_stream(bus.js)
        finally:
            await bus.close()
    finally:
        opening.cancel()
        plain.stop()
        if jetstream is not None:
            jetstream.stop()

"""The wire client against a real NATS server: publish, receive, JetStream pull and acks, errors,
TLS, and the consumer and publisher riding out a restart of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from adapters.nats.ingest_settings import IngestSettings
from adapters.nats.pull_feed import PullFeed
from adapters.nats.streams import recreate_stream
from adapters.nats.usage_consumer import UsageConsumer
from adapters.nats.usage_publisher import UsagePublisher
from adapters.nats.wire_client import WireConnection, WireConnectionLost, WireServerError
from adapters.nats.wire_frames import (
    WireMsg,
    ack_frame,
    header_block,
    hpub_frame,
    nak_frame,
    parse_headers,
    pub_frame,
    status_of,
    stream_sequence,
    term_frame,
)
from adapters.runtime.composition import open_ledger
from adapters.runtime.embedded_nats import EmbeddedNats, nats_server_binary
from adapters.runtime.server_files import free_port
from adapters.runtime.server_processes import wait_for_port
from tests.integration.support import (
    accounts,
    expected_spent,
    make_records,
    spent_by_account,
    wait_until,
)

WAIT_SECONDS = 60.0
JS_MESSAGES = 50
RESTART_RECORDS = 20_000
ACK_SETTLE_POLLS = 50
ACK_SETTLE_POLL_SECONDS = 0.1


@contextlib.asynccontextmanager
async def wire(url: str) -> AsyncIterator[WireConnection]:
    connection = await WireConnection.connect(url, "test-wire")
    try:
        yield connection
    finally:
        await connection.close()


async def wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    await wait_until(condition, 10.0, what)


async def test_published_frames_arrive_as_msg_and_hmsg(nats_server_url: str) -> None:
    topic = f"wiretest.{uuid.uuid4().hex}"
    got: list[WireMsg] = []
    async with wire(nats_server_url) as connection:
        assert connection.info["headers"] is True
        connection.subscribe(f"{topic}.*", got.append)
        await connection.flush()
        block = header_block({"Nats-Msg-Id": "m-1"})
        connection.write(pub_frame(f"{topic}.a".encode(), b"reply.here", b"plain")
                         + hpub_frame(f"{topic}.b".encode(), b"", block, b"with headers"))
        await wait_for(lambda: len(got) == 2, "both messages delivered")
    plain, headed = got
    assert (plain.subject, plain.reply, plain.headers, plain.data) == (
        f"{topic}.a", b"reply.here", None, b"plain")
    assert (headed.subject, headed.reply, headed.data) == (f"{topic}.b", b"", b"with headers")
    assert headed.headers is not None and parse_headers(headed.headers) == {"Nats-Msg-Id": "m-1"}


async def test_a_request_nobody_answers_gets_a_503_status(nats_server_url: str) -> None:
    got: list[WireMsg] = []
    async with wire(nats_server_url) as connection:
        inbox = connection.new_inbox()
        connection.subscribe(f"{inbox}.*", got.append)
        connection.write(pub_frame(f"nobody.{uuid.uuid4().hex}".encode(),
                                   f"{inbox}.1".encode(), b"hello?"))
        await wait_for(lambda: bool(got), "the no-responders status")
    assert got[0].data == b""
    assert status_of(got[0].headers) == ("503", "")


async def test_a_protocol_error_is_raised_with_the_servers_words(nats_server_url: str) -> None:
    async with wire(nats_server_url) as connection:
        connection.write(b"NOT-A-NATS-OPERATION\r\n")
        await asyncio.wait_for(connection.wait_closed(), 10.0)
        with pytest.raises(WireServerError, match="Unknown Protocol Operation"):
            connection.write(b"PING\r\n")


async def test_jetstream_publish_pull_ack_term_and_nak_over_the_wire(
        nats_server_url: str) -> None:
    stream = f"WIRETEST_{uuid.uuid4().hex[:8].upper()}"
    subject = f"wiretest.{stream.lower()}"
    control = await nats.connect(nats_server_url)
    js = control.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{subject}.>"]))
    await js.add_consumer(stream, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT,
                                                 ack_wait=30))
    acks: list[WireMsg] = []
    try:
        async with wire(nats_server_url) as connection:
            inbox = connection.new_inbox()
            connection.subscribe(f"{inbox}.*", acks.append)
            frames = [hpub_frame(f"{subject}.x".encode(), f"{inbox}.{i}".encode(),
                                 header_block({"Nats-Msg-Id": f"id-{i}"}), b"%d" % i)
                      for i in range(JS_MESSAGES)]
            # The first id again: the stream drops it and says so.
            frames.append(hpub_frame(f"{subject}.x".encode(), f"{inbox}.again".encode(),
                                     header_block({"Nats-Msg-Id": "id-0"}), b"0"))
            connection.write(b"".join(frames))
            await wait_for(lambda: len(acks) == JS_MESSAGES + 1, "every publish acknowledged")
            answers = {m.subject.rsplit(".", 1)[1]: json.loads(m.data) for m in acks}
            assert answers["again"]["duplicate"] is True
            assert sorted(answers[str(i)]["seq"] for i in range(JS_MESSAGES)) == list(
                range(1, JS_MESSAGES + 1))

            feed = PullFeed(connection, stream, "c", batch_size=JS_MESSAGES).start()
            batch = await feed.take(wait_seconds=2.0, idle_seconds=2.0)
            assert [m.data for m in batch] == [b"%d" % i for i in range(JS_MESSAGES)]
            assert [stream_sequence(m.reply) for m in batch] == list(range(1, JS_MESSAGES + 1))
            # One write: all acked but the first (terminated) and the second (offered again).
            connection.write(term_frame(batch[0].reply) + nak_frame(batch[1].reply)
                             + b"".join(ack_frame(m.reply) for m in batch[2:]))
            again = await feed.take(wait_seconds=0.5, idle_seconds=5.0)
            assert [m.data for m in again] == [b"1"]
            connection.write(ack_frame(again[0].reply))
            await connection.flush()
            await feed.close()
        # The server applies acks to the consumer asynchronously: look until they are in.
        for _ in range(ACK_SETTLE_POLLS):
            info = await js.consumer_info(stream, "c")
            if info.num_ack_pending == 0:
                break
            await asyncio.sleep(ACK_SETTLE_POLL_SECONDS)
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        await js.delete_stream(stream)
        await control.close()


@pytest.mark.slow
async def test_consumer_and_publisher_ride_out_a_nats_restart(database_url: str,
                                                              tmp_path: Path) -> None:
    """Stop the server under a running consumer and publisher, start it again: every record
    is charged exactly once, and the consumer carries on by itself."""
    server = EmbeddedNats(tmp_path / "nats").start()
    settings = IngestSettings(partitions=2, batch_size=200, ack_wait_seconds=2.0)
    ledger = open_ledger(database_url)
    try:
        await recreate_stream(server.url, settings)
        priced = accounts(ledger, 20)
        records = make_records(priced, RESTART_RECORDS, "restart")
        consumer = UsageConsumer(open_ledger(database_url), server.url,
                                 partitions=range(settings.partitions), settings=settings)
        running = asyncio.create_task(consumer.run())

        def recorded() -> int:
            return ledger.keyed.counter_values().get("usage_recorded", 0)

        async with await UsagePublisher.connect(server.url) as publisher:
            # A small window keeps the publisher busy long enough to be cut off mid-way.
            publishing = asyncio.create_task(publisher.publish_many(records, window=100))
            await wait_until(lambda: recorded() > 0, WAIT_SECONDS, "charges flowing")
            server.stop()
            await asyncio.sleep(1.0)
            server.start()
            report = await publishing
        assert report.published == len(records)
        await wait_until(lambda: recorded() >= len(records), WAIT_SECONDS,
                         "every record charged after the restart")
        await wait_until(consumer.is_healthy, WAIT_SECONDS, "the consumer connected again")
        consumer.stop()
        await asyncio.wait_for(running, WAIT_SECONDS)
        counters = ledger.keyed.counter_values()
        assert counters["usage_recorded"] == len(records)
        assert counters.get("usage_rejected", 0) == counters.get("usage_conflicts", 0) == 0
        assert spent_by_account(ledger, priced) == expected_spent(records)
        consumer.ledger.close()
    finally:
        ledger.close()
        server.stop()


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A NATS server that requires TLS, with a self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen([nats_server_binary(), "-a", "127.0.0.1", "-p", str(port),
                               "--tls", "--tlscert", str(cert), "--tlskey", str(key)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 30.0, "NATS with TLS")
        yield port, cert
    finally:
        server.terminate()
        server.wait(30)


async def test_tls_is_used_when_the_url_or_the_server_asks_for_it(
        tls_nats: tuple[int, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    port, cert = tls_nats
    with pytest.raises(WireConnectionLost, match=r"TLS with .* failed"):
        await WireConnection.connect(f"tls://127.0.0.1:{port}", "test-wire")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    for url in (f"tls://127.0.0.1:{port}", f"nats://127.0.0.1:{port}"):
        got: list[WireMsg] = []
        async with wire(url) as connection:
            connection.subscribe("secret.*", got.append)
            connection.write(pub_frame(b"secret.a", b"", b"over tls"))
            await wait_for(lambda: bool(got), f"a message over TLS ({url})")  # noqa: B023
        assert got[0].data == b"over tls"

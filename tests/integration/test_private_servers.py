"""Embedded servers are private: nobody gets in without the generated credentials, producers may
only publish usage, and secrets and folders are readable by their owner only."""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import psycopg
import pytest
from nats.errors import Error as NatsError

from adapters.nats.connection import (
    ENV_INBOX_PREFIX,
    ENV_PRODUCER_INBOX_PREFIX,
    LEDGER_INBOX_PREFIX,
    PRODUCER_INBOX_PREFIX,
    ledger_inbox_prefix,
    producer_inbox_prefix,
)
from adapters.nats.ingest_settings import REJECTED_SUBJECT, IngestSettings
from adapters.nats.usage_bus import NatsUsageBus
from adapters.nats.usage_contract import rejection_message, usage_subject
from adapters.runtime.embedded_nats import EmbeddedNats
from adapters.runtime.embedded_postgres import EmbeddedPostgres
from adapters.runtime.settings import ConfigurationError

# How long a forged message may take to arrive, were it let through.
DELIVERY_WAIT_SECONDS = 1.0


@pytest.fixture(scope="module")
def private_folder() -> Iterator[Path]:
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="ledger-private-"))
    folder.chmod(0o711)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres(private_folder: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(private_folder / "postgres", durable=False).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bus(private_folder: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(private_folder / "nats").start()
    try:
        yield server
    finally:
        server.stop()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_postgres_refuses_a_connection_without_the_password(
        postgres: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres",
                        connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"postgresql://postgres:guess@127.0.0.1:{postgres.port}/postgres",
                        connect_timeout=5)
    with psycopg.connect(postgres.url, connect_timeout=5) as conn:
        row = conn.execute("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid "
                           "WHERE rolname = 'postgres'").fetchone()
        assert row == (True,)


def test_postgres_secrets_and_folders_are_for_their_owner_only(
        postgres: EmbeddedPostgres) -> None:
    assert mode(postgres.password_file) == 0o600
    assert mode(postgres.data_dir) == 0o700
    assert mode(postgres.socket_dir) == 0o700
    assert mode(postgres.pgdata) == 0o700
    hba = (postgres.pgdata / "pg_hba.conf").read_text().split("\n")
    rules = [line.split() for line in hba if line.strip() and not line.startswith("#")]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules)


def test_starting_postgres_changes_no_permission_outside_its_folder(tmp_path: Path) -> None:
    # The launcher used to open read access on every parent of the data folder as root.
    parent = Path(tmp_path.parent)
    before = {p: mode(p) for p in [tmp_path, *tmp_path.parents]}
    if os.geteuid() == 0:
        # pytest's folders are 0700: the server's system user cannot enter them, and the
        # launcher says so, naming the folder, instead of opening it.
        from adapters.runtime.server_processes import EmbeddedServerError

        with pytest.raises(EmbeddedServerError, match="cannot enter"):
            EmbeddedPostgres(tmp_path / "postgres", durable=False).start()
    else:
        EmbeddedPostgres(tmp_path / "postgres", durable=False).start().stop()
    assert {p: mode(p) for p in [tmp_path, *tmp_path.parents]} == before
    assert parent.exists()


def test_nats_refuses_a_connection_without_credentials(bus: EmbeddedNats) -> None:
    async def attempt() -> None:
        await nats.connect(f"nats://127.0.0.1:{bus.port}", allow_reconnect=False,
                           max_reconnect_attempts=0, connect_timeout=5)

    with pytest.raises(NatsError, match="Authorization Violation"):
        asyncio.run(attempt())
    assert mode(bus.credentials_path) == 0o600
    assert mode(bus.config_path) == 0o600


@pytest.mark.parametrize("subject", ["ledger.views.balance.acme", REJECTED_SUBJECT,
                                     "ledger.usage.v2.anything",
                                     "ledger.usage.v1.3.some-account"])
def test_a_producer_cannot_publish_outside_usage(bus: EmbeddedNats, subject: str) -> None:
    async def scenario() -> tuple[list[bytes], list[str]]:
        seen: list[bytes] = []
        violations: list[str] = []

        async def on_error(error: Exception) -> None:
            violations.append(str(error))

        ledger = await nats.connect(bus.url)
        producer = await nats.connect(bus.producer_url, error_cb=on_error)
        try:
            async def collect(msg: nats.aio.msg.Msg) -> None:
                seen.append(msg.data)

            await ledger.subscribe(">", cb=collect)
            await ledger.flush()
            await producer.publish(subject, b"forged")
            await producer.flush()
            await asyncio.sleep(DELIVERY_WAIT_SECONDS)
        finally:
            await producer.close()
            await ledger.close()
        return seen, violations

    seen, violations = asyncio.run(scenario())
    assert seen == []
    assert any("permissions violation for publish" in v.lower() for v in violations), violations


def test_a_producer_publishes_usage_and_gets_its_acknowledgement(bus: EmbeddedNats) -> None:
    async def scenario() -> int:
        ledger = await nats.connect(bus.url)
        producer = await nats.connect(bus.producer_url)
        try:
            js = ledger.jetstream()
            await js.add_stream(name="PRIVACY_CHECK", subjects=["ledger.usage.v1.*"])
            ack = await producer.jetstream().publish("ledger.usage.v1.some-account", b"{}")
            await js.delete_stream("PRIVACY_CHECK")
            return ack.seq
        finally:
            await producer.close()
            await ledger.close()

    assert asyncio.run(scenario()) == 1


def test_a_producer_cannot_listen_to_the_ledgers_replies(bus: EmbeddedNats) -> None:
    """Producers may subscribe to `_INBOX.>` (their acknowledgements arrive there); what
    JetStream delivers to the ledger (every team's usage) and answers it must not arrive there."""
    async def scenario() -> tuple[list[str], int, list[str]]:
        overheard: list[str] = []
        violations: list[str] = []

        async def on_error(error: Exception) -> None:
            violations.append(str(error))

        async def overhear(msg: nats.aio.msg.Msg) -> None:
            overheard.append(msg.subject)

        listener = await nats.connect(bus.producer_url, error_cb=on_error)
        producer = await nats.connect(bus.producer_url)
        usage_bus = await NatsUsageBus.open(bus.url, IngestSettings())
        try:
            await listener.subscribe("_INBOX.>", cb=overhear)
            await listener.subscribe(f"{LEDGER_INBOX_PREFIX}.>", cb=overhear)
            await listener.flush()
            # A core publish: the stream stores it, and the producer expects no answer.
            await producer.publish(usage_subject(uuid.uuid4()), b'{"usage_id": "overheard"}')
            await producer.flush()
            feeds = [await usage_bus.open_feed(p, batch_size=10)
                     for p in range(IngestSettings().partitions)]
            delivered = 0
            for feed in feeds:
                batch = await feed.take(wait_seconds=0.1, idle_seconds=0.3)
                delivered += len(batch)
                await feed.settle(batch, [], [])
            headers, body = rejection_message(
                "invalid_json", "overheard", payload=b"x", original_subject="s",
                original_sequence=1, original_msg_id=None, rejection_id=uuid.uuid4().hex)
            await usage_bus.publish_rejection(headers, body)  # a JetStream publish: acked
            await asyncio.sleep(DELIVERY_WAIT_SECONDS)
            for feed in feeds:
                await feed.close()
        finally:
            await usage_bus.close()
            await producer.close()
            await listener.close()
        return overheard, delivered, violations

    overheard, delivered, violations = asyncio.run(scenario())
    assert delivered == 1
    assert overheard == []
    assert any("permissions violation for subscription" in v.lower()
               and LEDGER_INBOX_PREFIX.lower() in v.lower() for v in violations), violations


@pytest.mark.parametrize("prefix", ["", "a..b", "a b", "_INBOX.*", "x.>", "é", "x" * 65])
def test_a_malformed_inbox_prefix_is_refused_naming_the_setting(prefix: str) -> None:
    if not prefix:
        assert ledger_inbox_prefix({ENV_INBOX_PREFIX: prefix}) == LEDGER_INBOX_PREFIX
        assert producer_inbox_prefix({ENV_PRODUCER_INBOX_PREFIX: prefix}) == PRODUCER_INBOX_PREFIX
        return
    with pytest.raises(ConfigurationError, match=ENV_INBOX_PREFIX):
        ledger_inbox_prefix({ENV_INBOX_PREFIX: prefix})
    assert ledger_inbox_prefix({ENV_INBOX_PREFIX: "_INBOX_LEDGER.a-1"}) == "_INBOX_LEDGER.a-1"
    # A producer's own prefix is checked the same way, naming its own setting.
    with pytest.raises(ConfigurationError, match=ENV_PRODUCER_INBOX_PREFIX):
        producer_inbox_prefix({ENV_PRODUCER_INBOX_PREFIX: prefix})
    assert producer_inbox_prefix({}) == PRODUCER_INBOX_PREFIX
    assert producer_inbox_prefix({ENV_PRODUCER_INBOX_PREFIX: "_INBOX_SVC"}) == "_INBOX_SVC"

"""Usage over the bus into the ledger: bad input never blocks, late redelivery never charges twice.

The consumer runs in the test process here (real NATS, real PostgreSQL); the process-level
tests are in test_usage_consumer_processes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import nats
import pytest

from adapters.nats.ingest_settings import REJECTED_STREAM_NAME, REJECTED_SUBJECT, IngestSettings
from adapters.nats.streams import recreate_stream
from adapters.nats.usage_consumer import UsageConsumer
from adapters.nats.usage_contract import UsageMessage, usage_subject
from adapters.nats.usage_publisher import UsagePublisher
from adapters.runtime.composition import open_ledger
from domain.usage import TOKENS_MAX
from services.actor import Actor
from tests.integration.support import (
    accounts,
    expected_spent,
    make_records,
    processed,
    spent_by_account,
    wait_until,
)

WAIT_SECONDS = 60.0


@contextlib.asynccontextmanager
async def running_consumer(database_url: str, nats_url: str,
                           settings: IngestSettings) -> AsyncIterator[UsageConsumer]:
    """A consumer of every partition, with its own ledger, stopped cleanly at the end."""
    ledger = open_ledger(database_url)
    consumer = UsageConsumer(ledger, nats_url, partitions=range(settings.partitions),
                             settings=settings)
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        consumer.stop()
        await asyncio.wait_for(task, WAIT_SECONDS)
        ledger.close()


async def rejected_messages(nats_url: str) -> list[nats.aio.msg.Msg]:
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        subscription = await js.pull_subscribe(REJECTED_SUBJECT, stream=REJECTED_STREAM_NAME)
        found: list[nats.aio.msg.Msg] = []
        while True:
            try:
                found += await subscription.fetch(100, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                return found
    finally:
        await connection.close()


def payload(usage_id: str, account_id: object, **changes: object) -> bytes:
    body: dict[str, object] = {
        "usage_id": usage_id, "account_id": str(account_id),
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "model": "gpt-x", "success": True, "input_tokens": 1200, "output_tokens": 340,
        "cached_input_tokens": 0,
    }
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


async def test_bad_input_ends_on_the_rejected_subject_and_never_blocks_valid_records(
        database_url: str, nats_server_url: str) -> None:
    settings = IngestSettings(partitions=2, batch_size=50)
    await recreate_stream(nats_server_url, settings)
    ledger = open_ledger(database_url)
    priced = accounts(ledger, 4)
    account = priced[0].account_id
    closed = priced[1].account_id
    owner = Actor("test-owner")
    ledger.close_account(closed, "left the company", owner)
    valid = make_records(priced[:1] + priced[2:], 300, "ok")
    unknown = uuid4()
    long_ago = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    bad: dict[str, tuple[str, bytes]] = {
        "invalid JSON": ("invalid_json", b'{"usage_id": "broken",'),
        "not an object": ("invalid_record", b'[1, 2, 3]'),
        "unknown field": ("invalid_record", payload("bad-field", account, discount=5)),
        "missing field": ("invalid_record", payload("bad-missing", account, model=...)),
        "negative tokens": ("invalid_record", payload("bad-neg", account, input_tokens=-1)),
        "huge tokens": ("invalid_record",
                        payload("bad-huge", account, output_tokens=TOKENS_MAX + 1)),
        "tokens as text": ("invalid_record", payload("bad-text", account, input_tokens="12")),
        "bad timestamp": ("invalid_record", payload("bad-ts", account, occurred_at="yesterday")),
        "timestamp without offset": ("invalid_record",
                                     payload("bad-naive", account,
                                             occurred_at="2026-11-24T10:00:00")),
        "unprintable usage_id": ("invalid_record", payload("bad\x07id", account)),
        "unknown account": ("unknown_account", payload("bad-unknown", unknown)),
        "closed account": ("account_closed", payload("bad-closed", closed)),
        "no package in force": ("no_package_in_force",
                                payload("bad-early", account, occurred_at=long_ago)),
        "conflicting duplicate": ("usage_conflict",
                                  UsageMessage.from_record(valid[0]).model_copy(
                                      update={"input_tokens": valid[0].input_tokens + 1}
                                  ).to_json()),
    }
    mismatched = payload("bad-subject", account)
    subjects = {"unknown account": usage_subject(unknown),
                "closed account": usage_subject(closed)}
    async with await UsagePublisher.connect(nats_server_url) as publisher:
        await publisher.publish_many(valid[:150])
        for name, (_code, body) in bad.items():
            await publisher.publish_raw(subjects.get(name, usage_subject(account)), body)
        # Published on another account's subject: its partition's writer must not take it.
        await publisher.publish_raw(usage_subject(priced[2].account_id), mismatched)
        await publisher.publish_many(valid[150:])
    total = len(valid) + len(bad) + 1
    async with running_consumer(database_url, nats_server_url, settings) as consumer:
        # The ledger's counters commit before the consumer settles and counts the batch.
        await wait_until(lambda: processed(ledger) >= total and consumer.stats.messages >= total,
                         WAIT_SECONDS, "the ledger answering every message")
        assert consumer.stats.rejected == len(bad) + 1
    found = {msg.data: msg.headers or {} for msg in await rejected_messages(nats_server_url)}
    assert len(found) == len(bad) + 1
    for name, (code, body) in bad.items():
        headers = found.get(body)
        assert headers is not None, f"{name} is not on {REJECTED_SUBJECT}"
        assert headers["Ledger-Rejection-Code"] == code, name
        assert headers["Ledger-Rejection-Reason"], name
        assert headers["Ledger-Original-Subject"].startswith("ledger.usage.v1."), name
    mismatch = found[mismatched]
    assert mismatch["Ledger-Rejection-Code"] == "subject_mismatch"
    counters = ledger.keyed.counter_values()
    assert counters["usage_recorded"] == len(valid)
    bus_level = sum(1 for code, _ in bad.values() if code.startswith("invalid")) + 1
    assert counters["usage_invalid"] == bus_level
    assert counters["usage_conflicts"] == 1
    assert counters["usage_rejected"] == len(bad) + 1 - bus_level - 1
    assert spent_by_account(ledger, priced[:1] + priced[2:]) == expected_spent(valid)
    assert ledger.get_account(closed).usage_count == 0
    ledger.close()


async def test_redelivery_after_the_broker_duplicate_window_charges_nothing_again(
        database_url: str, nats_server_url: str) -> None:
    settings = IngestSettings(partitions=2, duplicate_window_seconds=1.0)
    await recreate_stream(nats_server_url, settings)
    ledger = open_ledger(database_url)
    priced = accounts(ledger, 10)
    records = make_records(priced, 2000, "late")
    async with await UsagePublisher.connect(nats_server_url) as publisher:
        first = await publisher.publish_many(records)
    assert first.broker_duplicates == 0
    async with running_consumer(database_url, nats_server_url, settings):
        await wait_until(lambda: processed(ledger) >= len(records), WAIT_SECONDS,
                         "first delivery recorded")
    spent = spent_by_account(ledger, priced)
    assert spent == expected_spent(records)
    await asyncio.sleep(settings.duplicate_window_seconds * 2)
    # The same ids again, after the broker forgot them: it stores every one as new.
    async with await UsagePublisher.connect(nats_server_url) as publisher:
        again = await publisher.publish_many(records)
    assert again.broker_duplicates == 0
    async with running_consumer(database_url, nats_server_url, settings) as consumer:
        # The ledger's counters commit before the consumer settles and counts the batch.
        await wait_until(lambda: processed(ledger) >= 2 * len(records)
                         and consumer.stats.messages >= len(records), WAIT_SECONDS,
                         "late copies answered")
        assert consumer.stats.duplicates == len(records)
        assert consumer.stats.recorded == 0
    counters = ledger.keyed.counter_values()
    assert counters["usage_recorded"] == len(records)
    assert counters["usage_duplicates"] == len(records)
    assert spent_by_account(ledger, priced) == spent
    ledger.close()


@pytest.mark.parametrize("partitions", [3])
async def test_stream_refuses_a_different_partition_count(nats_server_url: str,
                                                          partitions: int) -> None:
    await recreate_stream(nats_server_url, IngestSettings(partitions=partitions))
    with pytest.raises(RuntimeError, match="LEDGER_USAGE_PARTITIONS"):
        await fresh_stream_keep(nats_server_url, IngestSettings(partitions=partitions + 1))


async def fresh_stream_keep(nats_url: str, settings: IngestSettings) -> None:
    from adapters.nats.streams import ensure_stream

    connection = await nats.connect(nats_url)
    try:
        await ensure_stream(connection.jetstream(), settings)
    finally:
        await connection.close()



async def test_a_stream_from_an_older_ledger_is_refused_with_how_to_migrate(
        nats_server_url: str) -> None:
    from nats.js.api import StreamConfig

    from adapters.nats.streams import delete_stream, partition_transform

    settings = IngestSettings(partitions=2)
    connection = await nats.connect(nats_server_url)
    try:
        js = connection.jetstream()
        await delete_stream(js)
        # As created before issue 8: every usage subject, limits retention, rejections inside.
        await js.add_stream(StreamConfig(name="LEDGER_USAGE", subjects=["ledger.usage.>"],
                                         subject_transform=partition_transform(2)))
        with pytest.raises(RuntimeError, match=r"drain it.*delete it"):
            await fresh_stream_keep(nats_server_url, settings)
        await delete_stream(js)
    finally:
        await connection.close()

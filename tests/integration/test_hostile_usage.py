"""Hostile usage on real NATS and PostgreSQL: charged exactly once or rejected with a reason.

Never a crash, never a stall: a conflicting copy reaches the ledger whatever the broker's
duplicate window; a rejection is stored once however often its original comes; a rejection the
broker refuses costs that message a retry, not the session; odd but valid text reaches every
read model; and 20,000 valid records interleaved with every kind of hostile input are charged to
the nano while each hostile message is rejected once with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import nats
import pytest
from nats.js.api import DiscardPolicy, RetentionPolicy

from adapters.nats.ingest_settings import (
    MESSAGE_BYTES_MAX,
    REJECTED_STREAM_NAME,
    STREAM_NAME,
    USAGE_MAX_BYTES_MIN,
    IngestSettings,
)
from adapters.nats.rejection_publisher import RejectionPublisher
from adapters.nats.rejection_store import RejectionStore
from adapters.nats.streams import ensure_stream, recreate_stream, rejected_stream_config
from adapters.nats.usage_bus import NatsUsageBus
from adapters.nats.usage_consumer import IngestStats, UsageConsumer
from adapters.nats.usage_contract import (
    OCCURRED_AT_FUTURE_SKEW,
    UsageMessage,
    usage_message_id,
    usage_subject,
)
from adapters.nats.usage_port import Delivery
from adapters.nats.usage_publisher import UsagePublisher
from adapters.nats.usage_writer import Rejected
from adapters.postgres.view_store import PostgresViewStore
from adapters.runtime.composition import open_ledger
from domain.usage import UsageRecord
from tests.integration.support import (
    accounts,
    cost_of,
    expected_spent,
    make_records,
    processed,
    spent_by_account,
    wait_until,
)
from tests.projections.history import project

WAIT_SECONDS = 90.0
Headers = dict[str, str]


@contextlib.asynccontextmanager
async def running_consumer(database_url: str, nats_url: str, settings: IngestSettings,
                           clock: Callable[[], datetime] | None = None
                           ) -> AsyncIterator[UsageConsumer]:
    ledger = open_ledger(database_url)
    consumer = UsageConsumer(ledger, nats_url, partitions=range(settings.partitions),
                             settings=settings, clock=clock)
    task = asyncio.create_task(consumer.run())
    try:
        await wait_until(lambda: consumer.is_healthy() or task.done(), WAIT_SECONDS,
                         "the consumer connecting")
        yield consumer
        assert not task.done(), "the consumer stopped by itself"
    finally:
        consumer.stop()
        await asyncio.wait_for(task, WAIT_SECONDS)
        ledger.close()


async def stored_rejections(nats_url: str) -> list[tuple[bytes, Headers]]:
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        info = await js.stream_info(REJECTED_STREAM_NAME)
        found = []
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(REJECTED_STREAM_NAME, sequence)
            found.append((msg.data or b"", dict(msg.headers or {})))
        return found
    finally:
        await connection.close()


async def partitions_drained(nats_url: str, settings: IngestSettings) -> bool:
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        for partition in range(settings.partitions):
            info = await js.consumer_info(STREAM_NAME, f"ledger-usage-p{partition}")
            if info.num_pending or info.num_ack_pending:
                return False
        # A work queue: every message answered is gone from the stream.
        return (await js.stream_info(STREAM_NAME)).state.messages == 0
    finally:
        await connection.close()


def body(record: UsageRecord, **changes: Any) -> bytes:
    fields = json.loads(UsageMessage.from_record(record).to_json())
    fields.update(changes)
    return json.dumps(fields).encode()


async def test_a_conflicting_copy_published_a_second_later_reaches_the_ledger_as_a_conflict(
        database_url: str, nats_server_url: str) -> None:
    settings = IngestSettings(partitions=2)
    await recreate_stream(nats_server_url, settings)
    ledger = open_ledger(database_url)
    priced = accounts(ledger, 1)
    original = make_records(priced, 1, "conflict")[0]
    conflicting = dataclasses.replace(original, output_tokens=original.output_tokens + 1)
    async with await UsagePublisher.connect(nats_server_url) as publisher:
        await publisher.publish_usage(original)
        await asyncio.sleep(1.0)  # well inside the broker's 120 s duplicate window
        await publisher.publish_usage(conflicting)
        assert publisher.report.broker_duplicates == 0, "the broker dropped the conflict"
        await publisher.publish_usage(original)
        assert publisher.report.broker_duplicates == 1, "an exact repeat was not deduplicated"
    async with running_consumer(database_url, nats_server_url, settings) as consumer:
        await wait_until(lambda: processed(ledger) >= 2, WAIT_SECONDS, "both copies answered")
        # Counted in PostgreSQL with the commit; the rejection is stored just after it.
        await wait_until(lambda: consumer.stats.rejected >= 1, WAIT_SECONDS,
                         "the conflict's rejection stored")
        assert consumer.stats.rejected_by_code == {"usage_conflict": 1}
    counters = ledger.keyed.counter_values()
    assert counters["usage_recorded"] == 1 and counters["usage_conflicts"] == 1
    assert spent_by_account(ledger, priced) == expected_spent([original])
    [(data, headers)] = await stored_rejections(nats_server_url)
    assert data == UsageMessage.from_record(conflicting).to_json()
    assert headers["Ledger-Rejection-Code"] == "usage_conflict"
    assert "already recorded with different content" in headers["Ledger-Rejection-Reason"]
    assert headers["Ledger-Original-Msg-Id"] == usage_message_id(conflicting)
    ledger.close()


async def test_a_rejection_is_stored_once_even_when_its_original_comes_after_the_window(
        database_url: str, nats_server_url: str, pg_server: Any) -> None:
    settings = IngestSettings(partitions=1, duplicate_window_seconds=1.0)
    await recreate_stream(nats_server_url, settings)
    connection = await nats.connect(nats_server_url)
    rejections = await RejectionPublisher(nats_server_url).start()
    bus = NatsUsageBus(connection, connection.jetstream(), "epoch-1", settings, rejections)
    ledger = open_ledger(database_url)
    other_url = pg_server.create_database()
    forgetful = open_ledger(other_url)
    try:
        original = Delivery("ledger.usage.v1.0.x", b"not json", None, 7, None)
        item = Rejected(original, "invalid_json", "not JSON")
        stats = IngestStats()
        store = RejectionStore(ledger, bus, stats)
        assert await store.store([item]) == set()
        await asyncio.sleep(settings.duplicate_window_seconds * 2.5)  # the broker forgot it
        assert await store.store([item]) == set()  # redelivered: PostgreSQL remembers
        assert stats.rejections_published_before == 1
        assert len(await stored_rejections(nats_server_url)) == 1
        # Without PostgreSQL's record (another database), the broker alone would store it
        # again: the lasting dedupe is PostgreSQL's, not the window's.
        await RejectionStore(forgetful, bus, IngestStats()).store([item])
        assert len(await stored_rejections(nats_server_url)) == 2
    finally:
        forgetful.close()
        pg_server.drop_database(other_url)
        ledger.close()
        await bus.close()


async def test_a_refused_rejection_publish_costs_that_message_a_retry_not_the_session(
        database_url: str, nats_server_url: str) -> None:
    settings = IngestSettings(partitions=2, batch_size=20)
    await recreate_stream(nats_server_url, settings)
    ledger = open_ledger(database_url)
    priced = accounts(ledger, 4)
    records = make_records(priced, 200, "refused")
    big_bad = body(records[0], usage_id="refused-big", model="m" * 7700)
    assert len(big_bad) < MESSAGE_BYTES_MAX
    control = await nats.connect(nats_server_url)
    js = control.jetstream()
    try:
        async with running_consumer(database_url, nats_server_url, settings) as consumer:
            # The rejected stream takes small messages only: the full rejection is refused,
            # the one without the payload (size and digest in headers) is stored.
            small = dataclasses.replace(rejected_stream_config(settings), max_msg_size=2048)
            await js.update_stream(small)
            async with await UsagePublisher.connect(nats_server_url) as publisher:
                await publisher.publish_many(records[:100])
                await publisher.publish_raw(usage_subject(records[0].account_id), big_bad)
                await wait_until(lambda: processed(ledger) >= 101, WAIT_SECONDS,
                                 "the big bad record answered")
                # No rejected stream at all: the rejection waits, the partitions go on.
                await js.delete_stream(REJECTED_STREAM_NAME)
                await publisher.publish_raw(usage_subject(records[1].account_id),
                                            b"refused-while-no-stream")
                await publisher.publish_many(records[100:])
                await wait_until(lambda: consumer.stats.recorded >= len(records), WAIT_SECONDS,
                                 "valid records behind the refused rejection charged")
                failures = consumer.stats.rejection_publish_failures
                assert failures >= 3  # big: full form refused; no stream: both forms refused
                await ensure_stream(js, settings)
                await wait_until(lambda: consumer.stats.rejected >= 2, WAIT_SECONDS,
                                 "the waiting rejection stored once its stream is back")
            assert consumer.stats.sessions == 1, "a refused publish cost the bus session"
            assert consumer.is_healthy()
    finally:
        await control.close()
    assert spent_by_account(ledger, priced) == expected_spent(records)
    [(data, headers)] = await stored_rejections(nats_server_url)
    assert data == b"refused-while-no-stream"
    assert headers["Ledger-Rejection-Code"] == "invalid_json"
    assert ledger.keyed.counter_values()["usage_invalid"] == 2
    ledger.close()


async def test_the_usage_stream_refuses_producers_when_full_and_takes_only_its_subjects(
        database_url: str, nats_server_url: str) -> None:
    settings = IngestSettings(partitions=2, usage_max_bytes=USAGE_MAX_BYTES_MIN)
    await recreate_stream(nats_server_url, settings)
    connection = await nats.connect(nats_server_url)
    try:
        js = connection.jetstream()
        info = await js.stream_info(STREAM_NAME)
        assert info.config.retention == RetentionPolicy.WORK_QUEUE
        assert info.config.discard == DiscardPolicy.NEW
        assert info.config.max_bytes == USAGE_MAX_BYTES_MIN and info.config.max_age
        rejected = await js.stream_info(REJECTED_STREAM_NAME)
        assert rejected.config.max_bytes and rejected.config.max_age
        assert rejected.config.max_msg_size > MESSAGE_BYTES_MAX * 1.5
        with pytest.raises(nats.js.errors.NoStreamResponseError):
            await js.publish("ledger.usage.v2.anything", b"{}", timeout=2)
        with pytest.raises(nats.js.errors.BadRequestError):
            await js.publish(usage_subject(uuid4()), b"x" * (MESSAGE_BYTES_MAX + 1))
        payload = b"x" * 1000
        refused = None
        for n in range(2 * USAGE_MAX_BYTES_MIN // len(payload)):
            try:
                await js.publish(usage_subject(uuid4()), payload)
            except nats.js.errors.ServiceUnavailableError as error:
                refused = (n, error)
                break
        assert refused is not None, "a full usage stream took more"
        assert "maximum bytes exceeded" in str(refused[1])
        # Nothing was dropped to make room: every record stored is still there.
        assert (await js.stream_info(STREAM_NAME)).state.messages == refused[0]
    finally:
        await connection.close()


ODD_TEXT = ["Ünïcödé-模型", "emoji-🚀🔥", 'quote"d', "back\\slash\\n", "it's", "semi;colon,comma",
            "spaces in name", "percent%s{braces}", "العربية", "\u00a9 sign"]


async def test_odd_but_printable_text_is_charged_and_projected_into_every_read_model(
        database_url: str, nats_server_url: str) -> None:
    settings = IngestSettings(partitions=2)
    await recreate_stream(nats_server_url, settings)
    ledger = open_ledger(database_url)
    priced = accounts(ledger, 2)
    base = make_records(priced, len(ODD_TEXT), "odd")
    # One instant on a whole minute, read one second later: every window holds it.
    at = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
    records = [dataclasses.replace(r, usage_id=f"{text} #{i}", model=text, occurred_at=at)
               for i, (r, text) in enumerate(zip(base, ODD_TEXT, strict=True))]
    tabbed = dataclasses.replace(base[0], usage_id="tabbed")
    async with await UsagePublisher.connect(nats_server_url) as publisher:
        await publisher.publish_many(records)
        await publisher.publish_raw(usage_subject(tabbed.account_id),
                                    body(tabbed, model="tab\there"))
    async with running_consumer(database_url, nats_server_url, settings) as consumer:
        await wait_until(lambda: processed(ledger) >= len(records) + 1, WAIT_SECONDS,
                         "every record answered")
        await wait_until(lambda: consumer.stats.rejected >= 1
                         and consumer.stats.messages >= len(records) + 1, WAIT_SECONDS,
                         "the tab's rejection stored and every message settled")
        assert consumer.stats.recorded == len(records)
        assert consumer.stats.rejected_by_code == {"invalid_record": 1}
    assert spent_by_account(ledger, priced) == expected_spent(records)
    position = project(database_url)
    team_id = ledger.get_account(priced[0].account_id).team_id
    with PostgresViewStore(database_url) as store:
        answer = store.balance(team_id, at + timedelta(seconds=1))
    assert answer is not None
    assert answer["position"] == answer["head_position"] == position
    windows = answer["usage"]["windows"]
    for window in ("today", "week", "month", "total"):
        assert windows[window]["requests"] == len(records)
        assert windows[window]["cost_nanos"] == sum(cost_of(r) for r in records)
    by_model = answer["usage"]["by_model"]["total"]
    assert sorted(by_model) == sorted(ODD_TEXT)
    assert sum(a["spent_nanos"] for a in answer["accounts"]) == sum(cost_of(r)
                                                                    for r in records)
    ledger.close()


# End to end ----------------------------------------------------------------------------------

VALID_RECORDS = 20_000
E2E_ACCOUNTS = 40
PUBLISH_CHUNK = 1000


def hostile_messages(records: list[UsageRecord], priced_ids: list[UUID], now: datetime
                     ) -> list[tuple[str, str, bytes, Headers | None]]:
    """(expected code, subject, body, headers) of every kind of hostile input, several each."""
    rng = random.Random(5)
    out: list[tuple[str, str, bytes, Headers | None]] = []

    def add(code: str, record: UsageRecord, payload: bytes, *, subject: str | None = None,
            headers: Headers | None = None) -> None:
        out.append((code, subject or usage_subject(record.account_id), payload, headers))

    for n in range(5):
        r = dataclasses.replace(rng.choice(records), usage_id=f"hostile-{n}")
        depth = 4000 - n
        add("too_deep", r, b"[" * depth + b"]" * depth)
        add("too_deep", r, b'{"a":' * 1300 + str(n).encode() + b"}" * 1300)
        add("invalid_record", r, body(r, usage_id=f"nul-{n}", model="evil\x00model"))
        add("invalid_record", r, body(r, usage_id=f"esc-{n}", model="red\x1b[31m"))
        add("invalid_record", r, body(r, usage_id=f"cr\r{n}"))
        add("invalid_record", r, body(r, usage_id=f"bell-{n}", model="bell\x07"))
        add("invalid_record", r, body(r, usage_id=f"tab-{n}", model="tab\t"))
        add("duplicate_key", r,
            body(r, usage_id=f"dup-{n}")[:-1] + b', "input_tokens": 900000000}')
        add("invalid_record", r, body(r, usage_id=f"big-{n}", model="m" * (7750 + n)))
        add("subject_mismatch", r, body(r, usage_id=f"subject-{n}"),
            subject=usage_subject(rng.choice([a for a in priced_ids if a != r.account_id])))
        add("subject_mismatch", r, body(r, usage_id=f"nouuid-{n}"),
            subject=f"ledger.usage.v1.not-an-account-{n}")
        add("msg_id_mismatch", r, body(r, usage_id=f"header-{n}"),
            headers={"Nats-Msg-Id": f"header-{n}"})
        add("occurred_at_out_of_range", r, body(r, usage_id=f"future-{n}",
                                                occurred_at=f"{9999 - n}-01-01T00:00:00Z"))
        add("occurred_at_out_of_range", r, body(r, usage_id=f"past-{n}",
                                                occurred_at=f"{1970 + n}-01-01T00:00:00Z"))
        add("occurred_at_out_of_range", r,
            body(r, usage_id=f"skew-{n}",
                 occurred_at=(now + OCCURRED_AT_FUTURE_SKEW * 3).isoformat()))
        add("invalid_record", r, body(r, usage_id=f"types-{n}", input_tokens="12"))
        add("invalid_record", r, body(r, usage_id=f"bool-{n}", success=1))
        add("invalid_json", r, bytes(rng.randrange(256) for _ in range(64)) + b"\xff")
        add("invalid_json", r, body(r, usage_id=f"surrogate-{n}", model="S").replace(
            b'"S"', b'"\xed\xa0\x80"'))
        add("unknown_account", r, body(r, usage_id=f"unknown-{n}", account_id=str(
            UUID(int=n + 1))), subject=usage_subject(UUID(int=n + 1)))
    return out


async def test_twenty_thousand_valid_records_among_hostile_ones_are_charged_exactly_once(
        database_url: str, nats_server_url: str) -> None:
    settings = IngestSettings(partitions=8)
    await recreate_stream(nats_server_url, settings)
    ledger = open_ledger(database_url)
    priced = accounts(ledger, E2E_ACCOUNTS)
    records = make_records(priced, VALID_RECORDS, "e2e")
    now = datetime.now(UTC)
    hostile = hostile_messages(records, [p.account_id for p in priced], now)
    # Conflicts: same usage_id as a valid record, other content, published after it.
    conflicts = [dataclasses.replace(r, input_tokens=r.input_tokens + 1)
                 for r in random.Random(6).sample(records, 20)]
    rng = random.Random(7)
    rng.shuffle(hostile)
    per_chunk = -(-len(hostile) // (VALID_RECORDS // PUBLISH_CHUNK))
    async with await UsagePublisher.connect(nats_server_url) as publisher:
        for start in range(0, VALID_RECORDS, PUBLISH_CHUNK):
            await publisher.publish_many(records[start:start + PUBLISH_CHUNK])
            chunk = start // PUBLISH_CHUNK
            for _code, subject, payload, headers in hostile[chunk * per_chunk:
                                                            (chunk + 1) * per_chunk]:
                ack = await publisher.js.publish(subject, payload, headers=headers,
                                                 stream=STREAM_NAME)
                assert not ack.duplicate
        await publisher.publish_many(conflicts)
        await publisher.publish_many(records[:500])  # exact repeats: dropped by the broker
        assert publisher.report.broker_duplicates == 500
    expected_rejections = len(hostile) + len(conflicts)
    async with running_consumer(database_url, nats_server_url, settings) as consumer:
        await wait_until(lambda: processed(ledger) >= VALID_RECORDS + expected_rejections,
                         WAIT_SECONDS, "the ledger answering every message")
        await wait_until(lambda: consumer.stats.rejected >= expected_rejections, WAIT_SECONDS,
                         "every rejection stored")
        assert consumer.is_healthy() and consumer.stats.sessions == 1
        assert await partitions_drained(nats_server_url, settings)
        assert consumer.stats.rejection_publish_failures == 0
    counters = ledger.keyed.counter_values()
    assert counters["usage_recorded"] == VALID_RECORDS
    assert counters["usage_conflicts"] == len(conflicts)
    assert counters.get("usage_duplicates", 0) == 0
    assert spent_by_account(ledger, priced) == expected_spent(records)
    total = sum(cost_of(r) for r in records)
    assert sum(spent_by_account(ledger, priced).values()) == total
    # Every hostile message rejected once, with the reason expected of it.
    stored = await stored_rejections(nats_server_url)
    assert len(stored) == expected_rejections
    by_digest = {headers["Ledger-Original-Sha256"]: (data, headers) for data, headers in stored}
    assert len(by_digest) == expected_rejections
    for code, subject, payload, _headers in hostile:
        data, headers = by_digest[hashlib.sha256(payload).hexdigest()]
        assert headers["Ledger-Rejection-Code"] == code, (payload[:80], headers)
        assert headers["Ledger-Rejection-Reason"]
        assert data == payload and headers["Ledger-Payload-Truncated"] == "false"
        assert headers["Ledger-Original-Subject"].endswith(subject.rsplit(".", 1)[1])
        assert int(headers["Ledger-Original-Sequence"]) > 0
    for conflict in conflicts:
        payload = UsageMessage.from_record(conflict).to_json()
        _data, headers = by_digest[hashlib.sha256(payload).hexdigest()]
        assert headers["Ledger-Rejection-Code"] == "usage_conflict"
    # Read models at the head, with every valid charge in them.
    position = project(database_url)
    team_id = ledger.get_account(priced[0].account_id).team_id
    with PostgresViewStore(database_url) as store:
        answer = store.balance(team_id, now + timedelta(seconds=1))
    assert answer is not None and answer["position"] == answer["head_position"] == position
    assert answer["usage"]["windows"]["total"]["requests"] == VALID_RECORDS
    assert answer["usage"]["windows"]["total"]["cost_nanos"] == total
    ledger.close()

"""The usage fast path, round trip: direct construction -> template encoding -> fast decoding.

The hot event, `Account.UsageRecorded`, skips the library's generic machinery at each step, in
the layer that owns the step: the domain builds it directly (`Account.record_usage`), the
services encode it from a template (`services.usage.mapper.LedgerMapper`), the projections
decode it from its stored fields (`projections.decoding.EventDecoder`, which also hands the raw
fields to the fold). The decoding half stays in projections because only the projections read
the log, and services must not know the fold's input shape. This test spans all of them: each
fast step must equal the library's generic one, so the halves cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import Mapper
from hypothesis import given
from hypothesis import strategies as st

from domain.account import Account
from domain.pricing import REQUEST_PRICE_NANOS_MAX, TOKEN_PRICE_NANOS_MAX
from domain.usage import TOKENS_MAX, UsageRecord
from projections.decoding import USAGE_RECORDED_TOPIC, EventDecoder, LogEntry
from services.ledger import Ledger
from tests.services.support import SINCE, team_with_accounts

RECORDED_AT = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
CASES = [
    ("req-1", "gpt-x", True, (1200, 0, 340), timedelta(days=30)),
    ('quote " and \\ backslash', "modèle-ü ☃", False, (0, 0, 0), timedelta(days=31, hours=5)),
    ("x" * 128, "m" * 128, True, (TOKENS_MAX, TOKENS_MAX, TOKENS_MAX), timedelta(days=40)),
]
# The most one record can cost: every token count and price at its bound. (The fast decoder reads
# integers with orjson, which holds them exactly up to 2**64; costs stay far below that.)
COST_NANOS_MAX = 3 * TOKENS_MAX * TOKEN_PRICE_NANOS_MAX + REQUEST_PRICE_NANOS_MAX
OFFSETS = [UTC, timezone(timedelta(hours=13)), timezone(timedelta(hours=-9, minutes=-30))]


@pytest.mark.parametrize("offset", OFFSETS, ids=["utc", "plus13", "minus0930"])
def test_usage_round_trips_through_the_fast_path_like_the_generic_one(offset: Any) -> None:
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    account = ledger.get_account(team_with_accounts(ledger, accounts=1).account_ids[0])
    account.collect_events()
    for usage_id, model, success, (input_tokens, cached, output), after in CASES:
        occurred_at = (SINCE + after).astimezone(offset)
        account.record_usage(UsageRecord(
            usage_id=usage_id, account_id=account.id, occurred_at=occurred_at, model=model,
            success=success, input_tokens=input_tokens, cached_input_tokens=cached,
            output_tokens=output), RECORDED_AT.astimezone(offset))
    decoder = EventDecoder(ledger.mapper)
    assert decoder.fast
    for position, event in enumerate(account.collect_events(), 1):
        stored = ledger.mapper.to_stored_event(event)  # the template
        assert stored == Mapper.to_stored_event(ledger.mapper, event)  # the generic encoding
        entry = LogEntry(position, stored.originator_id, stored.originator_version,
                         stored.topic, stored.state)
        assert entry.topic == USAGE_RECORDED_TOPIC
        decoded = decoder.decode(entry)
        assert type(decoded) is type(event) and vars(decoded) == vars(event)
        assert vars(decoded) == vars(ledger.mapper.to_domain_event(stored))
        fields = decoder.usage_fields(entry)
        assert fields is not None
        assert fields["timestamp"] == event.timestamp.isoformat()
        assert fields["occurred_at"] == event.occurred_at.isoformat()
        assert fields["team_id"] == event.team_id.hex
        assert fields["package_id"] == event.package_id.hex
        assert {k: v for k, v in fields.items() if k not in {
            "timestamp", "occurred_at", "team_id", "package_id"}} == {
            k: v for k, v in vars(event).items() if k not in {
                "timestamp", "occurred_at", "team_id", "package_id", "originator_id",
                "originator_version"}}
    assert decoder.fast_decoded == 2 * len(CASES)


LEDGER = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                       timezones=st.sampled_from([UTC, timezone(timedelta(hours=13)),
                                                  timezone(timedelta(hours=-9, minutes=-30))]))
texts = st.text(min_size=1, max_size=128)
counts = st.integers(0, TOKENS_MAX)


@given(originator_id=st.uuids(), version=st.integers(1, 10**9), timestamp=moments,
       team_id=st.uuids(), usage_id=texts, occurred_at=moments, model=texts,
       success=st.booleans(), input_tokens=counts, cached_input_tokens=counts,
       output_tokens=counts, cost_nanos=st.integers(0, COST_NANOS_MAX), package_id=st.uuids(),
       package_version=st.integers(1, 1000))
def test_fast_and_generic_encodings_are_identical(
        originator_id: UUID, version: int, timestamp: datetime, team_id: UUID, usage_id: str,
        occurred_at: datetime, model: str, success: bool, input_tokens: int,
        cached_input_tokens: int, output_tokens: int, cost_nanos: int, package_id: UUID,
        package_version: int) -> None:
    event = Account.UsageRecorded(
        originator_id=originator_id, originator_version=version, timestamp=timestamp,
        team_id=team_id, usage_id=usage_id, occurred_at=occurred_at, model=model,
        success=success, input_tokens=input_tokens, cached_input_tokens=cached_input_tokens,
        output_tokens=output_tokens, cost_nanos=cost_nanos, package_id=package_id,
        package_version=package_version)
    fast = LEDGER.mapper.to_stored_event(event)
    generic = Mapper.to_stored_event(LEDGER.mapper, event)
    assert fast == generic
    assert LEDGER.mapper.to_domain_event(fast) == event
    decoded = EventDecoder(LEDGER.mapper).decode(
        LogEntry(1, fast.originator_id, fast.originator_version, fast.topic, fast.state))
    assert vars(decoded) == vars(event)

"""The fast encoding of UsageRecorded is byte-identical to the library's generic one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

from eventsourcing.persistence import Mapper
from hypothesis import given
from hypothesis import strategies as st

from domain.account import Account
from domain.usage import TOKENS_MAX
from services.ledger import Ledger

LEDGER = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                       timezones=st.sampled_from([UTC, timezone(timedelta(hours=13)),
                                                  timezone(timedelta(hours=-9, minutes=-30))]))
texts = st.text(min_size=1, max_size=128)
counts = st.integers(0, TOKENS_MAX)


@given(originator_id=st.uuids(), version=st.integers(1, 10**9), timestamp=moments,
       team_id=st.uuids(), usage_id=texts, occurred_at=moments, model=texts,
       success=st.booleans(), input_tokens=counts, cached_input_tokens=counts,
       output_tokens=counts, cost_nanos=st.integers(0, 10**21), package_id=st.uuids(),
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

"""A mapper whose hot path encodes `Account.UsageRecorded` without the generic JSON machinery.

eventsourcing's JSON transcoder encodes UUIDs and datetimes through a `default=` callback, one
Python call per value, four per usage event; at tens of thousands of events a second that is a
large share of the write path. For the one hot event type this mapper builds the same document
directly from a fixed template, quoting the two free-text fields with the C string encoder the
stock encoder uses. The bytes are identical to the generic encoding (same key order, same
separators, same `{"_type_", "_data_"}` wrappers), so stored events decode with the stock
transcoder, and a property test holds the two paths equal byte for byte.

This is the encoding half of the usage fast path; the event is built directly by the domain
(`domain.account.new_usage_recorded`) and decoded from its stored fields by the projections
(`projections.decoding`), which alone read the log. tests/services/test_usage_fast_path.py
round-trips all three.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from domain.account import Account

_USAGE_RECORDED = Account.UsageRecorded
_USAGE_RECORDED_TOPIC = get_topic(_USAGE_RECORDED)
# The C string encoder the stock JSON encoder uses with ensure_ascii=False: quotes and escapes.
_quote = json.encoder.encode_basestring


# Same keys in the same order as vars(event) once the generic mapper has popped the originator
# id and version; same separators; same type wrappers.
_TEMPLATE = (
    '{"timestamp":{"_type_":"datetime_iso","_data_":"%s"},'
    '"team_id":{"_type_":"uuid_hex","_data_":"%s"},'
    '"usage_id":%s,'
    '"occurred_at":{"_type_":"datetime_iso","_data_":"%s"},'
    '"model":%s,"success":%s,"input_tokens":%d,"cached_input_tokens":%d,'
    '"output_tokens":%d,"cost_nanos":%d,'
    '"package_id":{"_type_":"uuid_hex","_data_":"%s"},"package_version":%d}'
)


class LedgerMapper(Mapper[UUID]):
    # The last timestamp encoded and its text: a batch's events share one timestamp. A tuple,
    # swapped whole, so that threads sharing the mapper never see a mismatched pair.
    _timestamp_text: tuple[object, str] = (None, "")

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        if type(domain_event) is not _USAGE_RECORDED or self.compressor or self.cipher:
            return super().to_stored_event(domain_event)
        e: Any = domain_event
        timestamp, timestamp_text = self._timestamp_text
        if timestamp is not e.timestamp:
            timestamp_text = e.timestamp.isoformat()
            self._timestamp_text = (e.timestamp, timestamp_text)
        state = _TEMPLATE % (
            timestamp_text, e.team_id.hex, _quote(e.usage_id),
            e.occurred_at.isoformat(), _quote(e.model), "true" if e.success else "false",
            e.input_tokens, e.cached_input_tokens, e.output_tokens, e.cost_nanos,
            e.package_id.hex, e.package_version,
        )
        return StoredEvent(
            originator_id=e.originator_id,
            originator_version=e.originator_version,
            topic=_USAGE_RECORDED_TOPIC,
            state=state.encode("utf8"),
        )

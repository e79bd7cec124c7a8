"""Decoding stored events for the projections: the Ledger application's mapper, plus one fast path.

The mapper (`ledger.mapper.to_domain_event`) is the reference decoder and decodes every event. The
one exception is the hot event, `Account.UsageRecorded` (one per model request): decoding it
through the library's JSON transcoder costs more than the whole projection budget, so when, and
only when, the mapper is configured exactly as the fast path assumes (the library's
`JSONTranscoder` with its `uuid_hex` and `datetime_iso` transcodings, no cipher, no compressor),
that event is parsed with orjson and its four typed fields are converted by hand. The result is
the same event object the mapper makes (same class, same `__dict__`); a test checks that on real
stored events. If the lead changes the transcoder (say, to msgpack or a cipher), `FastPath.check`
turns the fast path off and everything goes through the mapper: slower, never wrong. A stored
state that does not have the expected shape also falls back to the mapper.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import orjson
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent
from eventsourcing.utils import get_topic

from domain.account import Account

USAGE_RECORDED_TOPIC = get_topic(Account.UsageRecorded)

# The typed fields of UsageRecorded and the transcoding name each is stored under.
_USAGE_TYPED_FIELDS = (
    ("timestamp", "datetime_iso"),
    ("occurred_at", "datetime_iso"),
    ("team_id", "uuid_hex"),
    ("package_id", "uuid_hex"),
)
_DATETIME, _UUID = "datetime_iso", "uuid_hex"


# Team and package ids repeat in almost every usage event; parsing a UUID costs more than the
# rest of the event, so parsed ids are kept (the cache is cleared when it reaches its limit).
UUID_CACHE_SIZE_MAX = 100_000
_uuid_cache: dict[str, UUID] = {}


def _from_uuid_hex(data: str) -> UUID:
    parsed = _uuid_cache.get(data)
    if parsed is None:
        if len(_uuid_cache) >= UUID_CACHE_SIZE_MAX:
            _uuid_cache.clear()
        parsed = _uuid_cache[data] = UUID(hex=data)
    return parsed


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "datetime_iso": datetime.fromisoformat,
    "uuid_hex": _from_uuid_hex,
}


class LogEntry(NamedTuple):
    """One row of the notification log as the projections read it (a named tuple: it is made
    once per event, and a frozen dataclass costs several times more to make)."""

    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes

    def stored_event(self) -> StoredEvent:
        return StoredEvent(originator_id=self.originator_id,
                           originator_version=self.originator_version,
                           topic=self.topic, state=self.state)


def fast_path_applies(mapper: Mapper[Any]) -> bool:
    """True when the mapper stores events as the library's plain JSON, as the fast path reads."""
    if type(mapper).to_domain_event is not Mapper.to_domain_event:
        return False  # a mapper that decodes its own way must decode everything
    transcoder = mapper.transcoder
    if type(transcoder) is not JSONTranscoder:
        return False
    if mapper.cipher is not None or mapper.compressor is not None:
        return False
    names = transcoder.names
    return all(name in names for _, name in _USAGE_TYPED_FIELDS)


class EventDecoder:
    """Decodes log entries into domain events, through the mapper or the checked fast path."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        self.fast = fast_path_applies(mapper)
        self.fast_decoded = 0

    def decode(self, entry: LogEntry) -> Any:
        if self.fast and entry.topic == USAGE_RECORDED_TOPIC:
            event = self._decode_usage(entry)
            if event is not None:
                self.fast_decoded += 1
                return event
        return self.mapper.to_domain_event(entry.stored_event())

    def usage_fields(self, entry: LogEntry) -> dict[str, Any] | None:
        """A stored `UsageRecorded` as its plain JSON fields, typed fields left as the strings
        they are stored as (`timestamp` and `occurred_at` ISO 8601, `team_id` and `package_id`
        hex): what the projections' hot path folds without building an event object. None when
        the fast path is off or the state does not have the expected shape (then decode it)."""
        if not self.fast or entry.topic != USAGE_RECORDED_TOPIC:
            return None
        state = _usage_state(entry)
        if state is not None:
            self.fast_decoded += 1
        return state

    @staticmethod
    def _decode_usage(entry: LogEntry) -> Any | None:
        state = _usage_state(entry)
        if state is None:
            return None
        for field, name in _USAGE_TYPED_FIELDS:
            state[field] = _CONVERTERS[name](state[field])
        state["originator_id"] = entry.originator_id
        state["originator_version"] = entry.originator_version
        event = object.__new__(Account.UsageRecorded)
        object.__setattr__(event, "__dict__", state)
        return event


def _usage_state(entry: LogEntry) -> dict[str, Any] | None:
    """The stored JSON of a `UsageRecorded`, its four typed fields replaced by their `_data_`
    strings; None unless each is exactly `{"_type_": <expected>, "_data_": ...}`. Written out
    field by field: it runs once per usage record, and a loop cost a fifth of the decode."""
    try:
        state = orjson.loads(entry.state)
    except orjson.JSONDecodeError:
        return None  # the mapper raises its own, precise error
    if type(state) is not dict or "class_version" in state:
        return None
    try:
        ts, oc = state["timestamp"], state["occurred_at"]
        team, package = state["team_id"], state["package_id"]
        if not (ts["_type_"] == oc["_type_"] == _DATETIME
                and team["_type_"] == package["_type_"] == _UUID
                and len(ts) == len(oc) == len(team) == len(package) == 2):
            return None
        state["timestamp"], state["occurred_at"] = ts["_data_"], oc["_data_"]
        state["team_id"], state["package_id"] = team["_data_"], package["_data_"]
    except (KeyError, TypeError):
        return None
    return state

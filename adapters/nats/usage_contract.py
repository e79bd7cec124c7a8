"""The bus contract, version 1: one usage record per JSON message, as DESIGN.md writes it.

`UsageMessage` is the schema: a frozen pydantic model that forbids unknown fields and accepts no
coercion (a token count of "12" or 12.0, or `success: 1`, is a mistake in the producer, not
something to guess about). `decode_usage` turns one message into a domain `UsageRecord` or a
`BusRejection` that names what to fix. It is total: whatever the bytes, it returns one of the
two and never raises (a fuzz test holds it to that). The HTTP API decodes `POST /v1/usage`
bodies with the same function.

Limits, in the order they are checked, each before the work it protects:

1. size: at most `MESSAGE_BYTES_MAX` bytes (a record is a few hundred);
2. nesting: at most `JSON_DEPTH_MAX` levels of arrays/objects, counted on the raw bytes before
   any parse (a record is one flat object; the standard library's parser recurses);
3. the schema (pydantic, strict, unknown fields refused, named length limits): first the fast
   `UsageFields`, then, for what it refuses, `UsageMessage`, whose errors are the reasons;
4. duplicate keys refused (the parser keeps the last one; a billing contract must not guess);
5. text fields printable (`domain.usage.check_text`): no controls, no surrogates;
6. `occurred_at` within `OCCURRED_AT_FUTURE_SKEW` ahead of and `OCCURRED_AT_PAST_HORIZON`
   behind the ledger's clock;
7. the subject's account is the record's account, and `Nats-Msg-Id`, when sent, is the one
   `usage_message_id` derives from the record.

One module of ~460 lines on purpose: it *is* the versioned contract (schema and the JSON
producers write for it, message id, decoder and rejection format change together and are
versioned as one, `ledger.usage.v1`), and producers, the HTTP API and the consumer read it as
one page.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any, NotRequired
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict  # pydantic reads typing's only on Python 3.12+

from adapters.nats.ingest_settings import MESSAGE_BYTES_MAX, USAGE_SUBJECT_PREFIX
from adapters.nats.raw_json import duplicate_key, json_depth
from domain.errors import InvalidUsageError
from domain.usage import (
    EPOCH,
    MODEL_NAME_LENGTH_MAX,
    ONE_MICROSECOND,
    TOKENS_MAX,
    USAGE_ID_LENGTH_MAX,
    UsageRecord,
)

log = logging.getLogger(__name__)

# The field types, shared by the two schemas below (`UsageMessage` and `UsageFields`).
Tokens = Annotated[int, Field(ge=0, le=TOKENS_MAX)]
UsageId = Annotated[str, Field(min_length=1, max_length=USAGE_ID_LENGTH_MAX)]
ModelName = Annotated[str, Field(min_length=1, max_length=MODEL_NAME_LENGTH_MAX)]

# A record is one flat object (depth 1); a little more is read so that a field sent as an
# object or a list gets a precise "must be a string" rather than a bare "too deep".
JSON_DEPTH_MAX = 8
# A producer's clock may run a little ahead of ours; more than this is a broken clock (a
# year-9999 record was charged and counted in no window).
OCCURRED_AT_FUTURE_SKEW = timedelta(minutes=5)
# Late records are legitimate (producers buffer through outages, DESIGN.md: "days late"); 35
# days covers a whole previous calendar month plus a few days of outage, so a record of any day
# of last month can still arrive in the first days of this one. Older usage belongs to a
# billing period that is closed: finance settles it with an adjustment, not as new usage.
OCCURRED_AT_PAST_HORIZON = timedelta(days=35)
# Bounds on what a rejection reason quotes from the input.
QUOTED_TEXT_LENGTH_MAX = 64
REASON_PARTS_MAX = 10
# The message id: the usage_id, a colon, and this many hex digits of a SHA-256.
MESSAGE_ID_DIGEST_HEX_DIGITS = 32
MESSAGE_ID_CONTENT_VERSION = "ledger.usage.v1"
# The reason given if decoding itself failed (a bug; the fuzz tests hold it never happens).
UNREADABLE_REASON = "the record could not be read"


class BusRejectionCode:
    """Reasons found before the service sees a record (the service adds its own)."""

    INVALID_JSON = "invalid_json"
    INVALID_RECORD = "invalid_record"
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"
    DUPLICATE_KEY = "duplicate_key"
    OCCURRED_AT_OUT_OF_RANGE = "occurred_at_out_of_range"
    SUBJECT_MISMATCH = "subject_mismatch"
    MSG_ID_MISMATCH = "msg_id_mismatch"


class UsageMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    usage_id: UsageId
    account_id: UUID
    occurred_at: AwareDatetime
    model: ModelName
    success: bool
    input_tokens: Tokens
    output_tokens: Tokens
    cached_input_tokens: Tokens = 0

    @classmethod
    def from_record(cls, record: UsageRecord) -> UsageMessage:
        # Validated again on purpose: pydantic's `__init__` runs in its Rust core and measured
        # cheaper than the unvalidated `model_construct` (2.7 against 3.2 us per record).
        return cls(usage_id=record.usage_id, account_id=record.account_id,
                   occurred_at=record.occurred_at, model=record.model, success=record.success,
                   input_tokens=record.input_tokens, output_tokens=record.output_tokens,
                   cached_input_tokens=record.cached_input_tokens)

    def to_record(self) -> UsageRecord:
        return UsageRecord(usage_id=self.usage_id, account_id=self.account_id,
                           occurred_at=self.occurred_at, model=self.model, success=self.success,
                           input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                           cached_input_tokens=self.cached_input_tokens)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


@with_config(ConfigDict(strict=True, extra="forbid"))
class UsageFields(TypedDict):
    """`UsageMessage`'s schema again, as a dict: what the consumer validates first.

    pydantic reads the same JSON into a dict faster than into the frozen model: with the domain
    record built after it, 5.8 against 7.1 us per record (bench/decode_usage.py, 2026-12-04
    evening; BENCHMARKS.md), and the dict's size is the number of keys read, which the
    repeated-key check needs. It only ever lets a record through: whatever it refuses is
    validated again by `UsageMessage`, whose errors are the rejection reasons. The field list is
    the model's, repeated because a TypedDict cannot be derived from a model and stay typed;
    tests/adapters/test_usage_fields_schema.py holds the two schemas equal.
    """

    usage_id: UsageId
    account_id: UUID
    occurred_at: AwareDatetime
    model: ModelName
    success: bool
    input_tokens: Tokens
    output_tokens: Tokens
    cached_input_tokens: NotRequired[Tokens]


_USAGE_FIELDS = TypeAdapter(UsageFields)


# A domain record is checked as strictly as the schema checks (domain.usage) and has the same
# fields in the same order, so a producer's JSON is written straight from it, without building
# a UsageMessage first (BENCHMARKS.md, 2026-12-03); the bytes are the same
# (tests/adapters/test_usage_message_from_record.py).
_RECORD_JSON = TypeAdapter(UsageRecord)


def usage_json(record: UsageRecord | UsageMessage) -> bytes:
    """The message body a producer sends for `record`."""
    if isinstance(record, UsageMessage):
        return record.to_json()
    return _RECORD_JSON.dump_json(record)


# A ledger has far fewer accounts than records: each account's text form (in the subject, the
# subject check and the message id) is made once, not once per record (0.47 us against ~0.1 us;
# publishing: subject, message id and JSON 6.5 -> 4.8 us per record).
ACCOUNT_TEXTS_CACHED = 65_536
_account_text = lru_cache(maxsize=ACCOUNT_TEXTS_CACHED)(UUID.__str__)


def usage_subject(account_id: UUID | str) -> str:
    """Where a producer publishes a record of `account_id`."""
    text = _account_text(account_id) if isinstance(account_id, UUID) else account_id
    return f"{USAGE_SUBJECT_PREFIX}.{text}"


# The message id ------------------------------------------------------------------------------

def instant_microseconds(moment: datetime) -> int:
    """Whole microseconds since 1970-01-01T00:00:00Z (floor); the same instant in any offset
    gives the same number."""
    return (moment - EPOCH) // ONE_MICROSECOND


def canonical_content(record: UsageRecord | UsageMessage) -> str:
    """The record's content as one text, the same however the JSON was written.

    Nine lines joined by LF, no trailing LF: the version `ledger.usage.v1`, usage_id, account_id
    (lower-case hyphenated UUID), occurred_at as whole microseconds since 1970-01-01T00:00:00Z
    (a decimal integer, negative before it; the same instant in any offset gives the same
    number), model, `true`/`false`, input_tokens, cached_input_tokens, output_tokens (decimal).
    Text fields are printable, so they hold no LF and the lines cannot be confused.
    """
    return _canonical(record, _account_text(record.account_id),
                      instant_microseconds(record.occurred_at))


def _canonical(record: UsageRecord | UsageMessage, account_text: str, occurred_us: int) -> str:
    return "\n".join((
        MESSAGE_ID_CONTENT_VERSION,
        record.usage_id,
        account_text,
        str(occurred_us),
        record.model,
        "true" if record.success else "false",
        str(record.input_tokens),
        str(record.cached_input_tokens),
        str(record.output_tokens),
    ))


def usage_message_id(record: UsageRecord | UsageMessage) -> str:
    """`Nats-Msg-Id` of a record: `<usage_id>:<first 32 hex digits of SHA-256(UTF-8 of
    canonical_content)>`.

    The broker drops a message whose id it has seen within its duplicate window. With the
    content in the id, only an exact repeat is dropped there; a copy with the same usage_id and
    other content has another id, so it always reaches the ledger, which rejects it as a
    conflict and reports it."""
    return _message_id(canonical_content(record), record.usage_id)


def _message_id(canonical: str, usage_id: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{usage_id}:{digest[:MESSAGE_ID_DIGEST_HEX_DIGITS]}"


# Decoding ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BusRejection:
    code: str
    message: str
    usage_id: str | None = None


def quoted(text: str, limit: int = QUOTED_TEXT_LENGTH_MAX) -> str:
    """Input text safe to put in a reason: unprintable characters escaped (`\\x1b`), bounded."""
    head = text[:limit]
    if not head.isprintable():
        head = "".join(char if char.isprintable()
                       else char.encode("unicode_escape", "backslashreplace").decode("ascii")
                       for char in head)
    return head + ("..." if len(text) > limit else "")


def _describe(error: ValidationError) -> str:
    """Every field problem, as `field: what is wrong`, in one line (input quoted safely)."""
    parts = []
    for item in error.errors(include_url=False)[:REASON_PARTS_MAX]:
        where = ".".join(quoted(str(part)) for part in item["loc"]) or "message"
        parts.append(f"{where}: {quoted(item['msg'], limit=200)}")
    return "; ".join(parts)


def decode_usage(payload: bytes, subject_account: str | None, *, msg_id: str | None = None,
                 now: datetime | None = None) -> UsageRecord | BusRejection:
    """One message to a record, or the reason it cannot be one; never raises.

    `subject_account` is the account token of the subject the record was published on; the
    record must belong to it, since the subject decides the partition (the single writer).
    `msg_id` is the message's `Nats-Msg-Id` header, if it had one. `now` is the ledger's clock
    (default: the system clock), which bounds `occurred_at`.
    """
    try:
        return _decode(payload, subject_account, msg_id, now)
    except Exception as error:  # a bug here must cost one message, never the consumer
        log.exception("decoding a usage message failed unexpectedly: a bug, not bad input")
        return BusRejection(BusRejectionCode.INVALID_RECORD,
                            f"{UNREADABLE_REASON} ({type(error).__name__})")


def _decode(payload: bytes, subject_account: str | None, msg_id: str | None,
            now: datetime | None) -> UsageRecord | BusRejection:
    if len(payload) > MESSAGE_BYTES_MAX:
        return BusRejection(BusRejectionCode.TOO_LARGE,
                            f"a usage message is at most {MESSAGE_BYTES_MAX} bytes, "
                            f"got {len(payload)}")
    # The usual flat record is seen to be flat without a call (the hot path).
    depth = json_depth(payload) if b"[" in payload or payload.count(b"{") > 1 else 1
    if depth > JSON_DEPTH_MAX:
        return BusRejection(BusRejectionCode.TOO_DEEP,
                            f"the JSON nests {depth} levels deep; a usage record is one flat "
                            f"object (at most {JSON_DEPTH_MAX} levels are read)")
    fields = _validated_fields(payload)
    if isinstance(fields, BusRejection):
        return fields
    usage_id = fields.get("usage_id")
    try:
        repeated = duplicate_key(payload, len(fields))
    except ValueError as error:
        return BusRejection(BusRejectionCode.INVALID_JSON,
                            "the JSON could not be read again to check for repeated keys: "
                            f"{quoted(str(error), 200)}", _printable_or_none(usage_id))
    if repeated is not None:
        return BusRejection(BusRejectionCode.DUPLICATE_KEY,
                            f"key {quoted(repeated)!r} occurs more than once; send each field "
                            "once", _printable_or_none(usage_id))
    try:
        record = UsageRecord(**fields)
    except InvalidUsageError as error:
        return BusRejection(BusRejectionCode.INVALID_RECORD, str(error),
                            _printable_or_none(usage_id))
    return _check_context(record, subject_account, msg_id, now or datetime.now(UTC))


def _validated_fields(payload: bytes) -> Mapping[str, Any] | BusRejection:
    """The record's fields as sent (the keys read, no more), or why the schema refuses them."""
    try:
        return _USAGE_FIELDS.validate_json(payload)
    except ValidationError:
        pass  # the model says why, in its own words
    try:
        message = UsageMessage.model_validate_json(payload)
    except ValidationError as error:
        kinds = {item["type"] for item in error.errors(include_url=False)}
        code = (BusRejectionCode.INVALID_JSON
                if kinds & {"json_invalid", "json_type", "string_unicode"}
                else BusRejectionCode.INVALID_RECORD)
        return BusRejection(code, _describe(error), _usage_id_hint(payload))
    # The two schemas disagree (the test says they never do): the model is the contract.
    return {name: getattr(message, name) for name in message.model_fields_set}


class _Window:
    """The accepted range of `occurred_at` in microseconds, for the last `now` seen: the
    consumer passes one `now` per batch, so the bounds are computed once per batch, and each
    record pays one subtraction and two integer comparisons."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        # (now, low, high), swapped whole, so threads sharing it never see a mismatched set.
        self.last: tuple[datetime | None, int, int] = (None, 0, 0)

    def bounds(self, now: datetime) -> tuple[int, int]:
        seen, low, high = self.last
        if now is not seen:
            at = instant_microseconds(now)
            low = at - OCCURRED_AT_PAST_HORIZON // ONE_MICROSECOND
            high = at + OCCURRED_AT_FUTURE_SKEW // ONE_MICROSECOND
            self.last = (now, low, high)
        return low, high


_window = _Window()


def _check_context(record: UsageRecord, subject_account: str | None, msg_id: str | None,
                   now: datetime) -> UsageRecord | BusRejection:
    """What the record must agree with besides itself: the clock, the subject, the header."""
    low, high = _window.bounds(now)
    occurred_us = instant_microseconds(record.occurred_at)
    if occurred_us > high:
        return BusRejection(BusRejectionCode.OCCURRED_AT_OUT_OF_RANGE,
                            f"occurred_at {record.occurred_at.isoformat()} is more than "
                            f"{_minutes(OCCURRED_AT_FUTURE_SKEW)} minutes ahead of the ledger's "
                            f"clock ({now.isoformat()}); send the time the request happened, "
                            "from a synchronised clock", record.usage_id)
    if occurred_us < low:
        return BusRejection(BusRejectionCode.OCCURRED_AT_OUT_OF_RANGE,
                            f"occurred_at {record.occurred_at.isoformat()} is more than "
                            f"{OCCURRED_AT_PAST_HORIZON.days} days before the ledger's clock "
                            f"({now.isoformat()}); usage that old belongs to a closed billing "
                            "period and is settled by finance as an adjustment",
                            record.usage_id)
    account_text = _account_text(record.account_id)
    if subject_account is not None and subject_account != account_text:
        return BusRejection(BusRejectionCode.SUBJECT_MISMATCH,
                            f"record of account {record.account_id} was published on the "
                            f"subject of account {quoted(subject_account)}; publish it on "
                            f"{usage_subject(record.account_id)}", record.usage_id)
    if msg_id is not None:
        expected = _message_id(_canonical(record, account_text, occurred_us), record.usage_id)
        # NATS trims a header value's surrounding spaces on the wire; compare as it travels.
        if msg_id.strip() != expected.strip():
            return BusRejection(BusRejectionCode.MSG_ID_MISMATCH,
                                f"header Nats-Msg-Id is {quoted(msg_id, 200)!r}, but this "
                                f"record's is {quoted(expected, 200)!r} (usage_id, ':', and a "
                                "digest of the content: see docs/ingestion.md); set it so, or "
                                "leave it out", record.usage_id)
    return record


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def _printable_or_none(text: object) -> str | None:
    if isinstance(text, str) and 0 < len(text) <= USAGE_ID_LENGTH_MAX and text.isprintable():
        return text
    return None


def _usage_id_hint(payload: bytes) -> str | None:
    """The usage_id of a record that failed validation, when one can be read (for reports).
    Called only once the nesting depth is known to be bounded."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return _printable_or_none(data.get("usage_id") if isinstance(data, dict) else None)


# Rejections ----------------------------------------------------------------------------------

# A rejection's body is the original's, cut to this (a usage message is never bigger, but a
# broker configured otherwise, or another path, must not make a rejection too big to store).
REJECTED_PAYLOAD_BYTES_MAX = MESSAGE_BYTES_MAX
REJECTION_REASON_LENGTH_MAX = 1000
REJECTION_HEADER_TEXT_MAX = 256


def header_text(text: str, limit: int) -> str:
    """A header value: one line of printable ASCII (escapes for the rest), at most `limit`."""
    line = " ".join(text.split())
    if not (line.isascii() and line.isprintable()):
        line = "".join(char if " " <= char <= "~"
                       else char.encode("unicode_escape", "backslashreplace").decode("ascii")
                       for char in line[:limit])
    return line[:limit]


def rejection_message(code: str, reason: str, *, payload: bytes, original_subject: str,
                      original_sequence: int, original_msg_id: str | None, rejection_id: str,
                      keep_payload: bool = True) -> tuple[dict[str, str], bytes]:
    """Headers and body of the message on `ledger.usage.rejected` for one rejected original.

    The body is the original payload byte for byte (even if not UTF-8), cut to
    `REJECTED_PAYLOAD_BYTES_MAX` (or left out, `keep_payload=False`, the last resort when the
    broker refused the full form); the original's size and SHA-256 always travel in headers,
    so a cut or missing body can be matched with the producer's own copy."""
    body = payload[:REJECTED_PAYLOAD_BYTES_MAX] if keep_payload else b""
    headers = {
        "Nats-Msg-Id": rejection_id,
        "Ledger-Rejection-Code": header_text(code, REJECTION_HEADER_TEXT_MAX),
        "Ledger-Rejection-Reason": header_text(reason, REJECTION_REASON_LENGTH_MAX),
        "Ledger-Original-Subject": header_text(original_subject, REJECTION_HEADER_TEXT_MAX),
        "Ledger-Original-Sequence": str(original_sequence),
        "Ledger-Original-Size": str(len(payload)),
        "Ledger-Original-Sha256": hashlib.sha256(payload).hexdigest(),
        "Ledger-Payload-Truncated": "false" if body == payload else "true",
    }
    if original_msg_id:
        headers["Ledger-Original-Msg-Id"] = header_text(original_msg_id,
                                                        REJECTION_HEADER_TEXT_MAX)
    return headers, body

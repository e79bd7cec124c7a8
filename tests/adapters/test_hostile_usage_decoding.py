"""The usage decoder under hostile input: any bytes give a record or a rejection with a reason.

A fuzz test holds `decode_usage` total (arbitrary bytes, and near-valid JSON mutated field by
field); then one named regression test per case found in issue 8: deep nesting, duplicate keys,
control characters, far-future and far-past `occurred_at`, a `Nats-Msg-Id` that is not the
record's. The message id's derivation is pinned by a test vector that docs/ingestion.md gives to
producers in other languages.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.nats.ingest_settings import MESSAGE_BYTES_MAX
from adapters.nats.raw_json import json_depth
from adapters.nats.usage_contract import (
    JSON_DEPTH_MAX,
    OCCURRED_AT_FUTURE_SKEW,
    OCCURRED_AT_PAST_HORIZON,
    REJECTED_PAYLOAD_BYTES_MAX,
    REJECTION_REASON_LENGTH_MAX,
    UNREADABLE_REASON,
    BusRejection,
    BusRejectionCode,
    UsageMessage,
    canonical_content,
    decode_usage,
    header_text,
    rejection_message,
    usage_message_id,
)
from domain.usage import MODEL_NAME_LENGTH_MAX, USAGE_ID_LENGTH_MAX, UsageRecord

NOW = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
ACCOUNT = "3f1c6a2e-8b4d-4e7a-9c1f-2a5b6d8e0f13"
VALID: dict[str, Any] = {
    "usage_id": "req-7f3a", "account_id": ACCOUNT, "occurred_at": "2026-11-24T17:03:11.250Z",
    "model": "gpt-x", "success": True, "input_tokens": 1200, "output_tokens": 340,
    "cached_input_tokens": 0,
}
FIELDS = list(VALID)


def body(**changes: Any) -> bytes:
    return json.dumps({**VALID, **changes}).encode()


def decode(payload: bytes, subject: str | None = ACCOUNT, msg_id: str | None = None
           ) -> UsageRecord | BusRejection:
    return decode_usage(payload, subject, msg_id=msg_id, now=NOW)


def rejected(payload: bytes, code: str, **kwargs: Any) -> BusRejection:
    result = decode(payload, **kwargs)
    assert isinstance(result, BusRejection), f"accepted: {result}"
    assert result.code == code, result
    assert result.message
    return result


# Fuzzing -----------------------------------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False), st.text(max_size=40),
)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A valid record with a few fields replaced, dropped, repeated, or the text cut/grown."""
    members = [(key, value) for key, value in VALID.items()]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        action = draw(st.sampled_from(["replace", "drop", "repeat", "add", "nest"]))
        index = draw(st.integers(min_value=0, max_value=len(members) - 1))
        key = members[index][0]
        if action == "replace":
            members[index] = (key, draw(JSON_VALUES))
        elif action == "drop":
            members.pop(index)
        elif action == "repeat":
            members.append((key, draw(JSON_VALUES)))
        elif action == "add":
            members.append((draw(st.text(max_size=10)), draw(JSON_VALUES)))
        else:
            depth = draw(st.integers(min_value=1, max_value=3 * JSON_DEPTH_MAX))
            members[index] = (key, json.loads("[" * depth + "1" + "]" * depth))
        if not members:
            members.append(("usage_id", "x"))
    text = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in members) + "}"
    raw = text.encode("utf-8", "surrogatepass")
    cut = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=len(raw))))
    return raw if cut is None else raw[:cut]


def assert_total(payload: bytes, subject: str | None, msg_id: str | None) -> None:
    result = decode_usage(payload, subject, msg_id=msg_id, now=NOW)
    assert isinstance(result, UsageRecord | BusRejection)
    if isinstance(result, BusRejection):
        assert result.code and result.message
        # Not the safety net: the checks themselves never raised.
        assert UNREADABLE_REASON not in result.message
        # A reason travels in a header and a log line: one printable line.
        assert header_text(result.message, REJECTION_REASON_LENGTH_MAX)
    else:
        assert result.usage_id.isprintable() and result.model.isprintable()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=MESSAGE_BYTES_MAX + 16), st.one_of(st.none(), st.text(max_size=40)),
       st.one_of(st.none(), st.text(max_size=200)))
def test_any_bytes_give_a_record_or_a_rejection(payload: bytes, subject: str | None,
                                                msg_id: str | None) -> None:
    assert_total(payload, subject, msg_id)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid(), st.sampled_from([ACCOUNT, None, "other"]))
def test_near_valid_json_gives_a_record_or_a_rejection(payload: bytes,
                                                       subject: str | None) -> None:
    assert_total(payload, subject, None)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from('[]{}"\\,: a1'), max_size=MESSAGE_BYTES_MAX // 4))
def test_bracket_and_quote_soup_gives_a_rejection(text: str) -> None:
    assert_total(text.encode(), ACCOUNT, None)


# Regressions of issue 8 ----------------------------------------------------------------------

@pytest.mark.parametrize("opener,closer", [(b"[", b"]"), (b'{"a":', b"}")])
def test_deeply_nested_json_is_rejected_as_too_deep(opener: bytes, closer: bytes) -> None:
    depth = (MESSAGE_BYTES_MAX - 1) // (len(opener) + len(closer))
    payload = opener * depth + b"1" + closer * depth
    assert len(payload) <= MESSAGE_BYTES_MAX
    result = rejected(payload, BusRejectionCode.TOO_DEEP)
    assert f"{depth} levels" in result.message


def test_nesting_inside_a_field_is_rejected_with_the_field_named() -> None:
    result = rejected(body(model={"name": ["gpt-x"]}), BusRejectionCode.INVALID_RECORD)
    assert "model" in result.message


def test_deeply_nested_unterminated_json_is_rejected_quickly() -> None:
    payload = b'{"usage_id": "' + b'\\"' * 3000 + b"[" * 1000
    assert decode(payload).code in {BusRejectionCode.INVALID_JSON, BusRejectionCode.TOO_DEEP}  # type: ignore[union-attr]


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    assert json_depth(body(model="[[[{{{" * 10)) == 1
    assert isinstance(decode(body(model="[[[{{{" * 10)), UsageRecord)


def test_a_repeated_key_is_rejected_not_last_one_wins() -> None:
    payload = body()[:-1] + b', "input_tokens": 900000000}'
    result = rejected(payload, BusRejectionCode.DUPLICATE_KEY)
    assert "input_tokens" in result.message
    assert result.usage_id == "req-7f3a"


def test_a_repeated_key_with_commas_in_strings_is_still_found() -> None:
    payload = body(model="a,b,c", usage_id="x,y")[:-1] + b', "model": "a,b,c"}'
    rejected(payload, BusRejectionCode.DUPLICATE_KEY)


def test_commas_inside_strings_are_not_mistaken_for_duplicates() -> None:
    result = decode(body(model="gpt,x,,", usage_id="a,b"))
    assert isinstance(result, UsageRecord) and result.model == "gpt,x,,"


@pytest.mark.parametrize("field", ["model", "usage_id"])
@pytest.mark.parametrize("text", ["evil\x00model", "red\x1b[31m", "line\rbreak", "bell\x07",
                                  "tab\there", "del\x7f", "c1\x85", "rtl\u202eoverride",
                                  "para\u2029graph"])
def test_control_and_format_characters_in_text_fields_are_rejected(field: str,
                                                                   text: str) -> None:
    result = rejected(body(**{field: text}), BusRejectionCode.INVALID_RECORD)
    assert field in result.message and "printable" in result.message
    assert result.message.isprintable()


def test_a_lone_surrogate_is_rejected() -> None:
    payload = body()[:-1] + b', "model": "a\\ud800b"}'
    payload = payload.replace(b'"model": "gpt-x", ', b"")
    result = decode(payload)
    assert isinstance(result, BusRejection)
    raw_surrogate = body(model="x").replace(b'"x"', b'"\xed\xa0\x80"')
    assert isinstance(decode(raw_surrogate), BusRejection)


@pytest.mark.parametrize("field,limit", [("model", MODEL_NAME_LENGTH_MAX),
                                         ("usage_id", USAGE_ID_LENGTH_MAX)])
def test_text_fields_have_named_length_limits(field: str, limit: int) -> None:
    assert isinstance(decode(body(**{field: "é" * limit})), UsageRecord)
    rejected(body(**{field: "é" * (limit + 1)}), BusRejectionCode.INVALID_RECORD)


@pytest.mark.parametrize("text", ["Ünïcödé-模型", "emoji-🚀🔥", 'quote"d', "back\\slash",
                                  "it's", "spaces in name", "semi;colon,comma"])
def test_odd_but_printable_text_is_accepted(text: str) -> None:
    result = decode(body(model=text, usage_id=f"id {text}"))
    assert isinstance(result, UsageRecord) and result.model == text


def test_an_oversized_body_is_rejected_before_parsing() -> None:
    payload = body(model="x" * MESSAGE_BYTES_MAX)
    result = rejected(payload, BusRejectionCode.TOO_LARGE)
    assert str(MESSAGE_BYTES_MAX) in result.message


def test_a_body_just_under_the_limit_with_a_long_model_is_rejected_for_the_model() -> None:
    payload = body(model="m" * 7600)
    assert 7600 < len(payload) <= MESSAGE_BYTES_MAX
    result = rejected(payload, BusRejectionCode.INVALID_RECORD)
    assert "model" in result.message


def test_an_occurred_at_beyond_the_future_skew_is_rejected() -> None:
    within = (NOW + OCCURRED_AT_FUTURE_SKEW).isoformat()
    assert isinstance(decode(body(occurred_at=within)), UsageRecord)
    beyond = (NOW + OCCURRED_AT_FUTURE_SKEW + timedelta(seconds=1)).isoformat()
    result = rejected(body(occurred_at=beyond), BusRejectionCode.OCCURRED_AT_OUT_OF_RANGE)
    assert "ahead of the ledger's clock" in result.message
    rejected(body(occurred_at="9999-12-31T23:59:59Z"), BusRejectionCode.OCCURRED_AT_OUT_OF_RANGE)


def test_an_occurred_at_beyond_the_past_horizon_is_rejected() -> None:
    within = (NOW - OCCURRED_AT_PAST_HORIZON).isoformat()
    assert isinstance(decode(body(occurred_at=within)), UsageRecord)
    beyond = (NOW - OCCURRED_AT_PAST_HORIZON - timedelta(seconds=1)).isoformat()
    result = rejected(body(occurred_at=beyond), BusRejectionCode.OCCURRED_AT_OUT_OF_RANGE)
    assert f"{OCCURRED_AT_PAST_HORIZON.days} days" in result.message
    rejected(body(occurred_at="1970-01-01T00:00:00Z"), BusRejectionCode.OCCURRED_AT_OUT_OF_RANGE)


@pytest.mark.parametrize("payload,code", [
    (b"\xff\xfe\x00garbage", BusRejectionCode.INVALID_JSON),
    (b"", BusRejectionCode.INVALID_JSON),
    (b"null", BusRejectionCode.INVALID_RECORD),
    (body(input_tokens="12"), BusRejectionCode.INVALID_RECORD),
    (body(success=1), BusRejectionCode.INVALID_RECORD),
    (body(input_tokens=2**80), BusRejectionCode.INVALID_RECORD),
    (body(input_tokens=1.5), BusRejectionCode.INVALID_RECORD),
])
def test_wrong_types_and_non_json_are_rejected(payload: bytes, code: str) -> None:
    rejected(payload, code)


def test_the_subject_account_must_be_the_record_account() -> None:
    result = rejected(body(), BusRejectionCode.SUBJECT_MISMATCH,
                      subject="not-a-uuid\x1b[31m")
    assert result.message.isprintable()


# The message id ------------------------------------------------------------------------------

def test_the_message_id_matches_the_documented_test_vector() -> None:
    message = UsageMessage.model_validate_json(body())
    assert canonical_content(message) == (
        "ledger.usage.v1\nreq-7f3a\n3f1c6a2e-8b4d-4e7a-9c1f-2a5b6d8e0f13\n1795539791250000\n"
        "gpt-x\ntrue\n1200\n0\n340")
    assert usage_message_id(message) == "req-7f3a:c7ab0b4106b09ba20d8fed7b02c4e1f8"
    digest = hashlib.sha256(canonical_content(message).encode()).hexdigest()
    assert usage_message_id(message).endswith(digest[:32])


def test_the_message_id_is_the_same_for_the_same_instant_in_another_offset() -> None:
    auckland = body(occurred_at="2026-11-25T06:03:11.250+13:00")
    assert usage_message_id(UsageMessage.model_validate_json(auckland)) == usage_message_id(
        UsageMessage.model_validate_json(body()))


@pytest.mark.parametrize("change", [{"input_tokens": 1201}, {"model": "gpt-y"},
                                   {"success": False}, {"cached_input_tokens": 1},
                                   {"output_tokens": 341},
                                   {"occurred_at": "2026-11-24T17:03:11.250001Z"},
                                   {"account_id": str(UUID(int=1))}])
def test_other_content_under_the_same_usage_id_has_another_message_id(
        change: dict[str, Any]) -> None:
    same = usage_message_id(UsageMessage.model_validate_json(body()))
    other = usage_message_id(UsageMessage.model_validate_json(body(**change)))
    assert same != other and other.startswith("req-7f3a:")


def test_a_matching_message_id_header_is_accepted() -> None:
    record = decode(body())
    assert isinstance(record, UsageRecord)
    assert isinstance(decode(body(), msg_id=usage_message_id(record)), UsageRecord)


def test_a_message_id_header_that_is_not_the_record_s_is_rejected_naming_the_header() -> None:
    result = rejected(body(), BusRejectionCode.MSG_ID_MISMATCH, msg_id="req-7f3a")
    assert "Nats-Msg-Id" in result.message
    assert "req-7f3a:c7ab0b4106b09ba20d8fed7b02c4e1f8" in result.message


# Rejections ----------------------------------------------------------------------------------

def test_a_rejection_keeps_the_original_body_and_its_digest() -> None:
    payload = b'{"usage_id": "x"\x00\xff}'
    headers, data = rejection_message("invalid_json", "bad\r\nInjected: 1", payload=payload,
                                      original_subject="ledger.usage.v1.3.x",
                                      original_sequence=42, original_msg_id=None,
                                      rejection_id="rejected:e:42")
    assert data == payload
    assert headers["Ledger-Original-Sequence"] == "42"
    assert headers["Ledger-Original-Size"] == str(len(payload))
    assert headers["Ledger-Original-Sha256"] == hashlib.sha256(payload).hexdigest()
    assert headers["Ledger-Payload-Truncated"] == "false"
    assert headers["Ledger-Rejection-Reason"] == "bad Injected: 1"
    assert "Ledger-Original-Msg-Id" not in headers


def test_a_rejection_of_a_big_payload_is_cut_and_says_so() -> None:
    payload = b"x" * (REJECTED_PAYLOAD_BYTES_MAX * 3)
    headers, data = rejection_message("too_large", "r" * 5000, payload=payload,
                                      original_subject="s" * 5000, original_sequence=1,
                                      original_msg_id="\u202e" * 500,
                                      rejection_id="rejected:e:1")
    assert len(data) == REJECTED_PAYLOAD_BYTES_MAX
    assert headers["Ledger-Payload-Truncated"] == "true"
    assert headers["Ledger-Original-Size"] == str(len(payload))
    assert all(value.isascii() and value.isprintable() for value in headers.values())
    assert sum(len(k) + len(v) for k, v in headers.items()) < 2000
    without, empty = rejection_message("too_large", "r", payload=payload, original_subject="s",
                                       original_sequence=1, original_msg_id=None,
                                       rejection_id="rejected:e:1", keep_payload=False)
    assert empty == b"" and without["Ledger-Original-Sha256"] == headers["Ledger-Original-Sha256"]

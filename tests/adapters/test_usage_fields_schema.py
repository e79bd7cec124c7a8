"""The decoder's fast schema (`UsageFields`) lets through exactly what the contract's model does.

The consumer validates each message into the `UsageFields` dict first (half the cost of the
frozen `UsageMessage` model) and falls back to the model only for what the dict refuses, so
the model still words every rejection. That is only right if the dict never accepts what the
model refuses, nor reads a value differently: held here by comparing the two schemas and by
running both over valid, near-valid and awkward records.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from adapters.nats.usage_contract import (
    BusRejection,
    BusRejectionCode,
    UsageFields,
    UsageMessage,
    decode_usage,
)
from domain.usage import MODEL_NAME_LENGTH_MAX, TOKENS_MAX, USAGE_ID_LENGTH_MAX, UsageRecord
from tests.adapters.test_hostile_usage_decoding import ACCOUNT, NOW, VALID, body, near_valid

FIELDS_ADAPTER = TypeAdapter(UsageFields)

# Values that a lax reading would accept, or that sit on a limit, for each field.
AWKWARD: dict[str, list[Any]] = {
    "usage_id": ["", "x", "a" * USAGE_ID_LENGTH_MAX, "a" * (USAGE_ID_LENGTH_MAX + 1), 12,
                 None, "tab\there", "\u00e9t\u00e9"],
    "account_id": [ACCOUNT.upper(), ACCOUNT.replace("-", ""), "urn:uuid:" + ACCOUNT,
                   "{" + ACCOUNT + "}", ACCOUNT[:-1], 12, None],
    "occurred_at": ["2026-11-24T17:03:11Z", "2026-11-24T22:33:11+05:30",
                    "2026-11-24T17:03:11", "2026-11-24", "2026-11-24 17:03:11Z",
                    "2026-11-24T17:03:11.1234567Z", 1764003791, 1764003791.25, None],
    "model": ["", "m", "m" * MODEL_NAME_LENGTH_MAX, "m" * (MODEL_NAME_LENGTH_MAX + 1), 7,
              "a,b", "new\nline"],
    "success": [True, False, 1, 0, "true", "false", None],
    "input_tokens": [0, -1, TOKENS_MAX, TOKENS_MAX + 1, "12", 12.0, 12.5, 1e3, True, None,
                     2**64],
    "output_tokens": [0, TOKENS_MAX + 1, "0", 0.0, False],
    "cached_input_tokens": [0, 5, -1, "5", 5.0, None],
}
AWKWARD_CHANGES = st.sampled_from([(field, value) for field, values in AWKWARD.items()
                                   for value in values])


def read_by_model(payload: bytes) -> dict[str, Any] | None:
    try:
        message = UsageMessage.model_validate_json(payload)
    except ValidationError:
        return None
    return {name: getattr(message, name) for name in message.model_fields_set}


def read_by_fields(payload: bytes) -> dict[str, Any] | None:
    try:
        return dict(FIELDS_ADAPTER.validate_json(payload))
    except ValidationError:
        return None


def typed(fields: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    # `True == 1` in Python: compare the types too.
    return {name: (type(value), value) for name, value in fields.items()}


def assert_fields_read_as_model_reads(payload: bytes) -> None:
    fast = read_by_fields(payload)
    if fast is None:
        return  # refused: the decoder asks the model, which has the last word
    model = read_by_model(payload)
    assert model is not None, f"the fast schema accepted what the model refuses: {payload!r}"
    assert typed(fast) == typed(model)


def test_both_schemas_describe_the_same_record() -> None:
    fast = FIELDS_ADAPTER.json_schema()
    model = UsageMessage.model_json_schema()
    # A field left out has its default in the model; the dict leaves it out and the domain
    # record fills in the same default.
    defaults = {name: spec.pop("default") for name, spec in model["properties"].items()
                if "default" in spec}
    assert defaults == {"cached_input_tokens":
                        UsageRecord.__dataclass_fields__["cached_input_tokens"].default}
    assert fast["properties"] == model["properties"]
    assert sorted(fast["required"]) == sorted(model["required"])
    assert fast["additionalProperties"] is False
    assert list(UsageFields.__annotations__) == list(UsageMessage.model_fields)


@given(st.lists(AWKWARD_CHANGES, min_size=1, max_size=3),
       st.sets(st.sampled_from(list(VALID)), max_size=2))
@settings(max_examples=300, deadline=None)
def test_awkward_values_are_read_alike(changes: list[tuple[str, Any]], dropped: set[str]
                                       ) -> None:
    fields = {**VALID, **dict(changes)}
    for name in dropped:
        fields.pop(name)
    assert_fields_read_as_model_reads(json.dumps(fields).encode())


@given(near_valid())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_near_valid_records_are_read_alike(payload: bytes) -> None:
    assert_fields_read_as_model_reads(payload)


def test_a_valid_record_is_read_alike_with_and_without_the_optional_field() -> None:
    with_cached = body(cached_input_tokens=40)
    without = json.dumps({k: v for k, v in VALID.items() if k != "cached_input_tokens"}).encode()
    for payload in (with_cached, without):
        assert_fields_read_as_model_reads(payload)
        record = decode_usage(payload, ACCOUNT, now=NOW)
        assert isinstance(record, UsageRecord)
    assert len(read_by_fields(without) or {}) == len(VALID) - 1


def test_a_refused_record_is_worded_by_the_model() -> None:
    result = decode_usage(body(input_tokens="12"), ACCOUNT, now=NOW)
    assert isinstance(result, BusRejection)
    assert result.code == BusRejectionCode.INVALID_RECORD
    assert "input_tokens" in result.message and "integer" in result.message
    assert result.usage_id == VALID["usage_id"]
    extra = decode_usage(body(colour="red"), ACCOUNT, now=NOW)
    assert isinstance(extra, BusRejection) and "colour" in extra.message


def test_a_repeated_key_is_still_found_when_the_optional_field_is_left_out() -> None:
    # Seven distinct keys read, eight members: the repeat must not pass the comma count.
    members = [f'"{k}": {json.dumps(v)}' for k, v in VALID.items() if k != "cached_input_tokens"]
    payload = ("{" + ", ".join([*members, '"model": "other"']) + "}").encode()
    result = decode_usage(payload, ACCOUNT, now=NOW)
    assert isinstance(result, BusRejection) and result.code == BusRejectionCode.DUPLICATE_KEY

"""A usage record: validated as a fact, fingerprinted for idempotency."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest

from domain.errors import InvalidUsageError
from domain.usage import TOKENS_MAX, USAGE_ID_LENGTH_MAX, UsageRecord

ACCOUNT = uuid4()
AT = datetime(2026, 11, 24, 17, 3, 11, 250_000, tzinfo=UTC)


def record(**changes: Any) -> UsageRecord:
    fields: dict[str, Any] = {"usage_id": "req-7f3a", "account_id": ACCOUNT, "occurred_at": AT,
                              "model": "gpt-x", "success": True, "input_tokens": 1200,
                              "output_tokens": 340, "cached_input_tokens": 0}
    fields.update(changes)
    return UsageRecord(**fields)


@pytest.mark.parametrize(("changes", "message"), [
    ({"input_tokens": -1}, "input_tokens must be a whole number from 0"),
    ({"output_tokens": TOKENS_MAX + 1}, "output_tokens"),
    ({"cached_input_tokens": 1.0}, "cached_input_tokens"),
    ({"usage_id": ""}, "usage_id must be 1 to"),
    ({"usage_id": "x" * (USAGE_ID_LENGTH_MAX + 1)}, "usage_id must be 1 to"),
    ({"usage_id": "a\nb"}, "printable"),
    ({"occurred_at": datetime(2026, 1, 1)}, "UTC offset"),
    ({"model": ""}, "model must be"),
    ({"success": 1}, "success must be true or false"),
])
def test_invalid_records_are_refused_naming_the_field(changes: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(InvalidUsageError, match=message):
        record(**changes)


def test_the_same_instant_in_another_offset_is_the_same_content() -> None:
    auckland = AT.astimezone(timezone(timedelta(hours=13)))
    assert record().fingerprint() == record(occurred_at=auckland).fingerprint()


@pytest.mark.parametrize("changes", [
    {"input_tokens": 1201}, {"output_tokens": 341}, {"cached_input_tokens": 1},
    {"success": False}, {"model": "gpt-y"}, {"occurred_at": AT + timedelta(microseconds=1)},
    {"account_id": uuid4()},
])
def test_any_changed_field_changes_the_fingerprint(changes: dict[str, Any]) -> None:
    assert dataclasses.replace(record(), **changes).fingerprint() != record().fingerprint()

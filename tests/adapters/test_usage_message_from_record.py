"""What a producer sends for a domain record (`UsageMessage.from_record`, `usage_json`,
`usage_subject`, `usage_message_id`, the last two with the account's text form cached): the
same message, JSON and id as validating the fields from scratch, and the JSON decodes back to
the record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st

from adapters.nats.usage_contract import (
    UsageMessage,
    decode_usage,
    usage_json,
    usage_message_id,
    usage_subject,
)
from domain.usage import MODEL_NAME_LENGTH_MAX, TOKENS_MAX, USAGE_ID_LENGTH_MAX, UsageRecord

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
PRINTABLE = st.characters(codec="utf-8").filter(str.isprintable)
TOKENS = st.integers(min_value=0, max_value=TOKENS_MAX)

records = st.builds(
    UsageRecord,
    usage_id=st.text(PRINTABLE, min_size=1, max_size=USAGE_ID_LENGTH_MAX),
    account_id=st.uuids(),
    occurred_at=st.builds(
        lambda seconds, minutes: (NOW - timedelta(seconds=seconds)).astimezone(
            timezone(timedelta(minutes=minutes))),
        st.floats(min_value=0, max_value=30 * 86_400, allow_nan=False),
        st.integers(min_value=-14 * 60, max_value=14 * 60)),
    model=st.text(PRINTABLE, min_size=1, max_size=MODEL_NAME_LENGTH_MAX),
    success=st.booleans(),
    input_tokens=TOKENS, output_tokens=TOKENS, cached_input_tokens=TOKENS)


@given(records)
def test_the_message_of_a_record_is_what_full_validation_gives(record: UsageRecord) -> None:
    fast = UsageMessage.from_record(record)
    validated = UsageMessage.model_validate({
        "usage_id": record.usage_id, "account_id": record.account_id,
        "occurred_at": record.occurred_at, "model": record.model, "success": record.success,
        "input_tokens": record.input_tokens, "output_tokens": record.output_tokens,
        "cached_input_tokens": record.cached_input_tokens})
    assert fast == validated
    assert fast.to_json() == validated.to_json()
    assert usage_json(record) == usage_json(fast) == validated.to_json()
    assert usage_message_id(fast) == usage_message_id(validated) == usage_message_id(record)
    decoded = decode_usage(fast.to_json(), str(record.account_id),
                           msg_id=usage_message_id(record), now=NOW)
    assert decoded == record


def test_the_subject_names_the_account_in_its_usual_text_form() -> None:
    account = UUID("0b9e3c1e-2f4a-4d5b-9c6d-7e8f90a1b2c3")
    assert usage_subject(account) == "ledger.usage.v1.0b9e3c1e-2f4a-4d5b-9c6d-7e8f90a1b2c3"
    assert usage_subject(str(account)) == usage_subject(account)


def test_the_record_and_the_schema_name_the_same_fields_in_the_same_order() -> None:
    # `usage_json` writes a domain record's fields in its own order: the contract's JSON only
    # stays the schema's while the two agree.
    assert list(UsageRecord.__dataclass_fields__) == list(UsageMessage.model_fields)

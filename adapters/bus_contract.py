"""The bus contract, version 1: one usage record per JSON message, as DESIGN.md writes it.

`UsageMessage` is the schema: a frozen pydantic model that forbids unknown fields and accepts no
coercion (a token count of "12" or 12.0, or `success: 1`, is a mistake in the producer, not
something to guess about). `decode_usage` turns one message into a domain `UsageRecord` or a
`BusRejection` that names what to fix; it never raises on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from adapters.usage_settings import MESSAGE_BYTES_MAX, USAGE_SUBJECT_PREFIX
from domain.errors import InvalidUsageError
from domain.usage import MODEL_NAME_LENGTH_MAX, TOKENS_MAX, USAGE_ID_LENGTH_MAX, UsageRecord

Tokens = Annotated[int, Field(ge=0, le=TOKENS_MAX)]


class BusRejectionCode:
    """Reasons found before the service sees a record (the service adds its own)."""

    INVALID_JSON = "invalid_json"
    INVALID_RECORD = "invalid_record"
    TOO_LARGE = "too_large"
    SUBJECT_MISMATCH = "subject_mismatch"


class UsageMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    usage_id: Annotated[str, Field(min_length=1, max_length=USAGE_ID_LENGTH_MAX)]
    account_id: UUID
    occurred_at: AwareDatetime
    model: Annotated[str, Field(min_length=1, max_length=MODEL_NAME_LENGTH_MAX)]
    success: bool
    input_tokens: Tokens
    output_tokens: Tokens
    cached_input_tokens: Tokens = 0

    @classmethod
    def from_record(cls, record: UsageRecord) -> UsageMessage:
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


def usage_subject(account_id: UUID | str) -> str:
    """Where a producer publishes a record of `account_id`."""
    return f"{USAGE_SUBJECT_PREFIX}.{account_id}"


@dataclass(frozen=True, slots=True)
class BusRejection:
    code: str
    message: str
    usage_id: str | None = None


def _describe(error: ValidationError) -> str:
    """Every field problem, as `field: what is wrong`, in one line."""
    parts = []
    for item in error.errors(include_url=False)[:10]:
        where = ".".join(str(part) for part in item["loc"]) or "message"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def decode_usage(payload: bytes, subject_account: str | None) -> UsageRecord | BusRejection:
    """One message to a record, or the reason it cannot be one.

    `subject_account` is the account token of the subject the record was published on; the
    record must belong to it, since the subject decides the partition (the single writer).
    """
    if len(payload) > MESSAGE_BYTES_MAX:
        return BusRejection(BusRejectionCode.TOO_LARGE,
                            f"a usage message is at most {MESSAGE_BYTES_MAX} bytes, "
                            f"got {len(payload)}")
    try:
        message = UsageMessage.model_validate_json(payload)
    except ValidationError as error:
        kinds = {item["type"] for item in error.errors(include_url=False)}
        code = (BusRejectionCode.INVALID_JSON if kinds & {"json_invalid", "json_type"}
                else BusRejectionCode.INVALID_RECORD)
        return BusRejection(code, _describe(error), _usage_id_hint(payload))
    if subject_account is not None and subject_account != str(message.account_id):
        return BusRejection(BusRejectionCode.SUBJECT_MISMATCH,
                            f"record of account {message.account_id} was published on the "
                            f"subject of account {subject_account}; publish it on "
                            f"{usage_subject(message.account_id)}", message.usage_id)
    try:
        return message.to_record()
    except InvalidUsageError as error:
        return BusRejection(BusRejectionCode.INVALID_RECORD, str(error), message.usage_id)


def _usage_id_hint(payload: bytes) -> str | None:
    """The usage_id of a record that failed validation, when one can be read (for reports)."""
    import json

    try:
        data = json.loads(payload)
    except ValueError:
        return None
    usage_id = data.get("usage_id") if isinstance(data, dict) else None
    return usage_id if isinstance(usage_id, str) and len(usage_id) <= USAGE_ID_LENGTH_MAX else None

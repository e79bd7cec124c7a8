"""One usage record: a model request reported by an internal service.

The record is the producer's fact. Its `usage_id` is the idempotency key: the first record with a
given id is charged, a later one with the same content is a duplicate (acknowledged, nothing
changes), one with different content is a conflict. "Same content" is decided by a fingerprint
over the canonical form of every field, so it survives any re-serialisation by the producer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from domain.errors import InvalidUsageError

USAGE_ID_LENGTH_MAX = 128
MODEL_NAME_LENGTH_MAX = 128
TOKENS_MAX = 10**9

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)


def check_usage_id(usage_id: object) -> str:
    if not isinstance(usage_id, str) or not 1 <= len(usage_id) <= USAGE_ID_LENGTH_MAX:
        raise InvalidUsageError(
            f"usage_id must be 1 to {USAGE_ID_LENGTH_MAX} printable characters"
        )
    if not usage_id.isprintable():
        raise InvalidUsageError("usage_id must contain printable characters only")
    return usage_id


@dataclass(frozen=True, slots=True)
class UsageRecord:
    usage_id: str
    account_id: UUID
    occurred_at: datetime
    model: str
    success: bool
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0

    def __post_init__(self) -> None:
        check_usage_id(self.usage_id)
        if not isinstance(self.account_id, UUID):
            raise InvalidUsageError("account_id must be a UUID")
        if not isinstance(self.occurred_at, datetime) or self.occurred_at.utcoffset() is None:
            raise InvalidUsageError("occurred_at must be a timestamp with a UTC offset")
        if not isinstance(self.model, str) or not 1 <= len(self.model) <= MODEL_NAME_LENGTH_MAX:
            raise InvalidUsageError(f"model must be 1 to {MODEL_NAME_LENGTH_MAX} characters")
        if type(self.success) is not bool:
            raise InvalidUsageError("success must be true or false")
        for name in ("input_tokens", "output_tokens", "cached_input_tokens"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= TOKENS_MAX:
                raise InvalidUsageError(
                    f"{name} must be a whole number from 0 to {TOKENS_MAX}, got {value!r}"
                )

    def fingerprint(self) -> str:
        """A digest of the canonical content; equal records give equal fingerprints.

        The moment counts as an instant (microseconds since the epoch), so the same time written
        with another UTC offset is the same content.
        """
        canonical = repr((
            self.usage_id,
            self.account_id.int,
            (self.occurred_at - EPOCH) // ONE_MICROSECOND,
            self.model,
            self.success,
            self.input_tokens,
            self.cached_input_tokens,
            self.output_tokens,
        ))
        return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()

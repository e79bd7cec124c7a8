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


def check_text(name: str, value: object, length_max: int) -> str:
    """A free-text field: 1 to `length_max` printable characters.

    Printable is Python's `str.isprintable()`: no character of the Unicode categories Cc
    (controls: C0, DEL, C1, so no NUL, tab, CR, LF or ESC), Cf (format: bidi overrides,
    zero-width joiners), Cs (surrogates, which PostgreSQL cannot store), Co (private use), Cn
    (unassigned), Zl, Zp, or Zs other than the ASCII space. Such a value is stored, copied into
    every read model (COPY) and shown on screens as sent, so it must be harmless in all three.
    """
    if not isinstance(value, str) or not 1 <= len(value) <= length_max:
        raise InvalidUsageError(f"{name} must be 1 to {length_max} printable characters")
    if not value.isprintable():
        where = next(i for i, char in enumerate(value) if not char.isprintable())
        raise InvalidUsageError(
            f"{name} must contain printable characters only: character {where} is "
            f"U+{ord(value[where]):04X} (a control, format, surrogate or unassigned character)"
        )
    return value


def check_usage_id(usage_id: object) -> str:
    return check_text("usage_id", usage_id, USAGE_ID_LENGTH_MAX)


def _check_tokens(name: str, value: object) -> None:
    if type(value) is not int or not 0 <= value <= TOKENS_MAX:
        raise InvalidUsageError(
            f"{name} must be a whole number from 0 to {TOKENS_MAX}, got {value!r}"
        )


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
        check_text("model", self.model, MODEL_NAME_LENGTH_MAX)
        if type(self.success) is not bool:
            raise InvalidUsageError("success must be true or false")
        # Written out, not a loop over names: this runs once per record on the ingest path.
        _check_tokens("input_tokens", self.input_tokens)
        _check_tokens("output_tokens", self.output_tokens)
        _check_tokens("cached_input_tokens", self.cached_input_tokens)

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

"""Shared pieces of the API's JSON: money, freshness, request bases.

Money travels as a decimal string of integer nanos (1 unit = 10^9 nanos): amounts exceed 2^53,
which JavaScript numbers cannot hold, and floats are never used for money. Each amount comes with
its currency and a display string exact to the nano, e.g. `{"nanos": "12500000000",
"currency": "USD", "display": "12.500000000 USD"}`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from domain.money import AMOUNT_NANOS_MAX, format_nanos

NANOS_PATTERN = r"^-?(0|[1-9][0-9]{0,29})$"
NANOS_DESCRIPTION = ("Integer nanos of the team's currency (1 unit = 10^9 nanos) as a decimal "
                     "string; never a number, because amounts exceed 2^53.")

NanosString = Annotated[str, StringConstraints(pattern=NANOS_PATTERN, max_length=31),
                        Field(description=NANOS_DESCRIPTION, examples=["12500000000"])]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=False)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
IDEMPOTENCY_KEY_DESCRIPTION = ("A key you choose (1 to 200 characters) so that a retried request "
                               "has its effect once; the same key with the same body answers the "
                               "first answer again, with a different body it is a 409.")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Money(BaseModel):
    nanos: str = Field(description=NANOS_DESCRIPTION, examples=["12500000000"])
    currency: str
    display: str = Field(description="For people: the amount in the currency, exact to the nano")


def money(amount_nanos: int, currency: str) -> Money:
    return Money(nanos=str(amount_nanos), currency=currency,
                 display=format_nanos(amount_nanos, currency))


def parse_nanos(value: str, field: str) -> int:
    """The pattern already holds; this bounds the magnitude with a message naming the field."""
    from adapters.http.problems import FieldError, ProblemError

    amount = int(value)
    if abs(amount) > AMOUNT_NANOS_MAX:
        raise ProblemError(422, "invalid_amount", "Invalid input",
                           f"{field} must be at most {AMOUNT_NANOS_MAX} nanos in magnitude",
                           [FieldError(field=f"body.{field}",
                                       message=f"at most {AMOUNT_NANOS_MAX} in magnitude")])
    return amount


class Freshness(BaseModel):
    position: int = Field(description="The event-log position this answer reflects")
    head_position: int = Field(description="The last position in the log when answered")
    lag_events: int = Field(description="How many events the answer is behind the log "
                            "(an upper bound: positions can have gaps)")


def freshness(position: int, head: int) -> dict[str, Any]:
    return {"position": position, "head_position": head, "lag_events": max(head - position, 0)}


class MoneyMoved(BaseModel):
    """What a money-moving admin action changed, from the write side at the moment it ran."""

    balance_before: Money
    balance_after: Money
    available_before: Money
    available_after: Money
    event_position: int | None = Field(description="Log position of the event recorded (find it "
                                       "in the audit trail); null if nothing was recorded "
                                       "(an idempotent repeat)")

"""Price terms of a package and the exact cost of one model request.

A package prices a request, an input token, a cached input token and an output token, each in
whole nanos, and says whether failed requests are billed. `cached_input_tokens` are counted apart
from `input_tokens` (they are not a subset of them), so the cost of a request is

    request_nanos + input_tokens * input_token_nanos
                  + cached_input_tokens * cached_input_token_nanos
                  + output_tokens * output_token_nanos

an exact integer. A failed request costs nothing unless the package bills failures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.errors import InvalidInputError

# One price component may be at most one currency unit per token and 1,000 units per request;
# anything above that is a unit mistake (minor units or whole units typed as nanos).
TOKEN_PRICE_NANOS_MAX = 10**9
REQUEST_PRICE_NANOS_MAX = 10**12


@dataclass(frozen=True)
class PriceTerms:
    request_nanos: int
    input_token_nanos: int
    cached_input_token_nanos: int
    output_token_nanos: int
    bill_failed_requests: bool = False

    def __post_init__(self) -> None:
        limits = {
            "request_nanos": REQUEST_PRICE_NANOS_MAX,
            "input_token_nanos": TOKEN_PRICE_NANOS_MAX,
            "cached_input_token_nanos": TOKEN_PRICE_NANOS_MAX,
            "output_token_nanos": TOKEN_PRICE_NANOS_MAX,
        }
        for name, limit in limits.items():
            value = getattr(self, name)
            if type(value) is not int:
                raise InvalidInputError(
                    f"price {name} must be a whole number of nanos, got {value!r}"
                )
            if not 0 <= value <= limit:
                raise InvalidInputError(
                    f"price {name} must be between 0 and {limit} nanos, got {value}"
                )
        if type(self.bill_failed_requests) is not bool:
            raise InvalidInputError("bill_failed_requests must be true or false")

    def cost_nanos(self, *, success: bool, input_tokens: int, cached_input_tokens: int,
                   output_tokens: int) -> int:
        return cost_nanos(self.as_dict(), success=success, input_tokens=input_tokens,
                          cached_input_tokens=cached_input_tokens, output_tokens=output_tokens)

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_nanos": self.request_nanos,
            "input_token_nanos": self.input_token_nanos,
            "cached_input_token_nanos": self.cached_input_token_nanos,
            "output_token_nanos": self.output_token_nanos,
            "bill_failed_requests": self.bill_failed_requests,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PriceTerms:
        return cls(
            request_nanos=data["request_nanos"],
            input_token_nanos=data["input_token_nanos"],
            cached_input_token_nanos=data["cached_input_token_nanos"],
            output_token_nanos=data["output_token_nanos"],
            bill_failed_requests=data["bill_failed_requests"],
        )


def cost_nanos(terms: Mapping[str, Any], *, success: bool, input_tokens: int,
               cached_input_tokens: int, output_tokens: int) -> int:
    """The exact cost of one request under terms in their stored (dict) form.

    Aggregates keep terms as plain dicts so that their state stays JSON-transcodable for
    snapshots; the terms were validated as `PriceTerms` when the package version was published.
    """
    if not success and not terms["bill_failed_requests"]:
        return 0
    return int(
        terms["request_nanos"]
        + input_tokens * terms["input_token_nanos"]
        + cached_input_tokens * terms["cached_input_token_nanos"]
        + output_tokens * terms["output_token_nanos"]
    )

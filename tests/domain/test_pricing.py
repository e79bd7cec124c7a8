"""Pricing: the exact integer cost of a request under a package's terms."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidInputError
from domain.pricing import REQUEST_PRICE_NANOS_MAX, TOKEN_PRICE_NANOS_MAX, PriceTerms, cost_nanos
from domain.usage import TOKENS_MAX

token_prices = st.integers(0, TOKEN_PRICE_NANOS_MAX)
tokens = st.integers(0, TOKENS_MAX)


@given(request=st.integers(0, REQUEST_PRICE_NANOS_MAX), input_price=token_prices,
       cached_price=token_prices, output_price=token_prices, input_tokens=tokens,
       cached_tokens=tokens, output_tokens=tokens)
def test_cost_is_the_exact_integer_formula(request: int, input_price: int, cached_price: int,
                                           output_price: int, input_tokens: int,
                                           cached_tokens: int, output_tokens: int) -> None:
    terms = PriceTerms(request, input_price, cached_price, output_price)
    cost = terms.cost_nanos(success=True, input_tokens=input_tokens,
                            cached_input_tokens=cached_tokens, output_tokens=output_tokens)
    assert type(cost) is int
    assert cost == (request + input_tokens * input_price + cached_tokens * cached_price
                    + output_tokens * output_price)


@given(st.lists(st.tuples(tokens, tokens, tokens), min_size=1, max_size=50))
def test_sum_of_costs_equals_cost_of_summed_tokens(requests: list[tuple[int, int, int]]) -> None:
    terms = PriceTerms(0, 3_000, 300, 15_000)
    total = sum(terms.cost_nanos(success=True, input_tokens=i, cached_input_tokens=c,
                                 output_tokens=o) for i, c, o in requests)
    assert total == (3_000 * sum(r[0] for r in requests) + 300 * sum(r[1] for r in requests)
                     + 15_000 * sum(r[2] for r in requests))


def test_failed_requests_are_free_unless_the_package_bills_them() -> None:
    free = PriceTerms(100, 1, 1, 1, bill_failed_requests=False)
    billed = PriceTerms(100, 1, 1, 1, bill_failed_requests=True)
    usage = {"input_tokens": 10, "cached_input_tokens": 5, "output_tokens": 0}
    assert free.cost_nanos(success=False, **usage) == 0
    assert billed.cost_nanos(success=False, **usage) == 115


def test_stored_terms_price_like_the_value_object() -> None:
    terms = PriceTerms(7, 11, 13, 17, bill_failed_requests=True)
    usage = {"success": False, "input_tokens": 2, "cached_input_tokens": 3, "output_tokens": 5}
    assert cost_nanos(terms.as_dict(), **usage) == terms.cost_nanos(**usage)
    assert PriceTerms.from_dict(terms.as_dict()) == terms


@pytest.mark.parametrize(("field", "value", "message"), [
    ("input_token_nanos", -1, "between 0 and"),
    ("output_token_nanos", TOKEN_PRICE_NANOS_MAX + 1, "between 0 and"),
    ("request_nanos", 0.5, "whole number of nanos"),
])
def test_bad_prices_are_refused_with_the_field_named(field: str, value: object,
                                                     message: str) -> None:
    arguments: dict[str, object] = {"request_nanos": 0, "input_token_nanos": 0,
                                    "cached_input_token_nanos": 0, "output_token_nanos": 0}
    arguments[field] = value
    with pytest.raises(InvalidInputError, match=f"{field}.*{message}|{message}"):
        PriceTerms(**arguments)  # type: ignore[arg-type]

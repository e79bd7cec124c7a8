"""Money: int nanos, exact conversions from Stripe minor units, one half-even rounding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidAmountError, InvalidInputError
from domain.money import (
    AMOUNT_NANOS_MAX,
    MINOR_UNIT_EXPONENTS,
    NANOS_PER_UNIT,
    check_amount_nanos,
    format_nanos,
    minor_units_to_nanos,
    round_to_minor_units,
)

currencies = st.sampled_from(sorted(MINOR_UNIT_EXPONENTS))


def test_stripe_cents_convert_exactly_to_nanos() -> None:
    assert minor_units_to_nanos(1999, "USD") == 19_990_000_000
    assert minor_units_to_nanos(500, "JPY") == 500 * NANOS_PER_UNIT
    assert minor_units_to_nanos(1, "KWD") == 1_000_000


def test_rounding_is_half_even_at_the_minor_unit() -> None:
    half_cent = 5_000_000
    assert round_to_minor_units(2 * 10_000_000 + half_cent, "USD").amount_minor == 2
    assert round_to_minor_units(3 * 10_000_000 + half_cent, "USD").amount_minor == 4
    assert round_to_minor_units(3 * 10_000_000 + half_cent + 1, "USD").amount_minor == 4
    assert round_to_minor_units(-(3 * 10_000_000 + half_cent), "USD").amount_minor == -4


def test_rounding_keeps_the_difference_it_made() -> None:
    rounded = round_to_minor_units(1_234_567_891, "USD")
    assert rounded.amount_minor == 123
    assert rounded.rounded_nanos == 1_230_000_000
    assert rounded.rounding_difference_nanos == -4_567_891


@given(amount_minor=st.integers(-10**12, 10**12), currency=currencies)
def test_minor_units_survive_a_round_trip(amount_minor: int, currency: str) -> None:
    nanos = minor_units_to_nanos(amount_minor, currency)
    assert type(nanos) is int
    rounded = round_to_minor_units(nanos, currency)
    assert rounded.amount_minor == amount_minor
    assert rounded.rounding_difference_nanos == 0


@given(amount_nanos=st.integers(-10**21, 10**21), currency=currencies)
def test_rounding_moves_at_most_half_a_minor_unit(amount_nanos: int, currency: str) -> None:
    step = NANOS_PER_UNIT // 10 ** MINOR_UNIT_EXPONENTS[currency]
    rounded = round_to_minor_units(amount_nanos, currency)
    assert type(rounded.amount_minor) is int
    assert rounded.rounded_nanos == rounded.amount_minor * step
    assert 2 * abs(rounded.rounding_difference_nanos) <= step
    assert rounded.rounded_nanos - amount_nanos == rounded.rounding_difference_nanos


def test_unsupported_currency_names_the_supported_ones() -> None:
    with pytest.raises(InvalidInputError, match=r"XYZ.*USD"):
        minor_units_to_nanos(1, "XYZ")


@pytest.mark.parametrize("bad", [1.5, "10", None, True])
def test_amounts_must_be_int_nanos(bad: object) -> None:
    with pytest.raises(InvalidAmountError, match="whole number of nanos"):
        check_amount_nanos("amount_nanos", bad)


def test_amount_limits_are_named_in_the_error() -> None:
    with pytest.raises(InvalidAmountError, match="must not be negative"):
        check_amount_nanos("amount_nanos", -1)
    with pytest.raises(InvalidAmountError, match="must not be zero"):
        check_amount_nanos("amount_nanos", 0)
    with pytest.raises(InvalidAmountError, match=str(AMOUNT_NANOS_MAX)):
        check_amount_nanos("amount_nanos", AMOUNT_NANOS_MAX + 1)
    assert check_amount_nanos("adjustment", -5, allow_negative=True) == -5


def test_format_is_exact_to_the_nano() -> None:
    assert format_nanos(-12_500_000_001, "USD") == "-12.500000001 USD"
    assert format_nanos(7, "EUR") == "0.000000007 EUR"

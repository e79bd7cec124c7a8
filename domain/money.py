"""Money as integer nanos of the team's currency.

1 unit of a currency (1 USD, 1 EUR, 1 JPY) is 10**9 nanos. Every amount in the ledger is an `int`
in nanos, named `..._nanos`; no float ever touches money. Stripe speaks in minor units (cents for
USD, whole yen for JPY): converting minor units to nanos is exact, converting nanos back to minor
units happens once, when an invoice is finalized, with banker's rounding (half-even) and the
difference kept so that it can be shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.errors import InvalidAmountError, InvalidInputError

NANOS_PER_UNIT = 10**9

# Largest single amount the ledger accepts in one command (a top-up, an adjustment, a credit
# limit): one trillion currency units. It keeps every sum far inside PostgreSQL's numeric range
# and catches unit mistakes (minor units passed as nanos, or the reverse) early.
AMOUNT_NANOS_MAX = 10**12 * NANOS_PER_UNIT

# ISO 4217 minor-unit exponents for the currencies we bill in. A currency not listed here is
# refused with a clear error rather than guessed at.
MINOR_UNIT_EXPONENTS: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "CHF": 2,
    "CAD": 2,
    "AUD": 2,
    "NZD": 2,
    "SGD": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "CNY": 2,
    "INR": 2,
    "BRL": 2,
    "JPY": 0,
    "KRW": 0,
    "BHD": 3,
    "KWD": 3,
}


def check_currency(currency: str) -> str:
    """Return the currency code if we bill in it, else raise naming the supported codes."""
    if currency not in MINOR_UNIT_EXPONENTS:
        supported = ", ".join(sorted(MINOR_UNIT_EXPONENTS))
        raise InvalidInputError(
            f"currency {currency!r} is not supported; use one of: {supported}"
        )
    return currency


def nanos_per_minor_unit(currency: str) -> int:
    exponent: int = MINOR_UNIT_EXPONENTS[check_currency(currency)]
    divisor: int = 10**exponent
    return NANOS_PER_UNIT // divisor


def minor_units_to_nanos(amount_minor: int, currency: str) -> int:
    """Exact conversion of a Stripe amount (minor units) to nanos."""
    if type(amount_minor) is not int:
        raise InvalidAmountError(
            f"amount in minor units must be a whole number, got {amount_minor!r}"
        )
    return amount_minor * nanos_per_minor_unit(currency)


@dataclass(frozen=True)
class RoundedAmount:
    """An amount rounded to the currency's minor unit, with what rounding changed."""

    amount_minor: int
    rounded_nanos: int
    rounding_difference_nanos: int  # rounded_nanos - exact nanos; signed


def round_to_minor_units(amount_nanos: int, currency: str) -> RoundedAmount:
    """Round half-even to the currency's minor unit. Integer arithmetic only."""
    step = nanos_per_minor_unit(currency)
    quotient, remainder = divmod(amount_nanos, step)  # floor division: remainder in [0, step)
    twice = 2 * remainder
    if twice > step or (twice == step and quotient % 2 == 1):
        quotient += 1
    rounded_nanos = quotient * step
    return RoundedAmount(
        amount_minor=quotient,
        rounded_nanos=rounded_nanos,
        rounding_difference_nanos=rounded_nanos - amount_nanos,
    )


def check_amount_nanos(name: str, amount_nanos: object, *, allow_zero: bool = False,
                       allow_negative: bool = False) -> int:
    """Validate a money amount given by a caller; the error names the field and the range."""
    if type(amount_nanos) is not int:
        raise InvalidAmountError(
            f"{name} must be a whole number of nanos (int), got {type(amount_nanos).__name__}"
        )
    if abs(amount_nanos) > AMOUNT_NANOS_MAX:
        raise InvalidAmountError(
            f"{name} must be at most {AMOUNT_NANOS_MAX} nanos in magnitude, got {amount_nanos}"
        )
    if amount_nanos == 0 and not allow_zero:
        raise InvalidAmountError(f"{name} must not be zero")
    if amount_nanos < 0 and not allow_negative:
        raise InvalidAmountError(f"{name} must not be negative, got {amount_nanos}")
    return amount_nanos


def format_nanos(amount_nanos: int, currency: str) -> str:
    """A readable amount for summaries, exact to the nano: `-12.500000000 USD`."""
    sign = "-" if amount_nanos < 0 else ""
    units, nanos = divmod(abs(amount_nanos), NANOS_PER_UNIT)
    return f"{sign}{units}.{nanos:09d} {currency}"

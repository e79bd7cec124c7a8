"""Money as people read it on the dashboard, from integer nanos with integer arithmetic only.

Balances and limits show the currency's minor unit (cents for USD, whole yen for JPY), rounded
half-even like an invoice. Usage costs are often a fraction of a cent, so small costs show more
places (`COST_PLACES`); the exact nanos are always in the element's `title` for anyone who needs
them. No float ever touches these numbers.
"""

from __future__ import annotations

from domain.money import MINOR_UNIT_EXPONENTS, NANOS_PER_UNIT, format_nanos

NANO_PLACES = 9
# Costs below one currency unit show this many decimal places, so $0.0031 is not shown as $0.00.
COST_PLACES = 4

CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "¥", "INR": "₹",
                    "KRW": "₩", "AUD": "A$", "CAD": "C$", "NZD": "NZ$", "SGD": "S$",
                    "CHF": "CHF ", "BRL": "R$"}


def round_half_even(amount_nanos: int, places: int) -> int:
    """`amount_nanos` rounded to `places` decimals of the unit, as an integer count of them."""
    step: int = 10 ** (NANO_PLACES - places)
    quotient, remainder = divmod(amount_nanos, step)
    twice = 2 * remainder
    if twice > step or (twice == step and quotient % 2 == 1):
        quotient += 1
    return quotient


def group_thousands(units: int) -> str:
    return f"{units:,}"


def format_money(amount_nanos: int, currency: str, places: int | None = None) -> str:
    """`-$1,234.57` for USD; `¥1,235` for JPY; codes without a symbol go after: `1.500 KWD`."""
    if places is None:
        places = MINOR_UNIT_EXPONENTS.get(currency, 2)
    scaled = round_half_even(amount_nanos, places)
    sign = "-" if scaled < 0 else ""
    units, fraction = divmod(abs(scaled), 10**places)
    number = group_thousands(units) + (f".{fraction:0{places}d}" if places else "")
    symbol = CURRENCY_SYMBOLS.get(currency)
    if symbol is None:
        return f"{sign}{number} {currency}"
    return f"{sign}{symbol}{number}"


def format_cost(amount_nanos: int, currency: str) -> str:
    """A usage cost: minor units when at least one unit, more places below that."""
    minor = MINOR_UNIT_EXPONENTS.get(currency, 2)
    if amount_nanos != 0 and abs(amount_nanos) < NANOS_PER_UNIT:
        places = max(minor, COST_PLACES)
        # Drop zeros the extra places would add ($0.0400 reads as $0.04), keep the minor unit.
        while places > minor and round_half_even(amount_nanos, places) % 10 == 0:
            places -= 1
        return format_money(amount_nanos, currency, places)
    return format_money(amount_nanos, currency, minor)


def exact_money(amount_nanos: int, currency: str) -> str:
    """Exact to the nano, for titles and exports."""
    return format_nanos(amount_nanos, currency)


def format_count(value: int) -> str:
    return group_thousands(value)


def format_tokens(value: int) -> str:
    """Compact token counts: 950, 12.4k, 3.1M, 2.0B (integer arithmetic, one decimal, floor)."""
    for size, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if abs(value) >= size:
            tenths = abs(value) * 10 // size
            sign = "-" if value < 0 else ""
            return f"{sign}{tenths // 10}.{tenths % 10}{suffix}"
    return str(value)


def format_rate(successes: int, requests: int) -> str:
    """Success rate with one decimal, from integers; an em dash when there were no requests."""
    if requests == 0:
        return "—"
    tenths = (successes * 1000 + requests // 2) // requests
    return f"{tenths // 10}.{tenths % 10}%"

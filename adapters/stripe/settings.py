"""Stripe configuration from the environment. Secrets are never logged: `repr()` hides them.

LEDGER_STRIPE_API_KEY            secret API key (sk_live_..., sk_test_..., rk_...). Unset: Stripe
                                 is off and the billing routes answer 503 saying so.
LEDGER_STRIPE_WEBHOOK_SECRETS    webhook signing secret(s) (whsec_...), comma-separated; two
                                 during a rotation (old and new both accepted), at most
                                 WEBHOOK_SECRETS_MAX.
LEDGER_STRIPE_API_BASE           API base URL (default https://api.stripe.com; tests point it at
                                 localstripe on loopback).
LEDGER_STRIPE_TIMEOUT_SECONDS    per-request timeout (default 30).
LEDGER_STRIPE_NETWORK_RETRIES    retries of a request after a timeout, connection error or
                                 5xx, with the SDK's backoff, same idempotency key (default 2).
LEDGER_STRIPE_WEBHOOK_TOLERANCE_SECONDS  how far a webhook's signed timestamp may be from now,
                                 in the past or the future (default 300).
LEDGER_STRIPE_TOP_UP_LIMITS      per-currency top-up limits in whole units, `USD=5:10000,JPY=500:
                                 1500000`; a currency not listed uses TOP_UP_LIMITS_DEFAULT_UNITS.

Checkout and the customer portal (each URL absolute, https:// or loopback http; `{team_id}` in
it is replaced by the team's id). Unset: those routes answer 409 naming the missing variable.
LEDGER_STRIPE_CHECKOUT_SUCCESS_URL   where Checkout sends the customer after paying, e.g.
                                 https://ledger.example.com/dashboard/teams/{team_id}?checkout=done
LEDGER_STRIPE_CHECKOUT_CANCEL_URL    where Checkout's "back" link goes.
LEDGER_STRIPE_PORTAL_RETURN_URL      where the customer portal's "return" link goes.
LEDGER_STRIPE_CHECKOUT_LIFETIME_SECONDS  how long a Checkout Session stays open (Stripe allows
                                 1800 to 86400; default 3600).
LEDGER_STRIPE_REDIRECT_ORIGINS   the origins the dashboard's forms may be redirected to (its
                                 Content-Security-Policy form-action), space-separated; default
                                 https://checkout.stripe.com https://billing.stripe.com.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from adapters.runtime.settings import ConfigurationError
from domain.errors import InvalidInputError
from domain.money import NANOS_PER_UNIT, check_currency
from services.payments.checkout import (
    CHECKOUT_LIFETIME_SECONDS_DEFAULT,
    CHECKOUT_LIFETIME_SECONDS_MAX,
    CHECKOUT_LIFETIME_SECONDS_MIN,
    CheckoutLinks,
)
from services.payments.top_ups import TopUpLimits

DEFAULT_API_BASE = "https://api.stripe.com"
TIMEOUT_SECONDS_DEFAULT = 30
TIMEOUT_SECONDS_MAX = 120
NETWORK_RETRIES_DEFAULT = 2
NETWORK_RETRIES_MAX = 10
WEBHOOK_TOLERANCE_SECONDS_DEFAULT = 300
WEBHOOK_TOLERANCE_SECONDS_MAX = 3600
WEBHOOK_SECRETS_MAX = 2
SECRET_LENGTH_MAX = 500
# (minimum, maximum) top-up in whole units when a currency has no entry of its own. Stripe's own
# minimum charge is below 5 units in every currency we bill in except the ones listed below.
TOP_UP_LIMITS_DEFAULT_UNITS = (5, 10_000)
TOP_UP_LIMITS_BUILT_IN_UNITS: dict[str, tuple[int, int]] = {
    "JPY": (500, 1_500_000),
    "KRW": (5_000, 15_000_000),
}
API_KEY_PREFIXES = ("sk_", "rk_")
RETURN_URL_LENGTH_MAX = 2000
REDIRECT_ORIGINS_DEFAULT = ("https://checkout.stripe.com", "https://billing.stripe.com")
REDIRECT_ORIGINS_MAX = 10
LOOPBACK_PREFIXES = ("http://127.0.0.1", "http://localhost")
WEBHOOK_SECRET_PREFIX = "whsec_"


def _bounded_int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be a whole number from {low} to {high}, "
                                 f"got {raw!r}")
    return value


def parse_top_up_limits(raw: str, name: str = "LEDGER_STRIPE_TOP_UP_LIMITS"
                        ) -> dict[str, tuple[int, int]]:
    """`USD=5:10000,EUR=5:10000` -> {"USD": (5, 10000), ...} (whole units)."""
    limits: dict[str, tuple[int, int]] = {}
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        try:
            currency, bounds = part.split("=", 1)
            low_text, high_text = bounds.split(":", 1)
            low, high = int(low_text), int(high_text)
            check_currency(currency.strip())
        except (ValueError, InvalidInputError):
            raise ConfigurationError(f"{name} must look like USD=5:10000,JPY=500:1500000 "
                                     f"(currency=minimum:maximum in whole units), got "
                                     f"{part!r}") from None
        if not 0 < low <= high:
            raise ConfigurationError(f"{name}: {currency} needs 0 < minimum <= maximum")
        limits[currency.strip()] = (low, high)
    return limits


@dataclass(frozen=True)
class StripeSettings:
    api_key: str = field(repr=False)
    webhook_secrets: tuple[str, ...] = field(repr=False)
    api_base: str = DEFAULT_API_BASE
    timeout_seconds: int = TIMEOUT_SECONDS_DEFAULT
    network_retries: int = NETWORK_RETRIES_DEFAULT
    webhook_tolerance_seconds: int = WEBHOOK_TOLERANCE_SECONDS_DEFAULT
    top_up_limits_units: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    checkout_success_url: str | None = None
    checkout_cancel_url: str | None = None
    portal_return_url: str | None = None
    checkout_lifetime_seconds: int = CHECKOUT_LIFETIME_SECONDS_DEFAULT
    redirect_origins: tuple[str, ...] = REDIRECT_ORIGINS_DEFAULT

    def __post_init__(self) -> None:
        self._check_keys()
        self._check_checkout()

    def _check_checkout(self) -> None:
        for name, url in (("LEDGER_STRIPE_CHECKOUT_SUCCESS_URL", self.checkout_success_url),
                          ("LEDGER_STRIPE_CHECKOUT_CANCEL_URL", self.checkout_cancel_url),
                          ("LEDGER_STRIPE_PORTAL_RETURN_URL", self.portal_return_url)):
            if url is not None and (not url.startswith(("https://", *LOOPBACK_PREFIXES))
                                    or len(url) > RETURN_URL_LENGTH_MAX
                                    or not url.isprintable() or " " in url):
                raise ConfigurationError(f"{name} must be an absolute https:// URL (plain "
                                         f"http only on loopback) of at most "
                                         f"{RETURN_URL_LENGTH_MAX} characters")
        if not 1 <= len(self.redirect_origins) <= REDIRECT_ORIGINS_MAX or any(
                not o.startswith(("https://", *LOOPBACK_PREFIXES)) or not o.isprintable()
                or any(c in o for c in " ;,'") or o.count("/") != 2
                for o in self.redirect_origins):
            raise ConfigurationError(
                f"LEDGER_STRIPE_REDIRECT_ORIGINS must be 1 to {REDIRECT_ORIGINS_MAX} origins "
                "(https://host[:port], no path), separated by spaces")

    def checkout_links(self) -> CheckoutLinks | None:
        """The return URLs of Checkout and the portal; None while any is unset."""
        if self.checkout_success_url is None or self.checkout_cancel_url is None or \
                self.portal_return_url is None:
            return None
        return CheckoutLinks(success_url=self.checkout_success_url,
                             cancel_url=self.checkout_cancel_url,
                             portal_return_url=self.portal_return_url,
                             lifetime_seconds=self.checkout_lifetime_seconds)

    def _check_keys(self) -> None:
        if not self.api_key.startswith(API_KEY_PREFIXES) or len(self.api_key) > \
                SECRET_LENGTH_MAX:
            raise ConfigurationError("LEDGER_STRIPE_API_KEY must be a Stripe secret key "
                                     "(sk_... or rk_...)")
        if not 1 <= len(self.webhook_secrets) <= WEBHOOK_SECRETS_MAX or any(
                not s.startswith(WEBHOOK_SECRET_PREFIX) or len(s) > SECRET_LENGTH_MAX
                for s in self.webhook_secrets):
            raise ConfigurationError(
                f"LEDGER_STRIPE_WEBHOOK_SECRETS must be 1 to {WEBHOOK_SECRETS_MAX} webhook "
                "signing secrets (whsec_...), separated by a comma")
        if not self.api_base.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ConfigurationError("LEDGER_STRIPE_API_BASE must be an https:// URL (plain "
                                     "http only on loopback, for tests)")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StripeSettings | None:
        """The settings, or None when no API key is configured (Stripe is off)."""
        env = os.environ if env is None else env
        api_key = env.get("LEDGER_STRIPE_API_KEY") or ""
        if not api_key:
            return None
        secrets = tuple(s.strip() for s in (env.get("LEDGER_STRIPE_WEBHOOK_SECRETS") or "")
                        .split(",") if s.strip())
        return cls(
            api_key=api_key, webhook_secrets=secrets,
            api_base=(env.get("LEDGER_STRIPE_API_BASE") or DEFAULT_API_BASE).rstrip("/"),
            timeout_seconds=_bounded_int(env, "LEDGER_STRIPE_TIMEOUT_SECONDS",
                                         TIMEOUT_SECONDS_DEFAULT, 1, TIMEOUT_SECONDS_MAX),
            network_retries=_bounded_int(env, "LEDGER_STRIPE_NETWORK_RETRIES",
                                         NETWORK_RETRIES_DEFAULT, 0, NETWORK_RETRIES_MAX),
            webhook_tolerance_seconds=_bounded_int(
                env, "LEDGER_STRIPE_WEBHOOK_TOLERANCE_SECONDS",
                WEBHOOK_TOLERANCE_SECONDS_DEFAULT, 1, WEBHOOK_TOLERANCE_SECONDS_MAX),
            top_up_limits_units=parse_top_up_limits(
                env.get("LEDGER_STRIPE_TOP_UP_LIMITS") or ""),
            checkout_success_url=env.get("LEDGER_STRIPE_CHECKOUT_SUCCESS_URL") or None,
            checkout_cancel_url=env.get("LEDGER_STRIPE_CHECKOUT_CANCEL_URL") or None,
            portal_return_url=env.get("LEDGER_STRIPE_PORTAL_RETURN_URL") or None,
            checkout_lifetime_seconds=_bounded_int(
                env, "LEDGER_STRIPE_CHECKOUT_LIFETIME_SECONDS",
                CHECKOUT_LIFETIME_SECONDS_DEFAULT, CHECKOUT_LIFETIME_SECONDS_MIN,
                CHECKOUT_LIFETIME_SECONDS_MAX),
            redirect_origins=tuple((env.get("LEDGER_STRIPE_REDIRECT_ORIGINS") or "").split())
            or REDIRECT_ORIGINS_DEFAULT)

    def top_up_limits(self, currency: str) -> TopUpLimits:
        low, high = self.top_up_limits_units.get(
            currency, TOP_UP_LIMITS_BUILT_IN_UNITS.get(currency, TOP_UP_LIMITS_DEFAULT_UNITS))
        return TopUpLimits(minimum_nanos=low * NANOS_PER_UNIT, maximum_nanos=high * NANOS_PER_UNIT)

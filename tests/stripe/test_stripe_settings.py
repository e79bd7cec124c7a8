"""Stripe settings come from the environment, are checked with messages that name the variable,
and never show their secrets."""

from __future__ import annotations

import pytest

from adapters.runtime.settings import ConfigurationError
from adapters.stripe.settings import StripeSettings
from domain.money import NANOS_PER_UNIT

ENV = {"LEDGER_STRIPE_API_KEY": "sk_test_secretvalue",
       "LEDGER_STRIPE_WEBHOOK_SECRETS": "whsec_new, whsec_old"}


def test_no_api_key_means_stripe_is_off() -> None:
    assert StripeSettings.from_env({}) is None


def test_secrets_are_read_and_never_shown() -> None:
    settings = StripeSettings.from_env(ENV)
    assert settings is not None
    assert settings.webhook_secrets == ("whsec_new", "whsec_old")
    shown = repr(settings) + str(settings)
    assert "secretvalue" not in shown and "whsec_" not in shown


def test_top_up_limits_per_currency() -> None:
    settings = StripeSettings.from_env({**ENV, "LEDGER_STRIPE_TOP_UP_LIMITS": "USD=10:500"})
    assert settings is not None
    assert settings.top_up_limits("USD").minimum_nanos == 10 * NANOS_PER_UNIT
    assert settings.top_up_limits("USD").maximum_nanos == 500 * NANOS_PER_UNIT
    assert settings.top_up_limits("JPY").minimum_nanos == 500 * NANOS_PER_UNIT
    assert settings.top_up_limits("EUR").minimum_nanos == 5 * NANOS_PER_UNIT


@pytest.mark.parametrize(("extra", "named"), [
    ({"LEDGER_STRIPE_API_KEY": "pk_test_public"}, "LEDGER_STRIPE_API_KEY"),
    ({"LEDGER_STRIPE_WEBHOOK_SECRETS": ""}, "LEDGER_STRIPE_WEBHOOK_SECRETS"),
    ({"LEDGER_STRIPE_WEBHOOK_SECRETS": "whsec_a,whsec_b,whsec_c"},
     "LEDGER_STRIPE_WEBHOOK_SECRETS"),
    ({"LEDGER_STRIPE_TIMEOUT_SECONDS": "0"}, "LEDGER_STRIPE_TIMEOUT_SECONDS"),
    ({"LEDGER_STRIPE_NETWORK_RETRIES": "many"}, "LEDGER_STRIPE_NETWORK_RETRIES"),
    ({"LEDGER_STRIPE_API_BASE": "http://stripe.example"}, "LEDGER_STRIPE_API_BASE"),
    ({"LEDGER_STRIPE_TOP_UP_LIMITS": "USD=9:1"}, "LEDGER_STRIPE_TOP_UP_LIMITS"),
    ({"LEDGER_STRIPE_TOP_UP_LIMITS": "XYZ=1:9"}, "LEDGER_STRIPE_TOP_UP_LIMITS"),
])
def test_bad_settings_name_the_variable(extra: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named) as raised:
        StripeSettings.from_env({**ENV, **extra})
    assert "secretvalue" not in str(raised.value)


CHECKOUT_ENV = {**ENV,
                "LEDGER_STRIPE_CHECKOUT_SUCCESS_URL": "https://l.example/t/{team_id}?paid=1",
                "LEDGER_STRIPE_CHECKOUT_CANCEL_URL": "https://l.example/t/{team_id}",
                "LEDGER_STRIPE_PORTAL_RETURN_URL": "https://l.example/t/{team_id}"}


def test_checkout_links_need_all_three_urls() -> None:
    partial = StripeSettings.from_env({**CHECKOUT_ENV, "LEDGER_STRIPE_PORTAL_RETURN_URL": ""})
    assert partial is not None and partial.checkout_links() is None
    settings = StripeSettings.from_env({**CHECKOUT_ENV,
                                        "LEDGER_STRIPE_CHECKOUT_LIFETIME_SECONDS": "1800"})
    assert settings is not None
    links = settings.checkout_links()
    assert links is not None and links.lifetime_seconds == 1800
    team = "6f1c1b7e-8a84-4c2a-9a55-0d7b1f0f2a11"
    assert links.for_team(links.success_url, team) == f"https://l.example/t/{team}?paid=1"
    assert settings.redirect_origins == ("https://checkout.stripe.com",
                                         "https://billing.stripe.com")


@pytest.mark.parametrize(("extra", "named"), [
    ({"LEDGER_STRIPE_CHECKOUT_SUCCESS_URL": "http://l.example/"},
     "LEDGER_STRIPE_CHECKOUT_SUCCESS_URL"),
    ({"LEDGER_STRIPE_PORTAL_RETURN_URL": "javascript:x"}, "LEDGER_STRIPE_PORTAL_RETURN_URL"),
    ({"LEDGER_STRIPE_CHECKOUT_LIFETIME_SECONDS": "600"},
     "LEDGER_STRIPE_CHECKOUT_LIFETIME_SECONDS"),
    ({"LEDGER_STRIPE_CHECKOUT_LIFETIME_SECONDS": "90000"},
     "LEDGER_STRIPE_CHECKOUT_LIFETIME_SECONDS"),
    ({"LEDGER_STRIPE_REDIRECT_ORIGINS": "https://checkout.stripe.com/path"},
     "LEDGER_STRIPE_REDIRECT_ORIGINS"),
    ({"LEDGER_STRIPE_REDIRECT_ORIGINS": "https://x.example;script-src"},
     "LEDGER_STRIPE_REDIRECT_ORIGINS"),
])
def test_bad_checkout_settings_name_the_variable(extra: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        StripeSettings.from_env({**CHECKOUT_ENV, **extra})

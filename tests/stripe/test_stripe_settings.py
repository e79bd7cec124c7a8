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

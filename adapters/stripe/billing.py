"""One place that wires Stripe for a running ledger: settings, SDK client, gateway, use cases.

The HTTP app keeps one `StripeBilling` on `app.state.stripe_billing`; it is made from the
environment on first use (`for_ledger`), or set by whoever builds the app (tests pass a client
pointed at localstripe or an SDK HTTP double).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import stripe

from adapters.runtime.settings import ConfigurationError
from adapters.stripe.checkout_gateway import StripeCheckoutGateway
from adapters.stripe.gateway import StripeGateway, make_client
from adapters.stripe.invoices import StripeInvoices
from adapters.stripe.settings import StripeSettings
from services.invoicing.collection import InvoiceCollection
from services.ledger import Ledger
from services.payments.checkout import Checkout
from services.payments.top_ups import TopUps


@dataclass
class StripeBilling:
    settings: StripeSettings
    gateway: StripeGateway
    top_ups: TopUps
    invoices: InvoiceCollection
    # Checkout and the portal; None while their return URLs are not configured.
    checkout_or_none: Checkout | None = field(default=None)

    @classmethod
    def create(cls, ledger: Ledger, settings: StripeSettings,
               http_client: stripe.HTTPClient | None = None) -> StripeBilling:
        client = make_client(settings, http_client)
        gateway = StripeGateway(client)
        top_ups = TopUps(ledger, gateway, settings.top_up_limits)
        links = settings.checkout_links()
        checkout = None if links is None else \
            Checkout(top_ups, StripeCheckoutGateway(client), links)
        return cls(settings, gateway, top_ups,
                   InvoiceCollection(ledger, StripeInvoices(client), top_ups.ensure_customer),
                   checkout)

    @property
    def checkout(self) -> Checkout:
        """Checkout and the portal, or a `ConfigurationError` that names what to set."""
        if self.checkout_or_none is None:
            raise ConfigurationError(
                "Stripe Checkout and the customer portal need LEDGER_STRIPE_CHECKOUT_SUCCESS_URL,"
                " LEDGER_STRIPE_CHECKOUT_CANCEL_URL and LEDGER_STRIPE_PORTAL_RETURN_URL")
        return self.checkout_or_none

    @classmethod
    def from_env(cls, ledger: Ledger) -> StripeBilling | None:
        """Stripe as configured by LEDGER_STRIPE_*; None when no API key is set."""
        settings = StripeSettings.from_env()
        return None if settings is None else cls.create(ledger, settings)

"""Money in through Stripe: customers, top-ups, and what Stripe's webhooks report.

The use cases here talk to Stripe only through the `PaymentGateway` port (`port.py`); the real
adapter is `adapters.stripe.gateway.StripeGateway`."""

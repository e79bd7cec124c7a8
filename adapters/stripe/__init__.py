"""Stripe: the SDK client, the payment-port adapter, webhook checks (issue 12, first slice)."""

"""Monthly invoices from priced usage, and their collection through Stripe."""

"""Reads from the read models, one module per subject, served under one router: the balance and
"may this account spend?" (`routes_balance`), usage windows and the daily series
(`routes_usage_windows`), the audit trail (`routes_audit`), top-ups and invoices
(`routes_billing_lists`).

Every answer carries `position` (the log position the read models reflect), `head_position` and
`lag_events`, so a caller knows how fresh it is."""

from __future__ import annotations

from fastapi import APIRouter

from adapters.http import routes_audit, routes_balance, routes_billing_lists, routes_usage_windows

router = APIRouter()
# The lean reads first: routes are matched in order.
for _module in (routes_balance, routes_usage_windows, routes_audit, routes_billing_lists):
    router.include_router(_module.router)

"""The team page's read-only auto-recharge block: its state, settings and failures, for those who
may view billing (VIEW_BILLING). Read from the team's `AutoRechargePolicy` itself (no read model
holds it); changing it is the API's `PUT /v1/teams/{team_id}/auto-recharge`."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from adapters.http.dashboard.money_display import exact_money, format_money
from adapters.http.dashboard.team_page import Viewer
from domain.auto_recharge import FAILURES_IN_A_ROW_MAX, AutoRechargePolicy, auto_recharge_id_for
from domain.roles import Action
from domain.team import Team
from services.ledger import Ledger

STATE_LABELS = {
    "disabled": "Off", "armed": "Armed", "charging": "Charging",
    "backing_off": "Backing off after a failed charge",
    "waiting_for_recovery": "Recharged; waiting for the balance to rise",
    "stopped": "Stopped after failed charges: an owner or billing member resumes it",
}

# The stylesheet's badge colours: ok (green), low (amber), exhausted (red); "off" has none.
STATE_BADGES = {"armed": "ok", "charging": "low", "backing_off": "low",
                "waiting_for_recovery": "low", "stopped": "exhausted", "disabled": "off"}


def _money(amount_nanos: int, currency: str) -> dict[str, str]:
    return {"text": format_money(amount_nanos, currency),
            "exact": exact_money(amount_nanos, currency)}


def auto_recharge_context(ledger: Ledger, team: Team, viewer: Viewer,
                          now: datetime) -> dict[str, Any]:
    """`{"auto_recharge": ...}` for the `_auto_recharge.html` partial (None: nothing to show)."""
    policy_id = auto_recharge_id_for(team.id)
    if not viewer.may(Action.VIEW_BILLING) or not ledger.exists(policy_id):
        return {"auto_recharge": None}
    policy: AutoRechargePolicy = ledger.repository.get(policy_id)
    state = policy.state(now).value
    c = policy.currency
    today = now.astimezone(ZoneInfo(team.timezone)).date()
    return {"auto_recharge": {
        "state": state, "state_label": STATE_LABELS.get(state, state),
        "badge": STATE_BADGES.get(state, "off"),
        "threshold": _money(policy.threshold_nanos, c), "amount": _money(policy.amount_nanos, c),
        "daily_cap": _money(policy.daily_cap_nanos, c),
        "started_today": _money(policy.started_on(today), c),
        "crossings": policy.crossings, "failures": policy.failures_in_row,
        "failures_max": FAILURES_IN_A_ROW_MAX, "last_failure": policy.last_failure,
        "retry_not_before": policy.retry_not_before.isoformat(timespec="seconds")
        if state == "backing_off" and policy.retry_not_before else None}}

"""What the dashboard pages show, gathered from the read models and the ledger's aggregates.

Numbers come from the projections' read models (`PostgresViewStore.balance`, which already puts
together balance, windows, by-account and by-model sums and the daily series from one snapshot)
and are only formatted here. A member sees only the accounts they hold: their sums are folded
from the same daily buckets by the projections' own `report_from_buckets`. Who may see and do
what is `domain.roles` (the service refuses anything else anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from adapters.http.dashboard.daily_chart import days_for_chart, render_chart
from adapters.http.dashboard.money_display import (
    exact_money,
    format_cost,
    format_count,
    format_money,
    format_rate,
    format_tokens,
)
from domain.money import minor_units_to_nanos
from domain.roles import Action, Role, may
from projections.views import AccountView, TeamView
from projections.windows import (
    WINDOW_NAMES,
    BucketKey,
    UsageTotals,
    local_date,
    report_from_buckets,
)

WINDOW_LABELS = {"today": "Today", "week": "This week", "month": "This month", "total": "Total"}


class ViewReader(Protocol):
    """The read-model queries the dashboard uses (PostgresViewStore has them)."""

    def balance(self, team_id: UUID, now: datetime) -> dict[str, Any] | None: ...

    def team(self, team_id: UUID) -> TeamView | None: ...

    def accounts_of(self, team_id: UUID) -> list[AccountView]: ...

    def usage_buckets(self, team: TeamView, now: datetime) -> dict[BucketKey, UsageTotals]: ...


@dataclass(frozen=True)
class Viewer:
    """Who looks at a team's page, with their role now (operators read as auditors)."""

    user_id: str
    role: Role

    def may(self, action: Action) -> bool:
        return may(self.role, action)

    @property
    def sees_billing(self) -> bool:
        return self.may(Action.VIEW_BILLING)

    @property
    def sees_audit(self) -> bool:
        return self.may(Action.VIEW_AUDIT)

    @property
    def sees_all_accounts(self) -> bool:
        return self.role != Role.MEMBER

    @property
    def sees_admin(self) -> bool:
        return self.role != Role.MEMBER


def parse_window(value: str | None) -> str:
    return value if value in WINDOW_NAMES else "today"


def usage_row(label: str, sums: dict[str, Any], currency: str, **extra: Any) -> dict[str, Any]:
    return {
        "label": label,
        "requests": format_count(sums["requests"]),
        "success_rate": format_rate(sums["successes"], sums["requests"]),
        "input_tokens": format_tokens(sums["input_tokens"]),
        "cached_input_tokens": format_tokens(sums["cached_input_tokens"]),
        "output_tokens": format_tokens(sums["output_tokens"]),
        "cost": format_cost(sums["cost_nanos"], currency),
        "cost_exact": exact_money(sums["cost_nanos"], currency),
        "cost_nanos": sums["cost_nanos"],
        **extra,
    }


def balance_cards(balance: dict[str, Any]) -> dict[str, Any]:
    currency = balance["currency"]
    money = {name: {"text": format_money(balance[f"{name}_nanos"], currency),
                    "exact": exact_money(balance[f"{name}_nanos"], currency),
                    "nanos": str(balance[f"{name}_nanos"])}
             for name in ("balance", "available", "credit_limit", "low_balance_threshold")}
    if balance["suspended"]:
        state, label = "suspended", "Team suspended"
    elif balance["available_nanos"] <= 0:
        state, label = "exhausted", "No available balance: requests are refused"
    elif balance["low_balance"]:
        state, label = "low", "Low balance"
    else:
        state, label = "ok", "Balance healthy"
    return {**money, "state": state, "state_label": label, "currency": currency}


def team_page(reader: ViewReader, team_id: UUID, viewer: Viewer, window: str,
              now: datetime, held_account_ids: set[str] | None = None) -> dict[str, Any] | None:
    """The dashboard's context for one team and window; None if the read models lack the team.

    `held_account_ids` limits the usage to those accounts (a member's own); None shows all.
    """
    answer = reader.balance(team_id, now)
    if answer is None:
        return None
    balance = answer["balance"]
    currency = balance["currency"]
    names = {a["account_id"]: a for a in answer["accounts"]}
    usage = answer["usage"]
    if held_account_ids is not None:
        usage = _usage_of_accounts(reader, team_id, now, held_account_ids)
        names = {k: v for k, v in names.items() if k in held_account_ids}
    totals = usage["windows"][window]
    by_account = [usage_row(names.get(account_id, {}).get("name", account_id), sums, currency,
                            status=names.get(account_id, {}).get("status", ""))
                  for account_id, sums in usage["by_account"][window].items()
                  if held_account_ids is None or account_id in held_account_ids]
    by_model = [usage_row(model, sums, currency)
                for model, sums in usage["by_model"][window].items()]
    for rows in (by_account, by_model):
        rows.sort(key=lambda row: (-row["cost_nanos"], row["label"]))
    today = local_date(now, balance["timezone"])
    return {
        "team": balance,
        "cards": balance_cards(balance) if viewer.sees_billing else None,
        "window": window,
        "windows": [(name, WINDOW_LABELS[name]) for name in WINDOW_NAMES],
        "totals": usage_row(WINDOW_LABELS[window], totals, currency),
        "by_account": by_account,
        "by_model": by_model,
        "chart": render_chart(days_for_chart(usage["daily"], today, window), currency),
        "top_ups": [_top_up_row(t, currency) for t in answer["top_ups"]] if viewer.sees_billing
        else [],
        "invoices": [_invoice_row(i) for i in answer["invoices"]] if viewer.sees_billing else [],
        "freshness": {"position": answer["position"], "head": answer["head_position"],
                      "lag": answer["lag_events"]},
        "as_of": now,
    }


def _usage_of_accounts(reader: ViewReader, team_id: UUID, now: datetime,
                       account_ids: set[str]) -> dict[str, Any]:
    team = reader.team(team_id)
    assert team is not None, "balance() found the team a moment ago"
    buckets = {key: sums for key, sums in reader.usage_buckets(team, now).items()
               if key[0] in account_ids}
    return report_from_buckets(buckets, now, team.timezone).as_dict()


def _top_up_row(row: dict[str, Any], currency: str) -> dict[str, Any]:
    return {"id": row["top_up_id"], "amount": format_money(row["amount_nanos"], currency),
            "refunded": format_money(row["refunded_nanos"], currency)
            if row["refunded_nanos"] else "", "credited_at": row["credited_at"]}


def _invoice_row(row: dict[str, Any]) -> dict[str, Any]:
    currency = row["currency"]
    return {"id": str(row["invoice_id"]), "number": row["number"] or "draft",
            "period": f"{row['period_start']} to "
            f"{row['period_end']}", "status": row["status"],
            "subtotal": format_money(row["subtotal_nanos"], currency),
            "total": format_money(minor_units_to_nanos(row["total_minor"], currency), currency)
            if row["total_minor"] is not None else ""}

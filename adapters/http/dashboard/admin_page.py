"""The admin page's context: members and roles, the account pool with packages and spend, limits.

Members, holders and package assignments are read from the ledger's aggregates (the read models
do not keep them); status and spend come from the read models like everywhere else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from adapters.http.dashboard.admin_actions import ADMIN_ACTIONS
from adapters.http.dashboard.money_display import format_cost, format_money
from adapters.http.dashboard.team_page import Viewer
from domain.account import Account
from domain.roles import Role
from domain.team import Team
from services.ledger import Ledger

# The admin page lists at most this many accounts (each is loaded from the event store).
ACCOUNTS_LISTED_MAX = 500


def current_package(account: Account, now: datetime) -> dict[str, Any] | None:
    """The assignment in force now, else the next one scheduled (None if there is none)."""
    in_force = None
    for start, assignment in zip(account.assignment_starts, account.assignments, strict=True):
        if start <= now:
            in_force = assignment
        elif in_force is None:
            return {**assignment, "scheduled": True}
    return in_force


def admin_context(ledger: Ledger, team: Team, answer: dict[str, Any], viewer: Viewer,
                  now: datetime) -> dict[str, Any]:
    currency = team.currency
    spent = {w: answer["usage"]["by_account"][w] for w in ("today", "month")}
    listed = {a["account_id"]: a for a in answer["accounts"]}
    accounts, packages = [], {}
    for account_id in team.account_ids[:ACCOUNTS_LISTED_MAX]:
        account = ledger.get_account(account_id)
        package = current_package(account, now)
        for assignment in account.assignments:
            packages[str(assignment["package_id"])] = assignment["package_name"]
        key = str(account_id)
        accounts.append({
            "id": key, "key": account.account_key, "name": account.name,
            "kind": account.kind.value, "holder": account.holder_user_id or "",
            "status": listed.get(key, {}).get("status", account.status.value),
            "package": package,
            "today": format_cost(spent["today"].get(key, {}).get("cost_nanos", 0), currency),
            "month": format_cost(spent["month"].get(key, {}).get("cost_nanos", 0), currency),
        })
    allowed = {name: viewer.may(spec.action) for name, spec in ADMIN_ACTIONS.items()}
    return {
        "members": sorted(({"user_id": user, "role": role.value}
                           for user, role in team.members.items()),
                          key=lambda m: (list(Role).index(Role(m["role"])), m["user_id"])),
        "roles": [r.value for r in Role],
        "accounts": accounts,
        "accounts_truncated": len(team.account_ids) > ACCOUNTS_LISTED_MAX,
        "packages": sorted(packages.items(), key=lambda p: p[1]),
        "allowed": allowed,
        "limits": {"credit_limit": format_money(team.credit_limit_nanos, currency),
                   "threshold": format_money(team.low_balance_threshold_nanos, currency)},
        "team_id": UUID(str(team.id)),
        "team_suspended": team.suspended,
    }

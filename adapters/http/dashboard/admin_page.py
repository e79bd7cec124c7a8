"""The admin page's context: members and roles, the account pool with packages and spend, limits.

Members and roles come from the team aggregate (cached by version for authorization anyway);
the accounts with their holders, kinds, status and package assignments, and the spend, from the
read models (version 5 keeps holders and assignments), so the page loads no Account aggregate.
An account opened a moment ago appears once the projections have folded it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from adapters.http.dashboard.admin_actions import ADMIN_ACTIONS
from adapters.http.dashboard.money_display import format_cost, format_money
from adapters.http.dashboard.team_page import Viewer
from domain.roles import Role
from domain.team import Team
from projections.views import AccountView, PackageAssignmentView

# The admin page lists at most this many accounts.
ACCOUNTS_LISTED_MAX = 500


def current_package(assignments: Sequence[PackageAssignmentView], now: datetime
                    ) -> dict[str, Any] | None:
    """The assignment in force now, else the next one scheduled (None if there is none);
    `assignments` are one account's, by start."""
    in_force = None
    for assignment in assignments:
        shown = {"package_id": assignment.package_id,
                 "package_version": assignment.package_version,
                 "package_name": assignment.package_name,
                 "effective_from": assignment.effective_from.astimezone(UTC)}
        if assignment.effective_from <= now:
            in_force = shown
        elif in_force is None:
            return {**shown, "scheduled": True}
    return in_force


def admin_context(team: Team, accounts_viewed: Sequence[AccountView],
                  assignments: Sequence[PackageAssignmentView], answer: dict[str, Any],
                  viewer: Viewer, now: datetime) -> dict[str, Any]:
    """`accounts_viewed` and `assignments`: the team's, from the read models."""
    currency = team.currency
    spent = {w: answer["usage"]["by_account"][w] for w in ("today", "month")}
    by_id = {a.account_id: a for a in accounts_viewed}
    assigned: dict[UUID, list[PackageAssignmentView]] = {}
    packages = {}
    for assignment in sorted(assignments, key=lambda a: a.effective_from):
        assigned.setdefault(assignment.account_id, []).append(assignment)
        packages[str(assignment.package_id)] = assignment.package_name
    accounts = []
    for account_id in team.account_ids[:ACCOUNTS_LISTED_MAX]:
        account = by_id.get(account_id)
        if account is None:  # not folded yet
            continue
        key = str(account_id)
        accounts.append({
            "id": key, "key": account.account_key, "name": account.name,
            "kind": account.kind, "holder": account.holder_user_id or "",
            "status": account.status,
            "package": current_package(assigned.get(account_id, []), now),
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

"""Every API route with every kind of caller, allowed and denied, generated from the role matrix.

Each route names what it needs: an `Action` of `domain/roles.py` (the matrix says which roles may),
any member of the team (`READ`), an operator, or a service scope. For each caller the expected
answer follows from that and the matrix alone: allowed means anything but 401/403/404 (a 409 is
fine: the state may not allow it twice, but the caller got past authorization); a role the
matrix refuses gets 403; someone outside the team gets 404, exactly as for a team that does not
exist. A last test fails if a route is added without a row here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from adapters.runtime.projection_process import open_runner
from domain.roles import Action, Role, may
from services.actor import Actor
from tests.http.conftest import Api
from tests.http.support import make_team, user_id

READ = "read"  # any member of the team; operators read every team
OPERATOR = "operator"
ANY_PRINCIPAL = "any"
LIST = "list"  # operators and users (their own teams); not services
PUBLISH = "usage:publish"
AUTHORIZATION = "authorization:read"

_counter = itertools.count()


def unique() -> int:
    return next(_counter)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    needs: Action | str
    body: Callable[[dict[str, str]], Any] | None = None
    headers: Callable[[], dict[str, str]] | None = None


def future(ids: dict[str, str]) -> str:
    return (datetime.now(UTC) + timedelta(days=1, seconds=unique())).isoformat()


TERMS = {"request_nanos": "1", "input_token_nanos": "1", "cached_input_token_nanos": "0",
         "output_token_nanos": "2"}

ROUTES = [
    Route("GET", "/v1/me", ANY_PRINCIPAL),
    Route("GET", "/v1/teams", LIST),
    Route("POST", "/v1/teams", OPERATOR, lambda ids: {
        "team_key": f"t{unique()}", "name": "New", "currency": "USD", "timezone": "UTC"}),
    Route("GET", "/v1/teams/{team}", READ),
    Route("GET", "/v1/teams/{team}/members", READ),
    Route("POST", "/v1/teams/{team}/members", Action.ADD_MEMBER,
          lambda ids: {"user_id": f"new-{unique()}", "role": "member"}),
    Route("POST", "/v1/teams/{team}/members/{target}/role", Action.CHANGE_MEMBER_ROLE,
          lambda ids: {"role": "auditor"}),
    Route("DELETE", "/v1/teams/{team}/members/{target2}", Action.REMOVE_MEMBER),
    Route("POST", "/v1/teams/{team}/suspend", Action.SUSPEND_TEAM,
          lambda ids: {"reason": "unpaid"}),
    Route("POST", "/v1/teams/{team}/reactivate", Action.REACTIVATE_TEAM),
    Route("POST", "/v1/teams/{team}/credit-limit", Action.SET_CREDIT_LIMIT,
          lambda ids: {"credit_limit_nanos": "1000000000"}),
    Route("POST", "/v1/teams/{team}/low-balance-threshold", Action.SET_LOW_BALANCE_THRESHOLD,
          lambda ids: {"threshold_nanos": "5000000000"}),
    Route("POST", "/v1/teams/{team}/adjustments", Action.RECORD_ADJUSTMENT,
          lambda ids: {"amount_nanos": "-25", "reason": "correction"},
          lambda: {"Idempotency-Key": f"adj-{unique()}"}),
    Route("GET", "/v1/teams/{team}/accounts", READ),
    Route("POST", "/v1/teams/{team}/accounts", Action.OPEN_ACCOUNT,
          lambda ids: {"account_key": f"acct-{unique()}", "name": "Seat"}),
    Route("GET", "/v1/accounts/{account}", READ),
    Route("POST", "/v1/accounts/{account}/holder", Action.OPEN_ACCOUNT,
          lambda ids: {"user_id": ids["member_user"]}),
    Route("POST", "/v1/accounts/{account}/package", Action.ASSIGN_PACKAGE,
          lambda ids: {"package_id": ids["package"], "effective_from": future(ids)}),
    Route("POST", "/v1/accounts/{account}/suspend", Action.SUSPEND_ACCOUNT,
          lambda ids: {"reason": "abuse"}),
    Route("POST", "/v1/accounts/{account}/reactivate", Action.REACTIVATE_ACCOUNT),
    Route("POST", "/v1/accounts/{account}/close", Action.CLOSE_ACCOUNT,
          lambda ids: {"reason": "left"}),
    Route("GET", "/v1/accounts/{account}/authorization", AUTHORIZATION),
    Route("POST", "/v1/packages", OPERATOR, lambda ids: {
        "package_key": f"p{unique()}", "name": "P", "currency": "USD", "terms": TERMS}),
    Route("POST", "/v1/packages/{package}/versions", OPERATOR, lambda ids: {"terms": TERMS}),
    Route("GET", "/v1/packages/{package}", OPERATOR),
    Route("GET", "/v1/teams/{team}/packages", READ),
    Route("GET", "/v1/teams/{team}/balance", Action.VIEW_BILLING),
    Route("GET", "/v1/teams/{team}/usage?window=week", READ),
    Route("GET", "/v1/teams/{team}/usage/daily?from=2026-01-01&to=2026-12-31", READ),
    Route("GET", "/v1/teams/{team}/audit", Action.VIEW_AUDIT),
    Route("GET", "/v1/teams/{team}/audit/export?format=jsonl", Action.VIEW_AUDIT),
    Route("GET", "/v1/teams/{team}/top-ups", Action.VIEW_BILLING),
    Route("POST", "/v1/teams/{team}/top-ups", Action.TOP_UP, lambda ids: {
        "amount_nanos": "20000000000", "payment_method_id": "pm_card_visa"}),
    Route("POST", "/v1/teams/{team}/billing-portal", Action.OPEN_BILLING_PORTAL),
    Route("GET", "/v1/teams/{team}/payments", Action.VIEW_BILLING),
    Route("GET", "/v1/teams/{team}/auto-recharge", Action.VIEW_BILLING),
    Route("PUT", "/v1/teams/{team}/auto-recharge", Action.LINK_STRIPE_CUSTOMER, lambda ids: {
        "threshold_nanos": "20000000000", "amount_nanos": "20000000000",
        "daily_cap_nanos": "40000000000", "payment_method_id": "pm_card_visa"}),
    Route("POST", "/v1/teams/{team}/auto-recharge/resume", Action.LINK_STRIPE_CUSTOMER),
    Route("GET", "/v1/teams/{team}/invoices", Action.VIEW_BILLING),
    # Invoices (routes_invoices): the hand-made invoice of `ids` totals zero, so finalizing it
    # needs no Stripe (prepaid); a second void or an over-credit is a 409 (past authorization).
    Route("POST", "/v1/teams/{team}/invoices", Action.MANAGE_INVOICES,
          lambda ids: {"month": "2026-01"}),
    Route("GET", "/v1/teams/{team}/invoices/{invoice}", Action.VIEW_BILLING),
    Route("POST", "/v1/teams/{team}/invoices/{invoice}/finalize", Action.MANAGE_INVOICES),
    Route("POST", "/v1/teams/{team}/invoices/{invoice}/void", Action.MANAGE_INVOICES,
          lambda ids: {"reason": "wrong"}),
    Route("POST", "/v1/teams/{team}/invoices/{invoice}/credit-notes", Action.MANAGE_INVOICES,
          lambda ids: {"amount_nanos": "10000000", "reason": "goodwill"}),
    Route("POST", "/v1/usage", PUBLISH, lambda ids: {"records": [{
        "usage_id": f"u{unique()}", "account_id": ids["account"],
        "occurred_at": datetime.now(UTC).isoformat(), "model": "m", "success": True,
        "input_tokens": 1, "output_tokens": 1}]}),
    Route("POST", "/v1/tokens", OPERATOR,
          lambda ids: {"kind": "user", "subject": f"s{unique()}", "name": "n"}),
    Route("GET", "/v1/tokens", OPERATOR),
    Route("POST", "/v1/tokens/{token}/revoke", OPERATOR, lambda ids: {"reason": "rotate"}),
]

# Callers: the five roles (the owner is the operator who registered the team), an operator who
# is not in the team, a user of another team, and a service with both scopes.
CALLERS = [r.value for r in Role] + ["stranger_operator", "outsider", "service"]


def expected(route: Route, caller: str) -> str:
    """'allowed', 'forbidden' (403) or 'hidden' (404), from the matrix and the route's need."""
    needs = route.needs
    if needs == ANY_PRINCIPAL:
        return "allowed"
    if needs == LIST:
        return "forbidden" if caller == "service" else "allowed"
    if needs == OPERATOR:
        return "allowed" if caller in ("owner", "stranger_operator") else "forbidden"
    if needs == PUBLISH:
        return "allowed" if caller in ("owner", "stranger_operator", "service") else "forbidden"
    if needs == AUTHORIZATION and caller == "service":
        return "allowed"
    if caller in ("outsider", "service"):
        return "hidden"
    role = Role.AUDITOR if caller == "stranger_operator" else Role(caller)
    if needs in (READ, AUTHORIZATION):
        return "allowed"
    assert isinstance(needs, Action)
    return "allowed" if may(role, needs) else "forbidden"


def test_every_api_route_has_a_row_in_this_table(api: Api) -> None:
    declared = {(r.method, r.path.split("?")[0]) for r in ROUTES}
    served = set()
    for path, operations in api.client.get("/openapi.json").json()["paths"].items():
        for method in operations:
            if path.startswith("/v1/"):
                served.add((method.upper(), path.replace("{team_id}", "{team}")
                            .replace("{account_id}", "{account}")
                            .replace("{package_id}", "{package}")
                            .replace("{token_id}", "{token}")
                            .replace("{user_id}", "{target}")
                            .replace("{invoice_id}", "{invoice}")))
    normalized = {(m, p.replace("{target2}", "{target}")) for m, p in declared}
    assert served == normalized


def test_every_route_answers_every_caller_as_the_role_matrix_says(api: Api) -> None:
    """One team serves every route (a second request of a command may meet a state that no
    longer allows it, a 409, which still shows the caller was let through)."""
    team = make_team(api, "home")
    c, op = api.client, api.as_operator()
    away = c.post("/v1/teams", headers=op, json={"team_key": "away", "name": "Away",
                                                 "currency": "USD", "timezone": "UTC"})
    assert c.post(f"/v1/teams/{away.json()['team_id']}/members", headers=op,
                  json={"user_id": "away-admin", "role": "admin"}).status_code == 200
    for target in ("target", "target2"):
        assert c.post(f"/v1/teams/{team.team_id}/members", headers=op,
                      json={"user_id": target, "role": "member"}).status_code == 200
    spare = c.post("/v1/tokens", headers=op, json={"kind": "user", "subject": "spare",
                                                   "name": "to revoke"}).json()["token_id"]
    tokens = dict(team.tokens)
    tokens["stranger_operator"] = api.token_for("operator", "stranger")
    tokens["outsider"] = api.token_for("user", "away-admin")
    tokens["service"] = api.token_for("service", "gateway", [PUBLISH, AUTHORIZATION])
    ids = {"team": team.team_id, "account": team.member_account, "package": team.package_id,
           "token": spare, "target": "target", "target2": "target2",
           "member_user": user_id("home", "member"),
           "invoice": str(api.ledger.draft_invoice(
               UUID(team.team_id), period_start="2025-01-01", period_end="2025-02-01",
               lines=[], actor=Actor.system("test")))}
    failures = []
    for route in ROUTES:
        failures += check_route(api, route, ids, tokens)
    assert not failures, "\n".join(failures)


def check_route(api: Api, route: Route, ids: dict[str, str], tokens: dict[str, str]
                ) -> list[str]:
    path = route.path.format(**ids)
    failures = []
    for caller in CALLERS:
        headers = {"Authorization": f"Bearer {tokens[caller]}"}
        if route.headers:
            headers.update(route.headers())
        body = route.body(ids) if route.body else None
        answer = api.client.request(route.method, path, headers=headers, json=body)
        want = expected(route, caller)
        ok = {"allowed": answer.status_code < 400 or answer.status_code == 409,
              "forbidden": answer.status_code == 403,
              "hidden": answer.status_code == 404}[want]
        if not ok:
            failures.append(f"{route.method} {route.path} as {caller}: expected {want}, got "
                            f"{answer.status_code} {answer.text[:200]}")
        if answer.status_code >= 400 and \
                answer.headers["content-type"] != "application/problem+json":
            failures.append(f"{route.method} {route.path} as {caller}: error is not a problem")
    return failures


def test_a_member_sees_only_the_accounts_they_hold(api: Api) -> None:
    team = make_team(api, "pool")
    member = api.headers(team.tokens["member"])
    c = api.client
    assert c.get(f"/v1/accounts/{team.member_account}", headers=member).status_code == 200
    for path in (f"/v1/accounts/{team.other_account}",
                 f"/v1/accounts/{team.other_account}/authorization",
                 f"/v1/teams/{team.team_id}/usage?account_id={team.other_account}"):
        assert c.get(path, headers=member).status_code == 404, path
    with open_runner(api.database_url) as runner:  # the pool is listed from the read models
        runner.catch_up()
    listed = c.get(f"/v1/teams/{team.team_id}/accounts", headers=member).json()["accounts"]
    assert [a["account_id"] for a in listed] == [team.member_account]


def test_another_teams_ids_are_indistinguishable_from_ids_that_do_not_exist(api: Api) -> None:
    home = make_team(api, "home")
    away = make_team(api, "away", package_id=home.package_id)
    intruder = api.headers(home.tokens["admin"])
    missing_team, missing_account = "00000000-0000-4000-8000-000000000000", \
        "00000000-0000-4000-8000-000000000001"
    pairs = [(f"/v1/teams/{away.team_id}", f"/v1/teams/{missing_team}"),
             (f"/v1/teams/{away.team_id}/balance", f"/v1/teams/{missing_team}/balance"),
             (f"/v1/teams/{away.team_id}/audit", f"/v1/teams/{missing_team}/audit"),
             (f"/v1/accounts/{away.member_account}", f"/v1/accounts/{missing_account}"),
             (f"/v1/accounts/{away.other_account}/authorization",
              f"/v1/accounts/{missing_account}/authorization")]
    for existing, missing in pairs:
        a = api.client.get(existing, headers=intruder)
        b = api.client.get(missing, headers=intruder)
        assert a.status_code == b.status_code == 404
        # The same words too, apart from the id itself and the path.
        assert a.json()["detail"].replace(existing.split("/")[3], "ID") == \
            b.json()["detail"].replace(missing.split("/")[3], "ID")
    posted = api.client.post(f"/v1/teams/{away.team_id}/adjustments", headers={
        **intruder, "Idempotency-Key": "x"}, json={"amount_nanos": "1", "reason": "steal"})
    assert posted.status_code == 404


def test_a_role_change_applies_to_the_next_request(api: Api) -> None:
    team = make_team(api, "roles")
    billing = api.headers(team.tokens["billing"])
    balance = f"/v1/teams/{team.team_id}/balance"
    assert api.client.get(balance, headers=billing).status_code == 200
    changed = api.client.post(f"/v1/teams/{team.team_id}/members/roles-billing/role",
                              headers=api.as_operator(), json={"role": "member"})
    assert changed.status_code == 200
    assert api.client.get(balance, headers=billing).status_code == 403
    api.client.delete(f"/v1/teams/{team.team_id}/members/roles-billing",
                      headers=api.as_operator())
    assert api.client.get(balance, headers=billing).status_code == 404

"""The lean reads (balance, may-spend, usage windows: `adapters.http.fast_answers`) answer what
their declared response models say, for every kind of caller, and still refuse like the rest."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from pydantic import BaseModel

from adapters.http.routes_balance import Balance, SpendAnswer
from adapters.http.routes_usage_windows import Usage
from adapters.postgres.view_store import PostgresViewStore
from adapters.runtime.projection_process import open_runner
from projections.windows import report_from_buckets
from tests.http.conftest import Api
from tests.http.support import make_team, usage_record


def _valid(model: type[BaseModel], answer: Any) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    body: dict[str, Any] = answer.json()
    assert model.model_validate(body).model_dump(mode="json") == body
    return body


@pytest.fixture
def team_with_usage(api: Api) -> Any:
    team = make_team(api, "fast")
    publisher = api.token_for("service", "gw", ["usage:publish"])
    records = [usage_record(team.member_account, f"f-{n}") for n in range(3)] + \
        [usage_record(team.other_account, "f-x")]
    sent = api.client.post("/v1/usage", headers=api.headers(publisher),
                           json={"records": records})
    assert sent.json()["recorded"] == 4, sent.text
    with open_runner(api.database_url) as runner:
        runner.catch_up()
    return team


def test_balance_and_may_spend_answers_match_their_models(api: Api, team_with_usage: Any
                                                           ) -> None:
    team, c = team_with_usage, api.client
    body = _valid(Balance, c.get(f"/v1/teams/{team.team_id}/balance",
                                 headers=api.headers(team.tokens["billing"])))
    assert body["currency"] == "USD" and body["balance"]["nanos"].lstrip("-").isdigit()
    reader = api.token_for("service", "gw-read", ["authorization:read"])
    spend = _valid(SpendAnswer, c.get(f"/v1/accounts/{team.member_account}/authorization",
                                      headers=api.headers(reader)))
    assert spend["account_id"] == team.member_account
    unknown = _valid(SpendAnswer, c.get(
        "/v1/accounts/00000000-0000-0000-0000-000000000001/authorization",
        headers=api.headers(reader)))
    assert unknown["allowed"] is False and unknown["balance"] is None


def test_usage_answers_match_their_model_and_a_member_sees_only_their_accounts(
        api: Api, team_with_usage: Any) -> None:
    team, c = team_with_usage, api.client
    for window in ("today", "week", "month", "total"):
        owner = _valid(Usage, c.get(f"/v1/teams/{team.team_id}/usage?window={window}",
                                    headers=api.headers(team.tokens["owner"])))
        assert owner["window"] == window
    assert owner["totals"]["requests"] == 4
    member = _valid(Usage, c.get(f"/v1/teams/{team.team_id}/usage?window=total",
                                 headers=api.headers(team.tokens["member"])))
    assert member["totals"]["requests"] == 3
    assert [row["key"] for row in member["by_account"]] == [team.member_account]


def test_lean_reads_still_refuse(api: Api, team_with_usage: Any) -> None:
    team, c = team_with_usage, api.client
    path = f"/v1/teams/{team.team_id}/balance"
    assert c.get(path).status_code == 401
    assert c.get(path, headers=api.headers(team.tokens["member"])).status_code == 403
    stranger = api.token_for("user", "nobody")
    assert c.get(path, headers=api.headers(stranger)).status_code == 404
    bad_window = c.get(f"/v1/teams/{team.team_id}/usage?window=year",
                       headers=api.headers(team.tokens["owner"]))
    assert bad_window.status_code == 422
    assert c.get(f"/v1/accounts/{team.member_account}/authorization",
                 headers=api.headers(stranger)).status_code == 404


def test_usage_windows_summed_by_postgresql_equal_the_projections_own_report(
        api: Api, team_with_usage: Any) -> None:
    team, c = team_with_usage, api.client
    store = PostgresViewStore(api.database_url)
    try:
        team_view = store.team(UUID(team.team_id))
        assert team_view is not None
        now = datetime.now(UTC)
        report = report_from_buckets(store.usage_buckets(team_view, now), now, "Europe/Berlin")
    finally:
        store.close()
    for window in ("today", "week", "month", "total"):
        body = c.get(f"/v1/teams/{team.team_id}/usage?window={window}",
                     headers=api.headers(team.tokens["owner"])).json()
        assert body["totals"]["requests"] == report.windows[window].requests
        assert body["totals"]["cost"]["nanos"] == str(report.windows[window].cost_nanos)
        assert {r["key"]: r["requests"] for r in body["by_account"]} == {
            k: t.requests for k, t in report.by_account[window].items()}
        assert {r["key"]: r["output_tokens"] for r in body["by_model"]} == {
            k: t.output_tokens for k, t in report.by_model[window].items()}

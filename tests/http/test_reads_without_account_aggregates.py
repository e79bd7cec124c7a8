"""Holders and package assignments come from the read models (version 5): the admin page, a
member's usage reads, the member's dashboard and a team's packages answer with every Account
aggregate load made to fail, and show the holders, kinds and packages folded from the log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from adapters.http.app import create_app
from adapters.http.sessions import SESSION_COOKIE_NAME
from adapters.runtime.projection_process import open_runner
from domain.tokens import token_digest, token_id_for_digest
from tests.http.conftest import Api
from tests.http.support import make_team, usage_record, user_id


def _project(api: Api) -> None:
    with open_runner(api.database_url) as runner:
        runner.catch_up()


def test_a_members_usage_and_packages_need_no_account_aggregate(api: Api,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    team = make_team(api, "held")
    publisher = api.token_for("service", "gw", ["usage:publish"])
    sent = api.client.post("/v1/usage", headers=api.headers(publisher), json={"records": [
        usage_record(team.member_account, "h-1"), usage_record(team.other_account, "h-2")]})
    assert sent.json()["recorded"] == 2
    _project(api)
    monkeypatch.setattr(api.ledger, "get_account", _refuse)
    member = api.headers(team.tokens["member"])
    usage = api.client.get(f"/v1/teams/{team.team_id}/usage?window=total", headers=member)
    assert usage.status_code == 200, usage.text
    assert [r["key"] for r in usage.json()["by_account"]] == [team.member_account]
    hidden = api.client.get(f"/v1/teams/{team.team_id}/usage?window=total&account_id="
                            f"{team.other_account}", headers=member)
    assert hidden.status_code == 404
    daily = api.client.get(f"/v1/teams/{team.team_id}/usage/daily?from=2020-01-01&to="
                           "2020-12-31", headers=member)
    assert daily.status_code == 200, daily.text
    packages = api.client.get(f"/v1/teams/{team.team_id}/packages", headers=member)
    assert [p["package_id"] for p in packages.json()["packages"]] == [team.package_id]


def _refuse(account_id: UUID) -> Any:
    raise AssertionError(f"account {account_id} was loaded from the event store")


def test_the_admin_page_shows_holders_kinds_and_packages_from_the_read_models(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    team = make_team(api, "admin-rm")
    _project(api)
    monkeypatch.setattr(api.ledger, "get_account", _refuse)
    app = create_app(api.ledger, api.database_url)
    with TestClient(app) as client:
        for role in ("owner", "member"):
            token_id = token_id_for_digest(token_digest(team.tokens[role]))
            cookie = app.state.auth.sessions.create(token_id, datetime.now(UTC))
            client.cookies.set(SESSION_COOKIE_NAME, cookie)
            if role == "owner":
                page = client.get(f"/dashboard/teams/{team.team_id}/admin")
                assert page.status_code == 200, page.text[-2000:]
                assert user_id("admin-rm", "member") in page.text
                assert "Standard v1" in page.text and "seat" in page.text
            else:
                page = client.get(f"/dashboard/teams/{team.team_id}")
                assert page.status_code == 200, page.text[-2000:]

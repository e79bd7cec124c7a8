"""Authorization reads tokens and teams from a cache checked against the stored version on
every request: a revoked token and a removed member are refused on the very next request after
the command returns, by this app and by another app instance on the same database (which never
saw the command), and an unchanged token or team is not loaded again. Token last use costs no
write per request."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from adapters.http.app import create_app
from adapters.http.sessions import LAST_USE_TABLE
from adapters.runtime.composition import open_ledger
from tests.http.conftest import Api
from tests.http.support import make_team, user_id


@pytest.fixture
def other_instance(api: Api) -> Iterator[TestClient]:
    """A second app with its own Ledger and caches on the same database: another process."""
    ledger = open_ledger(api.database_url)
    app = create_app(ledger, api.database_url, include_dashboard=False)
    with TestClient(app) as client:
        yield client
    ledger.close()


def test_a_revoked_token_is_refused_at_once_by_every_instance(
        api: Api, other_instance: TestClient) -> None:
    secret = api.token_for("user", "carol")
    headers = api.headers(secret)
    # Both instances have the token cached.
    assert api.client.get("/v1/me", headers=headers).status_code == 200
    assert other_instance.get("/v1/me", headers=headers).status_code == 200
    token_id = api.client.get("/v1/me", headers=headers).json()["token_id"]
    revoked = api.client.post(f"/v1/tokens/{token_id}/revoke", headers=api.as_operator(),
                              json={"reason": "left the company"})
    assert revoked.status_code == 200, revoked.text
    assert other_instance.get("/v1/me", headers=headers).status_code == 401
    assert api.client.get("/v1/me", headers=headers).status_code == 401


def test_a_removed_member_and_a_changed_role_apply_at_once_in_every_instance(
        api: Api, other_instance: TestClient) -> None:
    team = make_team(api, "cache")
    balance = f"/v1/teams/{team.team_id}/balance"
    billing = api.headers(team.tokens["billing"])
    admin = api.headers(team.tokens["admin"])
    assert api.client.get(balance, headers=billing).status_code == 200
    assert other_instance.get(balance, headers=billing).status_code == 200
    assert other_instance.get(balance, headers=admin).status_code == 200
    # A role change in one instance: the other refuses on the very next request.
    changed = api.client.post(
        f"/v1/teams/{team.team_id}/members/{user_id('cache', 'admin')}/role",
        headers=api.as_operator(), json={"role": "member"})
    assert changed.status_code == 200, changed.text
    assert other_instance.get(balance, headers=admin).status_code == 403
    # A removal: the team is not even visible any more, in both instances.
    removed = other_instance.delete(
        f"/v1/teams/{team.team_id}/members/{user_id('cache', 'billing')}",
        headers=api.as_operator())
    assert removed.status_code == 200, removed.text
    assert api.client.get(balance, headers=billing).status_code == 404
    assert other_instance.get(balance, headers=billing).status_code == 404


def test_unchanged_tokens_and_teams_are_not_loaded_again(api: Api) -> None:
    team = make_team(api, "loads")
    headers = api.headers(team.tokens["auditor"])
    balance = f"/v1/teams/{team.team_id}/balance"
    assert api.client.get(balance, headers=headers).status_code == 200
    source = api.client.app.state.auth.source  # type: ignore[attr-defined]
    token_loads, team_loads = source.tokens.loads, source.teams.loads
    for _ in range(5):
        assert api.client.get(balance, headers=headers).status_code == 200
    assert (source.tokens.loads, source.teams.loads) == (token_loads, team_loads)


def test_last_use_is_noted_in_memory_and_written_in_one_batch(api: Api) -> None:
    secrets = [api.token_for("user", f"batch-{n}") for n in range(3)]
    sessions = api.client.app.state.auth.sessions  # type: ignore[attr-defined]
    sessions.stop_flushing()  # no timed flush in between; this writes what was noted so far

    def written() -> int:
        with psycopg.connect(api.database_url) as conn:
            row = conn.execute(f"SELECT count(*) FROM public.{LAST_USE_TABLE}").fetchone()
        assert row is not None
        return int(row[0])

    before = written()
    for secret in secrets:
        for _ in range(3):
            assert api.client.get("/v1/me", headers=api.headers(secret)).status_code == 200
    assert written() == before  # no request wrote
    sessions.flush()
    assert written() == before + len(secrets)

"""Tokens: shown once, stored only as a digest, expired and revoked ones refused, every issue
and revocation attributed; the CLI issues, lists and revokes; sessions die with their token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from adapters.cli.main import main
from adapters.http.app import create_app
from adapters.http.sessions import SESSION_COOKIE_NAME
from adapters.runtime.composition import open_ledger
from domain.tokens import TOKEN_PREFIX
from services.tokens import ensure_first_operator_token
from tests.http.conftest import Api
from tests.http.support import make_team


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clocked(database_url: str) -> Iterator[tuple[Api, Clock]]:
    clock = Clock()
    ledger = open_ledger(database_url)
    issued = ensure_first_operator_token(ledger)
    assert issued is not None
    app = create_app(ledger, database_url, clock=clock, include_dashboard=False)
    with TestClient(app) as client:
        yield Api(client, ledger, database_url, issued.secret), clock
    ledger.close()


def every_row_as_text(database_url: str) -> Iterator[str]:
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE "
            "table_schema NOT IN ('pg_catalog', 'information_schema') AND "
            "table_type = 'BASE TABLE'").fetchall()
        assert len(tables) >= 5
        for schema, table in tables:
            for (text,) in conn.execute(f'SELECT t::text FROM "{schema}"."{table}" t'):
                yield text


def test_a_token_is_shown_once_and_stored_nowhere_in_plain_text(api: Api) -> None:
    answer = api.client.post("/v1/tokens", headers=api.as_operator(), json={
        "kind": "service", "subject": "gateway", "name": "prod gateway",
        "scopes": ["usage:publish"]})
    assert answer.status_code == 201, answer.text
    secret = answer.json()["secret"]
    assert secret.startswith(TOKEN_PREFIX) and len(secret) == 47
    # Use it (a last-use row and a session are written), then look for it everywhere.
    assert api.client.get("/v1/me", headers=api.headers(secret)).status_code == 200
    session = api.client.app.state.auth.create_session(secret)  # type: ignore[attr-defined]
    listed = api.client.get("/v1/tokens", headers=api.as_operator()).json()["tokens"]
    assert all("secret" not in t for t in listed)
    assert any(t["last_used_at"] for t in listed if t["token_id"] == answer.json()["token_id"])
    needles = [secret, secret[len(TOKEN_PREFIX):], secret.encode().hex(),
               api.operator_token, api.operator_token.encode().hex(), session,
               session.encode().hex()]
    for text in every_row_as_text(api.database_url):
        assert not any(needle in text for needle in needles), text[:200]


def test_revoked_tokens_and_their_sessions_stop_working_at_once(api: Api) -> None:
    secret = api.token_for("user", "alice")
    session = api.client.app.state.auth.create_session(secret)  # type: ignore[attr-defined]
    # The session cookie as the browser sends it, per request (the client keeps no cookies).
    with_cookie = {"Cookie": f"{SESSION_COOKIE_NAME}={session}"}
    assert api.client.get("/v1/me", headers=with_cookie).status_code == 200
    token_id = api.client.get("/v1/me", headers=api.headers(secret)).json()["token_id"]
    revoked = api.client.post(f"/v1/tokens/{token_id}/revoke", headers=api.as_operator(),
                              json={"reason": "laptop lost"})
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    refused = api.client.get("/v1/me", headers=api.headers(secret))
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert "revoked" in refused.json()["detail"]
    assert api.client.get("/v1/me", headers=with_cookie).status_code == 401


def test_an_expired_token_is_refused(clocked: tuple[Api, Clock]) -> None:
    api, clock = clocked
    answer = api.client.post("/v1/tokens", headers=api.as_operator(), json={
        "kind": "user", "subject": "bob", "name": "one hour",
        "expires_at": (clock.now + timedelta(hours=1)).isoformat()})
    secret = answer.json()["secret"]
    assert api.client.get("/v1/me", headers=api.headers(secret)).status_code == 200
    clock.now += timedelta(hours=1)
    assert api.client.get("/v1/me", headers=api.headers(secret)).status_code == 401
    assert api.client.get("/v1/me", headers=api.as_operator()).status_code == 200


@pytest.mark.parametrize("header", ["Bearer nope", "Basic abc", "Bearer " + "ldg_" + "A" * 43,
                                    "Bearer " + "x" * 500])
def test_malformed_or_unknown_credentials_get_401_problems(api: Api, header: str) -> None:
    answer = api.client.get("/v1/me", headers={"Authorization": header})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "token" in answer.json()["detail"]


def test_issuing_and_revoking_are_attributed_events_only_operators_may_do(api: Api) -> None:
    team = make_team(api, "attrib")
    owner_user = api.token_for("user", "someone")
    denied = api.client.post("/v1/tokens", headers=api.headers(owner_user), json={
        "kind": "operator", "subject": "me", "name": "escalate"})
    assert denied.status_code == 403
    assert api.client.post("/v1/tokens", headers=api.headers(team.tokens["admin"]), json={
        "kind": "user", "subject": "x", "name": "x"}).status_code == 403
    with psycopg.connect(api.database_url) as conn:
        topics = [r[0] for r in conn.execute(
            "SELECT topic FROM ledger_events WHERE topic LIKE %s ORDER BY notification_id",
            ("domain.tokens:ApiToken%",))]
    assert topics.count("domain.tokens:ApiToken.Issued") >= 6
    ledger = api.ledger
    tokens = api.client.app.state.tokens  # type: ignore[attr-defined]
    issued_by = {t.subject: t.issued_by for t in tokens.list()}
    assert issued_by["operator"] == "system:bootstrap" and issued_by["someone"] == "operator"
    assert ledger is not None


def test_an_idempotency_key_never_issues_a_second_token(api: Api) -> None:
    body = {"kind": "user", "subject": "carol", "name": "carol"}
    headers = {**api.as_operator(), "Idempotency-Key": "carol-1"}
    first = api.client.post("/v1/tokens", headers=headers, json=body)
    assert first.status_code == 201
    again = api.client.post("/v1/tokens", headers=headers, json=body)
    assert again.status_code == 409
    assert first.json()["token_id"] in again.json()["detail"]
    assert "secret" not in again.text.lower() or "shown once" in again.json()["detail"]


def test_first_operator_token_is_made_once(database_url: str) -> None:
    ledger = open_ledger(database_url)
    try:
        first = ensure_first_operator_token(ledger)
        assert first is not None and first.token.kind.value == "operator"
        assert ensure_first_operator_token(ledger) is None
    finally:
        ledger.close()


def test_cli_creates_lists_and_revokes_tokens(database_url: str, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    assert main(["token", "create", "--kind", "service", "--subject", "gateway",
                 "--scope", "usage:publish", "--scope", "authorization:read"]) == 0
    secret = capsys.readouterr().out.strip()
    assert secret.startswith(TOKEN_PREFIX)
    assert main(["token", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["subject"] for t in listed] == ["gateway"]
    assert listed[0]["scopes"] == ["authorization:read", "usage:publish"]
    assert listed[0]["issued_by"].startswith("cli:")
    assert secret not in json.dumps(listed)
    assert main(["token", "revoke", listed[0]["token_id"], "--reason", "rotated"]) == 0
    capsys.readouterr()
    assert main(["token", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["revoked_at"] is not None
    assert main(["token", "create", "--kind", "service", "--subject", "s"]) == 2  # no scope

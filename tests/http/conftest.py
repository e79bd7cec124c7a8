"""Fixtures for the HTTP API: a Ledger on a fresh PostgreSQL database, the app around it, an
operator token, and helpers to make teams, members and their tokens through the API itself."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from adapters.http.app import create_app
from adapters.runtime.composition import open_ledger
from services.ledger import Ledger
from services.tokens import ensure_first_operator_token


@dataclass
class Api:
    client: TestClient
    ledger: Ledger
    database_url: str
    operator_token: str

    def headers(self, token: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", **extra}

    def as_operator(self) -> dict[str, str]:
        return self.headers(self.operator_token)

    def token_for(self, kind: str, subject: str, scopes: list[str] | None = None) -> str:
        answer = self.client.post("/v1/tokens", headers=self.as_operator(), json={
            "kind": kind, "subject": subject, "name": f"{kind} {subject}",
            "scopes": scopes or []})
        assert answer.status_code == 201, answer.text
        secret: str = answer.json()["secret"]
        return secret


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    ledger = open_ledger(database_url)
    issued = ensure_first_operator_token(ledger)
    assert issued is not None
    app = create_app(ledger, database_url, include_dashboard=False)
    with TestClient(app) as client:
        yield Api(client, ledger, database_url, issued.secret)
    ledger.close()


def now() -> datetime:
    return datetime.now(UTC)

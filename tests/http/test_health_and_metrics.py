"""GET /healthz says whether the database and the bus answer and how far the projections lag;
GET /metrics exposes request latency by route, usage outcomes and the projection lag."""

from __future__ import annotations

import socket

from fastapi.testclient import TestClient

from adapters.http.app import create_app
from tests.http.conftest import Api
from tests.http.support import make_team, usage_record


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_health_names_database_bus_and_projection_lag(api: Api, nats_server_url: str) -> None:
    healthy = create_app(api.ledger, api.database_url, nats_url=nats_server_url,
                         include_dashboard=False)
    with TestClient(healthy) as client:
        answer = client.get("/healthz").json()
    assert answer["status"] == "ok"
    assert answer["database"]["ok"] and answer["bus"]["ok"]
    assert answer["lag_events"] == answer["head_position"] - answer["position"]

    no_bus = create_app(api.ledger, api.database_url,
                        nats_url=f"nats://127.0.0.1:{free_port()}", include_dashboard=False)
    with TestClient(no_bus) as client:
        answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.json()["status"] == "degraded"
    assert "unreachable" in answer.json()["bus"]["detail"]


def test_metrics_count_requests_by_route_and_usage_by_outcome(api: Api) -> None:
    team = make_team(api, "metered")
    publisher = api.headers(api.token_for("service", "gw", ["usage:publish"]))
    api.client.post("/v1/usage", headers=publisher, json={"records": [
        usage_record(team.member_account, "m-1"), usage_record(team.member_account, "m-1")]})
    text = api.client.get("/metrics").text
    assert 'ledger_http_request_duration_seconds_count{method="POST",route="/v1/usage",' \
           'status="200"}' in text
    assert 'route="/v1/teams/{team_id}/accounts"' in text  # templates, never raw ids
    assert team.team_id not in text
    assert 'ledger_usage_events_total{outcome="recorded"}' in text
    assert 'ledger_usage_events_total{outcome="duplicates"}' in text
    assert "ledger_projection_lag_events" in text
    assert api.operator_token not in text

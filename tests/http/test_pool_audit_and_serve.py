"""The account pool's columns, the audit trail's pages and export, and `ledger serve` itself."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from adapters.runtime.projection_process import open_runner
from projections.windows import local_date
from tests.http.conftest import Api
from tests.http.support import USAGE_MOMENT, make_team, usage_record

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVE_READY_TIMEOUT_SECONDS = 60.0


def catch_up(database_url: str) -> None:
    with open_runner(database_url) as runner:
        runner.catch_up()


def test_the_pool_shows_status_package_holder_and_spend(api: Api) -> None:
    team = make_team(api, "pool")
    c, op = api.client, api.as_operator()
    publisher = api.headers(api.token_for("service", "gw", ["usage:publish"]))
    c.post("/v1/usage", headers=publisher, json={"records": [
        usage_record(team.member_account, "p-1")]})
    given = c.post(f"/v1/accounts/{team.other_account}/holder", headers=op,
                   json={"user_id": "pool-billing"})
    assert given.status_code == 200 and given.json()["holder_user_id"] == "pool-billing"
    not_member = c.post(f"/v1/accounts/{team.other_account}/holder", headers=op,
                        json={"user_id": "stranger"})
    assert not_member.status_code == 422 and "not a member" in not_member.json()["detail"]
    assert c.post(f"/v1/accounts/{team.other_account}/suspend", headers=op,
                  json={"reason": "left the company"}).status_code == 200
    catch_up(api.database_url)
    pool = c.get(f"/v1/teams/{team.team_id}/accounts", headers=op).json()
    by_id = {a["account_id"]: a for a in pool["accounts"]}
    member, other = by_id[team.member_account], by_id[team.other_account]
    cost = str(1_000_000 + 1000 * 2000 + 100 * 8000)
    # The record is five minutes old: in today's and this month's window unless a local
    # midnight (Europe/Berlin) fell in between.
    used, now = local_date(USAGE_MOMENT, "Europe/Berlin"), local_date(datetime.now(UTC),
                                                                       "Europe/Berlin")
    assert member["spend_today"]["nanos"] == (cost if used == now else "0")
    assert member["spend_month"]["nanos"] == (cost if used.month == now.month else "0")
    assert other["spend_month"]["nanos"] == "0"
    assert member["package"]["package_name"] == "Standard"
    assert member["holder_user_id"] == "pool-member" and other["status"] == "suspended"
    assert pool["lag_events"] == 0
    may = c.get(f"/v1/accounts/{team.other_account}/authorization", headers=op).json()
    assert may["allowed"] is False and may["blocked_by"] == "account_suspended"


def test_the_audit_trail_pages_by_cursor_filters_and_exports(api: Api) -> None:
    team = make_team(api, "trail")
    op = api.as_operator()
    for n in range(3):
        api.client.post(f"/v1/teams/{team.team_id}/adjustments",
                        headers={**op, "Idempotency-Key": f"a{n}"},
                        json={"amount_nanos": str(n + 1), "reason": f"r{n}"})
    catch_up(api.database_url)
    path = f"/v1/teams/{team.team_id}/audit"
    seen, cursor = [], None
    while True:
        page = api.client.get(path, headers=op, params={"limit": 4, **(
            {"cursor": cursor} if cursor else {})}).json()
        seen += page["entries"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    positions = [e["position"] for e in seen]
    assert positions == sorted(positions) and len(positions) == len(set(positions)) > 8
    adjustments = api.client.get(path, headers=op,
                                 params={"event_type": "Team.AdjustmentRecorded"}).json()
    assert [e["balance_after"]["nanos"] for e in adjustments["entries"]] == ["1", "3", "6"]
    exported = api.client.get(f"{path}/export", headers=op, params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(r["position"]) for r in rows] == positions
    lines = api.client.get(f"{path}/export", headers=op, params={"format": "jsonl"}).text
    assert [json.loads(x)["position"] for x in lines.splitlines()] == positions


def test_ledger_serve_answers_on_loopback(database_url: str, nats_server_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url, "LEDGER_NATS_URL": nats_server_url}
    server = subprocess.Popen([sys.executable, "-m", "adapters.cli", "serve", "--port",
                               str(port)], cwd=REPO_ROOT, env=env)
    try:
        deadline = time.monotonic() + SERVE_READY_TIMEOUT_SECONDS
        health = None
        while time.monotonic() < deadline and health is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0).json()
            except httpx.HTTPError:
                time.sleep(0.3)
        assert health is not None and health["status"] == "ok", health
        assert health["bus"]["ok"]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/me").status_code == 401
        spec = httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()
        assert spec["openapi"].startswith("3.1")
    finally:
        server.terminate()
        server.wait(timeout=30)

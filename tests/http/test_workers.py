"""`ledger serve --workers 2`: two processes on one socket, and every part correct across them.

Each check holds keep-alive connections pinned to a known worker (the worker's pid is found by
its end of the TCP connection), so a request is sent to the worker the test means: a token
revoked through one worker is refused by the other; the same usage batch sent to both at once
is recorded once; a token used on one worker shows its last use when listed on the other;
/metrics on one worker counts the requests of both; each worker's dashboard stream hears a view
message (each has its own subscription); SIGTERM stops both and the parent exits 0; a worker
killed with SIGKILL is replaced.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import nats
import psutil
import pytest
from psycopg_pool import ConnectionPool

from adapters.http.sessions import SESSION_COOKIE_NAME, SessionStore
from adapters.http.workers import (
    WORKERS_DEFAULT_MAX,
    WORKERS_ENV,
    WORKERS_MAX,
    workers_setting,
)
from adapters.runtime.server_files import free_port
from adapters.runtime.settings import ConfigurationError
from domain.tokens import token_digest, token_id_for_digest
from tests.http.conftest import Api
from tests.http.support import make_team, usage_record

WORKERS = 2
READY_SECONDS = 60.0
STOP_SECONDS = 30.0
CONNECTION_TRIES_MAX = 60
LAST_USE_SECONDS = 5.0
SSE_SECONDS = 10.0
METRICS_SECONDS = 5.0


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int

    def workers(self) -> list[int]:
        """The pids of the running workers (not of one that died and is not reaped yet)."""
        found = []
        for child in psutil.Process(self.process.pid).children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE and \
                        "adapters.http.worker" in " ".join(child.cmdline()):
                    found.append(child.pid)
            except psutil.Error:
                continue
        return found


@pytest.fixture
def served(api: Api, nats_server_url: str, tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    env = {**os.environ, "LEDGER_DATABASE_URL": api.database_url,
           "LEDGER_NATS_URL": nats_server_url, "LEDGER_DATA_DIR": str(tmp_path)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    ledger_command = str(Path(sys.executable).parent / "ledger")
    process = subprocess.Popen([ledger_command, "serve", "--port", str(port), "--workers",
                                str(WORKERS)], env=env)
    server = Served(process, port)
    try:
        deadline = time.monotonic() + READY_SECONDS
        while len(server.workers()) < WORKERS or not _answers(port):
            assert process.poll() is None, "ledger serve exited"
            assert time.monotonic() < deadline, "ledger serve did not answer"
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(STOP_SECONDS)


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False


def _request(conn: http.client.HTTPConnection, method: str, path: str, token: str,
             body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body)
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    answer = conn.getresponse()
    raw = answer.read()
    return answer.status, json.loads(raw) if raw else None


def pinned(server: Served) -> dict[int, http.client.HTTPConnection]:
    """One keep-alive connection to each worker, by the worker's pid."""
    pids = server.workers()
    found: dict[int, http.client.HTTPConnection] = {}
    for _ in range(CONNECTION_TRIES_MAX):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        assert conn.sock is not None
        local_port = conn.sock.getsockname()[1]
        owner = next(pid for pid in pids if any(
            c.raddr and c.raddr.port == local_port
            for c in psutil.Process(pid).net_connections("tcp")))
        if owner in found:
            conn.close()
        else:
            found[owner] = conn
        if len(found) == len(pids):
            return found
        time.sleep(0.02)
    raise AssertionError(f"connections reached only workers {list(found)} of {pids}")


def test_two_workers_run_and_a_revoked_token_is_refused_by_each(api: Api,
                                                                 served: Served) -> None:
    conns = list(pinned(served).values())
    assert len(conns) == WORKERS
    secret = api.token_for("user", "revoked-later")
    for conn in conns:  # both workers cache the token
        assert _request(conn, "GET", "/v1/me", secret)[0] == 200
    token_id = token_id_for_digest(token_digest(secret))
    status, _ = _request(conns[0], "POST", f"/v1/tokens/{token_id}/revoke", api.operator_token,
                         {"reason": "left the company"})
    assert status == 200
    for conn in conns:
        assert _request(conn, "GET", "/v1/me", secret)[0] == 401


def test_the_same_usage_batch_sent_to_both_workers_at_once_is_recorded_once(
        api: Api, served: Served) -> None:
    team = make_team(api, "workers-usage")
    publisher = api.token_for("service", "gateway", ["usage:publish"])
    batch = [usage_record(account, f"w-{n}-{account}") for n in range(200)
             for account in (team.member_account, team.other_account)]
    conns = list(pinned(served).values())
    answers: list[Any] = [None] * len(conns)

    def send(index: int) -> None:
        answers[index] = _request(conns[index], "POST", "/v1/usage", publisher,
                                  {"records": batch})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(conns))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(status == 200 for status, _ in answers), answers
    recorded = sum(body["recorded"] for _, body in answers)
    duplicates = sum(body["duplicates"] for _, body in answers)
    assert recorded == len(batch) and duplicates == len(batch) * (len(conns) - 1)
    again = _request(conns[1], "POST", "/v1/usage", publisher, {"records": batch})[1]
    assert again["recorded"] == 0 and again["duplicates"] == len(batch)


def test_a_token_used_on_one_worker_shows_its_last_use_listed_on_the_other(
        api: Api, served: Served) -> None:
    conns = list(pinned(served).values())
    for used, lister in ((conns[0], conns[1]), (conns[1], conns[0])):
        secret = api.token_for("user", f"last-use-{id(used)}")
        token_id = str(token_id_for_digest(token_digest(secret)))
        before = datetime.now(UTC)
        assert _request(used, "GET", "/v1/me", secret)[0] == 200
        deadline = time.monotonic() + LAST_USE_SECONDS
        while True:
            listed = _request(lister, "GET", "/v1/tokens", api.operator_token)[1]["tokens"]
            last = next(t["last_used_at"] for t in listed if t["token_id"] == token_id)
            if last is not None:
                break
            assert time.monotonic() < deadline, "the other worker never saw the last use"
            time.sleep(0.1)
        assert datetime.fromisoformat(last) >= before.replace(microsecond=0)


def _me_count(metrics: str) -> float:
    pattern = (r'ledger_http_request_duration_seconds_count\{[^}]*route="/v1/me"[^}]*'
               r'status="200"[^}]*\} ([0-9.e+]+)')
    return sum(float(v) for v in re.findall(pattern, metrics))


def _metrics(conn: http.client.HTTPConnection) -> str:
    conn.request("GET", "/metrics")
    return conn.getresponse().read().decode()


def test_metrics_on_either_worker_count_the_requests_of_both(api: Api, served: Served) -> None:
    conns = list(pinned(served).values())
    start = _me_count(_metrics(conns[0]))
    for conn, times in zip(conns, (3, 5), strict=True):
        for _ in range(times):
            assert _request(conn, "GET", "/v1/me", api.operator_token)[0] == 200
    for conn in conns:  # a request is counted just after its answer is sent: wait a moment
        deadline = time.monotonic() + METRICS_SECONDS
        while (counted := _me_count(_metrics(conn))) < start + 8 and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert counted == start + 8


def _sse_event(conn: http.client.HTTPConnection, path: str, cookie: str) -> Iterator[str]:
    conn.request("GET", path, headers={"Cookie": f"{SESSION_COOKIE_NAME}={cookie}"})
    answer = conn.getresponse()
    assert answer.status == 200
    while True:
        line = answer.fp.readline().decode()
        if line.startswith("event:"):
            yield line.split(":", 1)[1].strip()


async def _publish_view(nats_url: str, team_id: str) -> None:
    client = await nats.connect(nats_url)
    try:
        await client.publish(f"ledger.views.balance.{team_id}", b'{"position": 1}')
        await client.flush()
    finally:
        await client.close()


def test_each_workers_dashboard_stream_hears_a_view_message(
        api: Api, served: Served, nats_server_url: str) -> None:
    import asyncio

    team = make_team(api, "workers-live")
    pool: ConnectionPool[Any] = ConnectionPool(api.database_url, min_size=1, open=True,
                                               kwargs={"autocommit": True})
    try:
        cookie = SessionStore(pool).create(
            token_id_for_digest(token_digest(api.operator_token)), datetime.now(UTC))
    finally:
        pool.close()
    conns = list(pinned(served).values())
    streams = []
    for conn in conns:
        conn.timeout = SSE_SECONDS
        events = _sse_event(conn, f"/dashboard/teams/{UUID(team.team_id)}/events", cookie)
        assert next(events) == "ready"
        streams.append(events)
    asyncio.run(_publish_view(nats_server_url, team.team_id))
    for events in streams:
        assert next(events) == "balance"
    for conn in conns:
        conn.close()


def test_sigterm_stops_every_worker_and_the_server_exits_cleanly(served: Served) -> None:
    workers = served.workers()
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(STOP_SECONDS) == 0
    assert not [pid for pid in workers if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_a_worker_that_dies_is_replaced_and_the_server_keeps_answering(served: Served) -> None:
    first, _ = served.workers()
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + READY_SECONDS
    while first in served.workers() or len(served.workers()) < WORKERS:
        assert time.monotonic() < deadline, "the dead worker was not replaced"
        time.sleep(0.2)
    assert all(_answers(served.port) for _ in range(10))


@pytest.mark.parametrize("value", ["0", "17", "two", "-1"])
def test_the_workers_setting_is_bounded_and_says_what_to_set(value: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"{WORKERS_ENV} \(or `ledger serve "
                                                 rf"--workers`\) must be a whole number from 1 "
                                                 rf"to {WORKERS_MAX}"):
        workers_setting({WORKERS_ENV: value})
    assert workers_setting({WORKERS_ENV: "3"}) == 3
    assert 1 <= workers_setting({}) <= WORKERS_DEFAULT_MAX


def test_workers_stop_when_their_parent_is_killed(served: Served) -> None:
    workers = served.workers()
    served.process.kill()
    served.process.wait(STOP_SECONDS)
    deadline = time.monotonic() + STOP_SECONDS
    while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
              for pid in workers):
        assert time.monotonic() < deadline, "workers outlived their parent"
        time.sleep(0.2)
    assert not _answers(served.port)

"""`ledger up` serves the HTTP API too: on 127.0.0.1 and the configured port, with the URL
printed, and the first operator token it prints on a new data folder works there."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import httpx

from tests.integration.ledger_up_support import LedgerUp

HTTP_READY_TIMEOUT_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_health(base: str, up: LedgerUp) -> httpx.Response:
    deadline = time.monotonic() + HTTP_READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            return httpx.get(f"{base}/healthz", timeout=2.0)
        except httpx.HTTPError:
            time.sleep(0.3)
    raise AssertionError(f"no HTTP answer from ledger up:\n{up.output()[-3000:]}")


def test_ledger_up_serves_the_api_and_prints_the_url_and_first_token(
        ledger_data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    up = LedgerUp(ledger_data_dir, tmp_path / "up.log", LEDGER_HTTP_PORT=str(port)).start()
    try:
        base = f"http://127.0.0.1:{port}"
        health = wait_for_health(base, up)
        assert health.status_code == 200, health.text
        output = up.output()
        assert base in output, output[-2000:]
        token = re.search(r"first operator token.*?(ldg_[A-Za-z0-9_-]{43})", output,
                          re.S | re.I)
        assert token is not None, output[-2000:]
        me = httpx.get(f"{base}/v1/me", headers={"Authorization": f"Bearer {token.group(1)}"})
        assert me.status_code == 200 and me.json()["kind"] == "operator", me.text
    finally:
        assert up.interrupt() == 0, up.output()[-3000:]


def test_a_taken_http_port_is_reported_and_the_rest_of_ledger_up_keeps_running(
        ledger_data_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = LedgerUp(ledger_data_dir, tmp_path / "up.log", LEDGER_HTTP_PORT=str(port)).start()
        try:
            deadline = time.monotonic() + HTTP_READY_TIMEOUT_SECONDS
            while "HTTP API not started" not in up.output():
                assert time.monotonic() < deadline, up.output()[-3000:]
                assert up.process is not None and up.process.poll() is None, up.output()[-3000:]
                time.sleep(0.3)
            assert "LEDGER_HTTP_PORT" in up.output()
        finally:
            assert up.interrupt() == 0, up.output()[-3000:]

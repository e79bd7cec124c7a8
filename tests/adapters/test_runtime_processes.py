"""How `ledger up` runs its runners: started again after a server failure (bounded), stopped
with the reason when a watched server dies, and a bug is never retried."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from adapters.nats.ingest_settings import IngestSettings
from adapters.runtime import processes
from adapters.runtime.processes import (
    RunnerGaveUpError,
    Runtime,
    restarting,
    run_together,
)
from services.backoff import Backoff

RUNTIME = Runtime(database_url="postgresql://u:p@127.0.0.1:1/x", nats_url="nats://127.0.0.1:1",
                  data_dir=Path("."), ingest=IngestSettings())


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "RUNNER_BACKOFF", Backoff(0.001, 0.001))
    monkeypatch.setattr(processes, "SERVER_WATCH_INTERVAL_SECONDS", 0.01)


def test_a_runner_that_loses_its_database_is_started_again() -> None:
    runs: list[int] = []

    async def flaky(runtime: Runtime, stop: asyncio.Event) -> None:
        runs.append(1)
        if len(runs) < 3:
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    asyncio.run(restarting(flaky, "flaky")(RUNTIME, asyncio.Event()))
    assert len(runs) == 3


def test_a_runner_that_keeps_failing_on_its_server_gives_up_with_the_reason() -> None:
    async def down(runtime: Runtime, stop: asyncio.Event) -> None:
        raise ConnectionError("no route to host")

    with pytest.raises(RunnerGaveUpError, match="no route to host"):
        asyncio.run(restarting(down, "down")(RUNTIME, asyncio.Event()))


def test_a_bug_in_a_runner_is_not_retried() -> None:
    runs: list[int] = []

    async def buggy(runtime: Runtime, stop: asyncio.Event) -> None:
        runs.append(1)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        asyncio.run(restarting(buggy, "buggy")(RUNTIME, asyncio.Event()))
    assert runs == [1]


def test_a_dead_server_stops_every_runner_and_is_reported() -> None:
    stopped: list[str] = []

    async def worker(runtime: Runtime, stop: asyncio.Event) -> None:
        await stop.wait()
        stopped.append("worker")

    checks = iter([None, None, "the embedded PostgreSQL server exited (code -9)"])

    async def scenario() -> str | None:
        return await run_together(RUNTIME, [worker, worker], asyncio.Event(),
                                  watch=lambda: next(checks))

    assert asyncio.run(scenario()) == "the embedded PostgreSQL server exited (code -9)"
    assert stopped == ["worker", "worker"]


def test_a_restarted_runner_waits_longer_after_each_failure(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    waits: list[float] = []
    real_wait_for = asyncio.wait_for

    async def recording_wait_for(awaitable, timeout):  # type: ignore[no-untyped-def]
        waits.append(timeout)
        return await real_wait_for(awaitable, 0)

    monkeypatch.setattr(processes, "RUNNER_BACKOFF", Backoff(1.0, 4.0))
    monkeypatch.setattr(processes.asyncio, "wait_for", recording_wait_for)
    runs: list[int] = []

    async def flaky(runtime: Runtime, stop: asyncio.Event) -> None:
        runs.append(1)
        if len(runs) <= 4:
            raise ConnectionError("connection refused")

    asyncio.run(restarting(flaky, "flaky")(RUNTIME, asyncio.Event()))
    assert waits == [1.0, 2.0, 4.0, 4.0]

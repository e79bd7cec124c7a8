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

RUNTIME = Runtime(database_url="postgresql://u:p@127.0.0.1:1/x", nats_url="nats://127.0.0.1:1",
                  data_dir=Path("."), ingest=IngestSettings())


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "RUNNER_BACKOFF_FIRST_SECONDS", 0.0)
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

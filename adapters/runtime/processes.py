"""The background services `ledger up` runs together, and how to add one.

A runner is `async def run(runtime: Runtime, stop: asyncio.Event) -> None`: it works until `stop`
is set, then finishes what it holds and returns. `ledger up` imports every runner named in
`UP_RUNNERS` ("module:function"), starts them together, and on Ctrl-C (SIGINT) or SIGTERM sets
`stop` and waits for all of them. If one runner fails, the others are stopped too and the error
is reported: a half-running ledger is worse than a stopped one.

A runner that fails because a server went away (a database restart, a network cut) is started
again after a backoff, up to RUNNER_RESTARTS_MAX times in a row (a run longer than
RUNNER_HEALTHY_SECONDS starts the count again); past that, the ledger stops with the reason. What
the runner had not acknowledged comes again from the stream, and recording is idempotent.
`run_together` also polls a `watch` function (the embedded servers' health in `ledger up`): when
it reports a problem, everything stops and `run_together` returns it, so the process exits non-zero
instead of limping on.

Synchronous runners (a loop in a thread, like eventsourcing's projection runners) wrap a
function `fn(runtime, stop: threading.Event)` with `thread_runner(fn)`.

To plug a new service into `ledger up`, append its "module:function" to `UP_RUNNERS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, InternalError, OperationalError

from adapters.nats.ingest_settings import IngestSettings
from services.backoff import Backoff

SERVER_WATCH_INTERVAL_SECONDS = 0.5
RUNNER_RESTARTS_MAX = 8
RUNNER_BACKOFF = Backoff(first_seconds=0.5, longest_seconds=10.0)
RUNNER_HEALTHY_SECONDS = 60.0
# Failures of a server, not of the runner: worth starting the runner again. InternalError is
# PostgreSQL's XX000, e.g. "tuple concurrently updated" when processes create tables together.
SERVER_FAILURES: tuple[type[BaseException], ...] = (
    psycopg.OperationalError, psycopg.errors.InternalError, OperationalError, InterfaceError,
    InternalError, ConnectionError, TimeoutError)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    database_url: str
    nats_url: str
    data_dir: Path
    ingest: IngestSettings


Runner = Callable[[Runtime, asyncio.Event], Coroutine[Any, Any, None]]

UP_RUNNERS: list[str] = [
    "adapters.runtime.usage_runner:run_usage_consumer",
    "adapters.runtime.projection_process:projections_up_runner",
    "adapters.http.serve:http_up_runner",
    "adapters.runtime.stripe_reconciler:run_stripe_reconciler",
    "adapters.runtime.auto_recharge_runner:auto_recharge_up_runner",
    "adapters.runtime.invoicing_runner:run_invoicing",
]


def load_runner(spec: str) -> Runner:
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise ValueError(f"runner {spec!r} must be written as module:function")
    runner: Runner = getattr(importlib.import_module(module_name), attribute)
    return restarting(runner, attribute)


def thread_runner(run: Callable[[Runtime, threading.Event], None]) -> Runner:
    """An async runner around a blocking function that returns once its event is set."""
    async def runner(runtime: Runtime, stop: asyncio.Event) -> None:
        stopped = threading.Event()
        worker = asyncio.create_task(asyncio.to_thread(run, runtime, stopped))
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([worker, waiter], return_when=asyncio.FIRST_COMPLETED)
        stopped.set()
        waiter.cancel()
        await worker

    return runner


class RunnerGaveUpError(ConnectionError):
    """A runner kept failing on its servers beyond RUNNER_RESTARTS_MAX."""


def restarting(runner: Runner, name: str) -> Runner:
    """`runner`, started again with bounded backoff when a server fails under it."""
    async def supervised(runtime: Runtime, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                await runner(runtime, stop)
                return
            except SERVER_FAILURES as error:
                if time.monotonic() - started > RUNNER_HEALTHY_SECONDS:
                    failures = 0
                failures += 1
                if failures > RUNNER_RESTARTS_MAX:
                    raise RunnerGaveUpError(
                        f"{name} failed {failures} times in a row on its servers, last: "
                        f"{type(error).__name__}: {str(error).strip().splitlines()[:1]}") from error
                delay = RUNNER_BACKOFF.delay_seconds(failures)
                log.warning("%s stopped on a server failure (%s: %s); starting it again in "
                            "%.1fs (%d of %d)", name, type(error).__name__,
                            (str(error).strip().splitlines() or [""])[0], delay, failures,
                            RUNNER_RESTARTS_MAX)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    return supervised


async def _watch(watch: Callable[[], str | None], stop: asyncio.Event) -> str | None:
    while not stop.is_set():
        problem = watch()
        if problem is not None:
            stop.set()
            return problem
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SERVER_WATCH_INTERVAL_SECONDS)
    return None


async def run_together(runtime: Runtime, runners: list[Runner], stop: asyncio.Event,
                       watch: Callable[[], str | None] | None = None) -> str | None:
    """Run every runner until `stop` is set, one of them ends, or `watch` reports a problem;
    then stop and await all. Returns the problem `watch` reported, if any; raises a runner's
    failure."""
    tasks = [asyncio.create_task(runner(runtime, stop)) for runner in runners]
    waiter = asyncio.create_task(stop.wait())
    watcher = asyncio.create_task(_watch(watch or (lambda: None), stop))
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    waiter.cancel()
    problem = await watcher
    if problem is not None:
        return problem
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result
    return None

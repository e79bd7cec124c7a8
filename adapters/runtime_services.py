"""The background services `ledger up` runs together, and how to add one.

A runner is `async def run(runtime: Runtime, stop: asyncio.Event) -> None`: it works until `stop`
is set, then finishes what it holds and returns. `ledger up` imports every runner named in
`UP_RUNNERS` ("module:function"), starts them together, and on Ctrl-C (SIGINT) or SIGTERM sets
`stop` and waits for all of them. If one runner fails, the others are stopped too and the error
is reported: a half-running ledger is worse than a stopped one.

Synchronous runners (a loop in a thread, like eventsourcing's projection runners) wrap a
function `fn(runtime, stop: threading.Event)` with `thread_runner(fn)`.

To plug a new service into `ledger up`, append its "module:function" to `UP_RUNNERS`.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.usage_settings import IngestSettings


@dataclass(frozen=True)
class Runtime:
    database_url: str
    nats_url: str
    data_dir: Path
    ingest: IngestSettings


Runner = Callable[[Runtime, asyncio.Event], Coroutine[Any, Any, None]]

UP_RUNNERS: list[str] = [
    "adapters.usage_runner:run_usage_consumer",
    "adapters.readmodel_process:projections_up_runner",
]


def load_runner(spec: str) -> Runner:
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise ValueError(f"runner {spec!r} must be written as module:function")
    runner: Runner = getattr(importlib.import_module(module_name), attribute)
    return runner


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


async def run_together(runtime: Runtime, runners: list[Runner], stop: asyncio.Event) -> None:
    """Run every runner until `stop` is set or one of them ends; then stop and await all."""
    tasks = [asyncio.create_task(runner(runtime, stop)) for runner in runners]
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    waiter.cancel()
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result

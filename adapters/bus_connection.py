"""Connecting to NATS: one URL, or a cluster's URLs separated by commas."""

from __future__ import annotations

import nats
from nats.aio.client import Client

CONNECT_TIMEOUT_SECONDS = 5.0


def nats_servers(url: str) -> list[str]:
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers or not all(s.startswith(("nats://", "tls://")) for s in servers):
        raise ValueError(f"LEDGER_NATS_URL must be nats://host:port (several separated by "
                         f"commas), got {url!r}")
    return servers


async def connect_nats(url: str, name: str) -> Client:
    """A connection that reconnects forever (to any node of a cluster) rather than give up."""
    return await nats.connect(servers=nats_servers(url), name=name,
                              connect_timeout=CONNECT_TIMEOUT_SECONDS,
                              max_reconnect_attempts=-1)

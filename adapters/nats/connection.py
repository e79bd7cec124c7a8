"""Connecting to NATS: one URL, or a cluster's URLs separated by commas.

`LedgerNatsClient` is nats-py's client with a faster parser for message headers (the stock one
checks each character of each header name in a Python generator). nats-py carries the control
plane (stream and consumers, rejected-subject publishes, single publishes); the per-message
paths of usage ingestion run on
`adapters.nats.wire_client` instead. The replacement parser gives the
same result for the headers NATS and our producers send (`Name: value` lines, names without
whitespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client

from adapters.runtime.settings import CONNECT_TIMEOUT_SECONDS, redacted
from adapters.runtime.settings import nats_servers as nats_servers

# The first connection must succeed within this bound, or the command says so and exits (later
# losses reconnect forever: a cluster node restarting must not stop the ledger).
FIRST_CONNECT_WAIT_SECONDS = 10.0
log = logging.getLogger(__name__)


class BusUnreachableError(ConnectionError):
    """No NATS server answered (or it refused our credentials); the message says which URL."""
# The usage stream partitions accounts with a stream subject transform, new in NATS 2.10.
NATS_SERVER_VERSION_MIN = (2, 10)
_CRLF = b"\r\n"


class LedgerNatsClient(Client):
    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in raw.split(_CRLF):
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            key = name.strip()
            if not key or b" " in key or b"\t" in key or not key.isascii():
                continue
            out[key.decode("ascii")] = value.strip().decode("utf-8", "replace")
        return out


async def connect_nats(url: str, name: str) -> Client:
    """A connection that reconnects forever (to any node of a cluster) rather than give up,
    once it has connected: the first connection is bounded by FIRST_CONNECT_WAIT_SECONDS."""
    servers = nats_servers(url)
    client = LedgerNatsClient()
    problems: list[Exception] = []

    async def on_error(error: Exception) -> None:
        problems.append(error)
        if client.is_connected or client.is_reconnecting:  # before: the caller says it once
            log.warning("NATS %s: %s", name, error)

    try:
        await asyncio.wait_for(
            client.connect(servers=servers, name=name, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                           max_reconnect_attempts=-1, error_cb=on_error),
            FIRST_CONNECT_WAIT_SECONDS)
    except Exception as error:
        with contextlib.suppress(Exception):
            await client.close()
        cause = problems[-1] if problems else error
        raise BusUnreachableError(
            f"cannot connect to NATS at {redacted(url)} within "
            f"{FIRST_CONNECT_WAIT_SECONDS:.0f}s ({str(cause) or type(cause).__name__}); check "
            "LEDGER_NATS_URL (and its user and password) and that the server runs") from None
    await check_server_version(client)
    return client


async def close_nats(client: Client) -> None:
    """Drain a connected client (what was published reaches the server); one that is still
    reconnecting after the server went away cannot drain, and is simply closed."""
    if client.is_closed:
        return
    if client.is_connected:
        await client.drain()
    else:
        await client.close()


async def check_server_version(client: Client) -> None:
    """Refuse a NATS server too old for the usage stream, naming what is needed."""
    version = client.connected_server_version
    if (version.major, version.minor) < NATS_SERVER_VERSION_MIN:
        await client.close()
        needed = ".".join(map(str, NATS_SERVER_VERSION_MIN))
        found = f"{version.major}.{version.minor}.{version.patch}"
        raise RuntimeError(
            f"NATS server {found} is too old: the usage stream partitions accounts with "
            f"subject transforms, which need NATS {needed} or newer with JetStream"
        )

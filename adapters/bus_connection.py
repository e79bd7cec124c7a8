"""Connecting to NATS: one URL, or a cluster's URLs separated by commas.

`LedgerNatsClient` is nats-py's client with a faster parser for message headers (the stock one
checks each character of each header name in a Python generator). nats-py carries the control
plane (stream and consumers, rejected-subject publishes, single publishes); the per-message
paths of usage ingestion run on `adapters.bus_wire` instead. The replacement parser gives the
same result for the headers NATS and our producers send (`Name: value` lines, names without
whitespace).
"""

from __future__ import annotations

from nats.aio.client import Client

CONNECT_TIMEOUT_SECONDS = 5
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


def nats_servers(url: str) -> list[str]:
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers or not all(s.startswith(("nats://", "tls://")) for s in servers):
        raise ValueError(f"LEDGER_NATS_URL must be nats://host:port (several separated by "
                         f"commas), got {url!r}")
    return servers


async def connect_nats(url: str, name: str) -> Client:
    """A connection that reconnects forever (to any node of a cluster) rather than give up."""
    client = LedgerNatsClient()
    await client.connect(servers=nats_servers(url), name=name,
                         connect_timeout=CONNECT_TIMEOUT_SECONDS, max_reconnect_attempts=-1)
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

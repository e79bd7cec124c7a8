"""A small NATS connection for the per-message hot paths: subscribe, receive, publish, ack.

`WireConnection` is an `asyncio.Protocol` on one TCP connection, speaking the client protocol
with `adapters.nats.wire_frames`. What it does and why:

- Handshake: read INFO, send CONNECT (`verbose` off, `headers` and `no_responders` on, user and
  password or token from the URL), then PING; the PONG (or an `-ERR`, e.g. an authorization
  violation, raised as `WireServerError` naming the server's words) ends it.
- Receiving: every complete MSG/HMSG frame goes straight to its subscription's callback, a plain
  function called on the event loop: no task, no queue, no header dict per message.
- Sending: callers join many frames and `write` them at once (a batch of acks is one write), then
  `await drain()`, which waits only while the socket's buffer is above its high-water mark
  (asyncio's pause_writing/resume_writing), so memory stays bounded when the server is slow.
- Liveness: server PINGs are answered at once; our own PING every `PING_INTERVAL_SECONDS`, and
  the connection is declared lost after `PINGS_OUTSTANDING_MAX` unanswered. `flush()` is a
  PING/PONG round trip: everything written before it has reached the server.
- Failure: a lost connection (or a fatal `-ERR`) closes it for good; every later call raises
  `WireConnectionLost` and `on_close` callbacks run, so nothing waits forever. It does not
  reconnect by itself: the owner (the consumer, the publisher) decides what to do, because only
  the owner knows what was in flight. Messages a JetStream consumer delivered but we did not ack
  are delivered again after `ack_wait`; publishes not acknowledged are published again with the
  same `Nats-Msg-Id`.

TLS: for a `tls://` URL, or a server whose INFO says `tls_required`, the connection is upgraded
after INFO (as NATS expects) with the system's default trust store (`SSL_CERT_FILE` and
`SSL_CERT_DIR` are honoured), the same as the nats-py control-plane connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from adapters.nats.connection import nats_servers
from adapters.nats.wire_frames import (
    PING_FRAME,
    PONG_FRAME,
    WireMsg,
    WireParser,
    WireProtocolError,
    connect_frame,
    sub_frame,
    unsub_frame,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0
PING_INTERVAL_SECONDS = 10.0
PINGS_OUTSTANDING_MAX = 3
FLUSH_TIMEOUT_SECONDS = 10.0
NATS_PORT_DEFAULT = 4222
# Socket send buffer bounds: above HIGH, writers wait in drain() until it is below LOW.
WRITE_BUFFER_HIGH_BYTES = 4 * 1024 * 1024
WRITE_BUFFER_LOW_BYTES = 1024 * 1024
INBOX_PREFIX = "_INBOX."
INBOX_RANDOM_BYTES = 11
CLIENT_LANGUAGE = "python-ledger-wire"
CLIENT_VERSION = "1"
PROTOCOL_VERSION = 1  # dynamic INFO, headers, no-responders statuses
# -ERR texts after which the server keeps the connection open (NATS client protocol).
NON_FATAL_ERRORS = ("permissions violation",)

MsgCallback = Callable[[WireMsg], None]


class WireError(Exception):
    """The wire connection cannot do what was asked."""


class WireConnectionLost(WireError):
    """The connection is closed (lost, refused or closed by us); open a new one."""


class WireServerError(WireConnectionLost):
    """The server said `-ERR` and closed the connection; the text names the reason."""


def connect_options(url: str, name: str) -> dict[str, Any]:
    """CONNECT options for one server URL, with the credentials it carries."""
    parts = urlsplit(url)
    options: dict[str, Any] = {
        "verbose": False, "pedantic": False, "tls_required": False, "name": name,
        "lang": CLIENT_LANGUAGE, "version": CLIENT_VERSION, "protocol": PROTOCOL_VERSION,
        "headers": True, "no_responders": True, "echo": True,
    }
    if parts.username and parts.password is not None:
        options["user"] = unquote(parts.username)
        options["pass"] = unquote(parts.password)
    elif parts.username:
        options["auth_token"] = unquote(parts.username)
    return options


class WireConnection(asyncio.Protocol):
    def __init__(self, server_url: str, name: str) -> None:
        self.server_url = server_url
        self.name = name
        self.info: dict[str, Any] = {}
        self._parser = WireParser(self)
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._info_arrived: asyncio.Future[None] = self._loop.create_future()
        self._pongs: deque[asyncio.Future[None] | None] = deque()
        self._pings_unanswered = 0
        self._subscriptions: dict[bytes, MsgCallback] = {}
        self._next_sid = 0
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._close_callbacks: list[Callable[[], None]] = []
        self._error: WireConnectionLost | None = None
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._pinger: asyncio.Task[None] | None = None

    # Opening -----------------------------------------------------------------------------------

    @classmethod
    async def connect(cls, url: str, name: str, *, first_server: int = 0) -> WireConnection:
        """Connect to the first server of `url` (comma-separated) that answers, trying them in
        turn from `first_server`; raise `WireConnectionLost` naming each failure."""
        servers = nats_servers(url)
        failures = []
        for offset in range(len(servers)):
            server = servers[(first_server + offset) % len(servers)]
            try:
                return await asyncio.wait_for(cls._open(server, name), CONNECT_TIMEOUT_SECONDS)
            except WireServerError:
                raise  # refused (credentials, limits): another node would refuse too
            except (OSError, TimeoutError, WireError, WireProtocolError) as error:
                failures.append(f"{server}: {error or type(error).__name__}")
        raise WireConnectionLost("could not connect to NATS: " + "; ".join(failures))

    @classmethod
    async def _open(cls, server: str, name: str) -> WireConnection:
        parts = urlsplit(server)
        if parts.scheme not in ("nats", "tls"):
            raise WireError(f"{server}: the wire client speaks nats:// and tls:// only")
        loop = asyncio.get_running_loop()
        _transport, connection = await loop.create_connection(
            lambda: cls(server, name), parts.hostname or "127.0.0.1",
            parts.port or NATS_PORT_DEFAULT)
        try:
            await connection._handshake()
        except BaseException:
            connection.abort()
            raise
        return connection

    async def _handshake(self) -> None:
        await asyncio.wait([self._info_arrived, self._closed],
                           return_when=asyncio.FIRST_COMPLETED)
        self._raise_if_closed()
        parts = urlsplit(self.server_url)
        if parts.scheme == "tls" or self.info.get("tls_required"):
            await self._start_tls(parts.hostname or "127.0.0.1")
        self.write(connect_frame(connect_options(self.server_url, self.name)))
        await self.flush(CONNECT_TIMEOUT_SECONDS)
        self._pinger = self._loop.create_task(self._ping_forever(), name="nats-wire-ping")

    async def _start_tls(self, hostname: str) -> None:
        """Upgrade the socket after INFO; the parser then reads the decrypted stream."""
        if self._transport is None:
            self._raise_if_closed()
            raise WireConnectionLost(f"connection to {self.server_url} is not open")
        context = ssl.create_default_context()
        try:
            upgraded = await self._loop.start_tls(self._transport, self, context,
                                                  server_hostname=hostname)
        except (ssl.SSLError, ConnectionError) as error:
            raise WireError(f"TLS with {self.server_url} failed: {error}") from None
        if upgraded is None:
            raise WireConnectionLost(f"connection to {self.server_url} closed during TLS")
        assert isinstance(upgraded, asyncio.Transport)
        upgraded.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_BYTES,
                                         low=WRITE_BUFFER_LOW_BYTES)
        self._transport = upgraded

    # asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_BYTES,
                                          low=WRITE_BUFFER_LOW_BYTES)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed(data)
        except WireProtocolError as error:
            self._fail(WireConnectionLost(f"{self.server_url}: {error}"))
        except Exception as error:  # a subscriber's callback failed: our bug, never hide it
            log.exception("a NATS message callback failed; closing the wire connection")
            self._fail(WireConnectionLost(f"a message callback failed: {error!r}"))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_drain_waiters()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._error is None:
            reason = f": {exc}" if exc else ""
            self._error = WireConnectionLost(f"connection to {self.server_url} closed{reason}")
        self._transport = None
        if self._pinger is not None:
            self._pinger.cancel()
        for waiter in self._pongs:
            if waiter is not None and not waiter.done():
                waiter.set_exception(self._error)
        self._pongs.clear()
        self._wake_drain_waiters()
        if not self._info_arrived.done():
            self._info_arrived.cancel()
        if not self._closed.done():
            self._closed.set_result(None)
        for callback in self._close_callbacks:
            callback()

    # Frames from the server (WireParser's handler) ---------------------------------------------

    def on_msg(self, sid: bytes, msg: WireMsg) -> None:
        callback = self._subscriptions.get(sid)
        if callback is not None:
            callback(msg)

    def on_ping(self) -> None:
        if self._transport is not None:
            self._transport.write(PONG_FRAME)

    def on_pong(self) -> None:
        self._pings_unanswered = 0
        if self._pongs:
            waiter = self._pongs.popleft()
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def on_ok(self) -> None:
        pass  # only in verbose mode, which we do not ask for

    def on_err(self, text: str) -> None:
        if text.lower().startswith(NON_FATAL_ERRORS):
            log.warning("NATS server %s: %s", self.server_url, text)
            return
        self._fail(WireServerError(f"NATS server {self.server_url} refused: {text!r}"))

    def on_info(self, info: dict[str, Any]) -> None:
        self.info = info
        if not self._info_arrived.done():
            self._info_arrived.set_result(None)

    # Using the connection ----------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        return self._error is not None

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call `callback` (once) when the connection closes, for whatever reason."""
        self._close_callbacks.append(callback)

    def new_inbox(self) -> str:
        return INBOX_PREFIX + secrets.token_hex(INBOX_RANDOM_BYTES)

    def write(self, data: bytes) -> None:
        """Send frames (many joined into one `bytes` is the point); raise if closed."""
        transport = self._transport
        if transport is None or self._error is not None:
            self._raise_if_closed()
            raise WireConnectionLost(f"connection to {self.server_url} is not open")
        transport.write(data)

    async def drain(self) -> None:
        """Wait while the socket's send buffer is over its high-water mark."""
        while self._paused:
            self._raise_if_closed()
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
        self._raise_if_closed()

    def subscribe(self, subject: str, callback: MsgCallback) -> bytes:
        self._next_sid += 1
        sid = str(self._next_sid).encode()
        self._subscriptions[sid] = callback
        self.write(sub_frame(subject.encode(), sid))
        return sid

    def unsubscribe(self, sid: bytes) -> None:
        if self._subscriptions.pop(sid, None) is not None and not self.is_closed:
            self.write(unsub_frame(sid))

    async def flush(self, timeout_seconds: float = FLUSH_TIMEOUT_SECONDS) -> None:
        """A PING/PONG round trip: the server has read everything written before it."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        self.write(PING_FRAME)
        self._pongs.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout_seconds)
        except TimeoutError:
            raise WireConnectionLost(f"no PONG from {self.server_url} within "
                                     f"{timeout_seconds:.0f}s") from None

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def close(self) -> None:
        """Send what is buffered, then close."""
        if self._transport is not None:
            if self._error is None:
                self._error = WireConnectionLost(f"connection to {self.server_url} was closed")
            self._transport.close()
        await self.wait_closed()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # Inside ------------------------------------------------------------------------------------

    def _raise_if_closed(self) -> None:
        if self._error is not None:
            raise self._error

    def _fail(self, error: WireConnectionLost) -> None:
        if self._error is None:
            self._error = error
        log.warning("%s", error)
        if self._transport is not None:
            self._transport.abort()

    def _wake_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _ping_forever(self) -> None:
        while self._transport is not None:
            await asyncio.sleep(PING_INTERVAL_SECONDS)
            if self._pings_unanswered >= PINGS_OUTSTANDING_MAX:
                self._fail(WireConnectionLost(
                    f"{self.server_url} answered none of {PINGS_OUTSTANDING_MAX} PINGs "
                    f"({PING_INTERVAL_SECONDS:.0f}s apart): stale connection"))
                return
            with contextlib.suppress(WireConnectionLost):
                self.write(PING_FRAME)
                self._pongs.append(None)
                self._pings_unanswered += 1

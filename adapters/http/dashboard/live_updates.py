"""Live updates: view messages from the projections, fanned out to the browsers of each team.

The projection runner publishes `ledger.views.{balance,usage,audit}.<team_id>` on NATS after each
batch commits (adapters/nats/views_publisher.py). `LiveHub` holds one subscription to
`ledger.views.>` per app process and, for each message, wakes the server-sent-event streams of
that team; each browser then re-reads its page fragment. Its NATS connection authenticates with
the ledger's NATS settings (LEDGER_NATS_TOKEN, ..._USER/_PASSWORD, NKEY seed, creds file, TLS:
`adapters.nats.auth_settings`), like every other NATS connection of the ledger. A message says
only "this team changed at log position P": the numbers always come from the read models, so a
lost or reordered message costs freshness, never correctness, and several messages in a burst
collapse into one re-read.

Without NATS (no `nats_url`), the hub LISTENs on the channel the event recorder NOTIFYs after
each insert, then re-reads the projections' tracking position a bounded number of times until it
passes the log head seen at that moment, and announces the teams whose audit rows moved past the
last announced position (every event of a team has an audit row). Either way, no browser polls.
The hub follows PostgreSQL too when its NATS user may not subscribe to `ledger.views.>` (the
server refuses the subscription; the log says which permission to grant).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from nats.aio.client import Client
from nats.aio.msg import Msg
from psycopg import sql

from adapters.nats.auth_settings import NatsAuthSettings
from adapters.nats.connection import (
    CONNECTION_ERRORS_KEPT,
    BusCredentialsRefused,
    check_server_version,
    close_nats,
    ledger_inbox_prefix,
    nats_servers,
    subscription_refused,
)
from adapters.nats.view_contract import VIEW_MESSAGES
from adapters.postgres.view_schema import EVENTS_TABLE, LIVE_SCHEMA, TRACKING_NAME
from adapters.runtime.settings import redacted

VIEWS_SUBJECT = "ledger.views.>"
VIEW_KINDS = frozenset(VIEW_MESSAGES)  # the bus contract's view subjects
# A view message is a small JSON object; anything bigger is not ours and is ignored.
VIEW_MESSAGE_BYTES_MAX = 64 * 1024
# Each browser stream keeps at most this many pending notices; older ones are dropped, which
# loses nothing since a notice only asks for a re-read.
STREAM_QUEUE_SIZE_MAX = 8
# Browser streams served by one app process at most; more are refused with 503.
STREAMS_MAX = 1000
# Fallback (no NATS): after a NOTIFY, re-read the tracking position at most this many times,
# this far apart, for the projections to pass the log head.
FALLBACK_REREADS_MAX = 40
FALLBACK_REREAD_SECONDS = 0.05
FALLBACK_RECONNECT_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 10
# At start, give up on NATS after this long and follow PostgreSQL instead.
NATS_START_TIMEOUT_SECONDS = 10.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Notice:
    kind: str  # balance, usage or audit
    position: int


@dataclass
class LiveHub:
    nats_url: str | None
    database_url: str | None
    streams: dict[UUID, set[asyncio.Queue[Notice]]] = field(default_factory=dict)
    nats_start_timeout_seconds: float = NATS_START_TIMEOUT_SECONDS
    # How the hub proves who it is to NATS; None: the environment's settings (LEDGER_NATS_*,
    # as every other NATS connection of the ledger), read when the hub starts.
    nats_auth: NatsAuthSettings | None = None
    received: int = 0
    source: str = "none"
    # Set once the hub listens (NATS subscribed, or PostgreSQL LISTEN in place).
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    _nats: Client | None = None
    # The NATS connection's latest errors (a refused subscription arrives as one).
    _nats_problems: deque[Exception] = field(
        default_factory=lambda: deque(maxlen=CONNECTION_ERRORS_KEPT))
    _task: asyncio.Task[None] | None = None

    # Lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe on NATS; without NATS, or if it cannot be reached at start, follow
        PostgreSQL instead (the API must start even when the bus is down)."""
        if self.nats_url:
            # Outside the `try`: a wrong setting (a missing seed file...) stops the app at start
            # with the variable to fix, as it stops every other process of the ledger.
            auth = self.nats_auth if self.nats_auth is not None else NatsAuthSettings.from_env()
            try:
                self._nats = await self._connect_nats(self.nats_url, auth)
                await self._nats.subscribe(VIEWS_SUBJECT, cb=self._on_message)
                refused = await subscription_refused(self._nats, VIEWS_SUBJECT,
                                                     self._nats_problems)
                if refused is not None:
                    raise BusCredentialsRefused(
                        f"this NATS user may not subscribe to {VIEWS_SUBJECT} ({refused}); "
                        "allow it in the server's permissions for the user")
            except Exception:
                log.warning("dashboard live updates: NATS at %s unreachable or refused us "
                            "(auth: %s); following PostgreSQL instead", redacted(self.nats_url),
                            auth.described(), exc_info=True)
                if self._nats is not None:
                    await self._nats.close()
                self._nats = None
            else:
                self.source = "nats"
                self.listening.set()
        if self._nats is None and self.database_url:
            self._task = asyncio.create_task(self._follow_postgres(self.database_url))
            self.source = "postgres-notify"
        log.info("dashboard live updates from %s", self.source)

    async def _connect_nats(self, url: str, auth: NatsAuthSettings) -> Client:
        """A connection with the ledger's NATS auth settings that reconnects forever once up;
        the first connect is bounded (nats-py would otherwise retry a server that is not there,
        or that refuses our credentials, forever)."""
        client = Client()
        problems = self._nats_problems

        async def on_error(error: Exception) -> None:
            problems.append(error)
            log.warning("dashboard live updates: NATS: %s", error)

        try:
            await asyncio.wait_for(
                client.connect(servers=nats_servers(url), name="ledger-dashboard",
                               inbox_prefix=ledger_inbox_prefix(), error_cb=on_error,
                               connect_timeout=CONNECT_TIMEOUT_SECONDS,
                               max_reconnect_attempts=-1, **auth.connect_options()),
                self.nats_start_timeout_seconds)
            await check_server_version(client)
        except BaseException:
            await client.close()
            raise
        return client

    async def stop(self) -> None:
        if self._nats is not None:
            await close_nats(self._nats)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # Fan-out -------------------------------------------------------------------------------

    def stream_count(self) -> int:
        return sum(len(queues) for queues in self.streams.values())

    @contextlib.asynccontextmanager
    async def stream(self, team_id: UUID) -> AsyncIterator[asyncio.Queue[Notice]]:
        """A queue of notices for one team, registered while the context is open."""
        if self.stream_count() >= STREAMS_MAX:
            raise OverflowError(f"this server already serves {STREAMS_MAX} live streams")
        queue: asyncio.Queue[Notice] = asyncio.Queue(STREAM_QUEUE_SIZE_MAX)
        self.streams.setdefault(team_id, set()).add(queue)
        try:
            yield queue
        finally:
            queues = self.streams.get(team_id, set())
            queues.discard(queue)
            if not queues:
                self.streams.pop(team_id, None)

    def announce(self, team_id: UUID, notice: Notice) -> None:
        for queue in self.streams.get(team_id, ()):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(notice)

    # NATS ----------------------------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        parsed = parse_view_message(msg.subject, msg.data)
        if parsed is None:
            return
        self.received += 1
        team_id, notice = parsed
        self.announce(team_id, notice)

    # PostgreSQL fallback -------------------------------------------------------------------

    async def _follow_postgres(self, database_url: str) -> None:
        while True:
            try:
                await self._listen(database_url)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("dashboard live updates: PostgreSQL LISTEN failed; retrying",
                            exc_info=True)
                await asyncio.sleep(FALLBACK_RECONNECT_SECONDS)

    async def _listen(self, database_url: str) -> None:
        """One connection waits for NOTIFYs (psycopg's `notifies()` holds its connection), the
        other re-reads; a burst of NOTIFYs while re-reading becomes one more re-read."""
        async with await _connect(database_url) as listener, \
                await _connect(database_url) as reader:
            await listener.execute(sql.SQL("LISTEN {c}").format(c=sql.Identifier(EVENTS_TABLE)))
            changed = asyncio.Event()
            announced = await self._tracking(reader)
            self.listening.set()

            async def hear() -> None:
                async for _ in listener.notifies():
                    changed.set()

            async def announce(position: int) -> None:
                while True:
                    await changed.wait()
                    changed.clear()
                    position = await self._announce_projected(reader, position)

            async with asyncio.TaskGroup() as group:
                group.create_task(hear())
                group.create_task(announce(announced))

    async def _announce_projected(self, conn: psycopg.AsyncConnection[Any],
                                  announced: int) -> int:
        """Wait (bounded) for the projections to pass the head, then announce changed teams."""
        cur = await conn.execute(
            sql.SQL("SELECT coalesce(max(notification_id), 0) FROM public.{t}").format(
                t=sql.Identifier(EVENTS_TABLE)))
        head_row = await cur.fetchone()
        head = int(head_row[0]) if head_row else 0
        position = await self._tracking(conn)
        for _ in range(FALLBACK_REREADS_MAX):
            if position >= head:
                break
            await asyncio.sleep(FALLBACK_REREAD_SECONDS)
            position = await self._tracking(conn)
        if position <= announced:
            return announced
        cur = await conn.execute(
            sql.SQL("SELECT DISTINCT team_id FROM {s}.audit WHERE position > %s AND "
                    "position <= %s AND team_id IS NOT NULL").format(
                s=sql.Identifier(LIVE_SCHEMA)), (announced, position))
        for (team_id,) in await cur.fetchall():
            self.received += 1
            self.announce(team_id, Notice("usage", position))
        return position

    @staticmethod
    async def _tracking(conn: psycopg.AsyncConnection[Any]) -> int:
        cur = await conn.execute(
            sql.SQL("SELECT notification_id FROM {s}.tracking WHERE name = %s").format(
                s=sql.Identifier(LIVE_SCHEMA)), (TRACKING_NAME,))
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def _connect(database_url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(database_url, autocommit=True,
                                                 connect_timeout=CONNECT_TIMEOUT_SECONDS)


def parse_view_message(subject: str, data: bytes) -> tuple[UUID, Notice] | None:
    """(team, notice) from a view message, or None for anything that is not one."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[:2] != ["ledger", "views"] or parts[2] not in VIEW_KINDS:
        return None
    if len(data) > VIEW_MESSAGE_BYTES_MAX:
        return None
    try:
        team_id = UUID(parts[3])
        payload = json.loads(data)
        position = int(payload.get("position", 0)) if isinstance(payload, dict) else 0
    except (ValueError, TypeError):
        return None
    return team_id, Notice(parts[2], position)


def sse_event(notice: Notice) -> str:
    """One server-sent event: the view that changed and the log position it reflects."""
    return f"event: {notice.kind}\ndata: {json.dumps({'position': notice.position})}\n\n"

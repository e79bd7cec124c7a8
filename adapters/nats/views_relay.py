"""The relay of the views outbox to the JetStream stream `LEDGER_VIEWS`.

The projection writes each batch's `ledger.views.*` messages into an outbox in the batch's own
transaction (adapters/postgres/view_outbox.py). This relay, running in a thread next to the
projection runner, reads the outbox in order, publishes the rows to JetStream, waits for the
stream's acknowledgements, then marks the rows relayed (the outbox deletes them). A round's rows
are published in waves (`relay_waves`): many acknowledgements in flight, but at most one per
subject, so each subject's messages are stored in outbox order. So:

- nothing is lost while NATS is down: the rows wait, the relay retries by the one backoff rule
  (`services.backoff`, `RELAY_BACKOFF`), and publishes them in order once NATS is back;
- a relay that dies between publishing and marking publishes the same rows again with the same
  `Nats-Msg-Id` (subject and log position): the stream drops the repeats inside its duplicate
  window (`VIEWS_DUPLICATE_WINDOW_SECONDS`);
- the stream keeps the last `VIEWS_HISTORY_PER_SUBJECT` messages of each subject, in files: a
  consumer that starts late asks for the last message per subject (DeliverPolicy
  LAST_PER_SUBJECT) and gets every team's current views at once; a durable consumer that falls
  behind catches up from its own cursor, as far back as that history goes.

The runner's after-commit call (`publish`, the `ChangePublisher` port) only wakes the relay; a
poll every `RELAY_IDLE_SECONDS` is the fallback. Messages published to a stream are delivered to
core subscribers of the subject too, so the dashboard's live updates (a core subscription on
`ledger.views.>`) see them as before.

The connection is a faststream `NatsBroker` (nats-py underneath) with nats-py's own reconnecting
turned off: a lost connection is dropped and made again by the relay's backoff, so one rule
governs every retry and a publish never sits in a client buffer while the server is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from faststream.nats import NatsBroker
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from adapters.nats.auth_settings import NatsAuthSettings
from adapters.nats.connection import (
    CONNECTION_ERRORS_KEPT,
    check_inbox_allowed,
    ledger_inbox_prefix,
    nats_servers,
)
from adapters.nats.ingest_settings import IngestSettings
from adapters.nats.relay_waves import publish_in_waves
from adapters.nats.views_publisher import broker_security
from projections.view_messages import OutboxRow, ViewOutbox
from services.backoff import Backoff

VIEWS_STREAM_NAME = "LEDGER_VIEWS"
VIEWS_STREAM_SUBJECTS = ["ledger.views.>"]
# Messages kept per subject (per team and view): the last one is the current state, the others
# a short history for a consumer that falls behind.
VIEWS_HISTORY_PER_SUBJECT = 10
# How long the stream remembers a message id: a relay restarted within it after dying between
# publish and mark adds no duplicate (a later one would add one repeat of the same position).
VIEWS_DUPLICATE_WINDOW_SECONDS = 600.0
# A view message is a few hundred bytes (a usage message lists the local dates a batch touched).
VIEWS_MESSAGE_BYTES_MAX = 1024 * 1024
# Outbox rows read and published per round (then marked relayed together).
RELAY_BATCH_ROWS = 500
# Waits between attempts while NATS (or the outbox's database) is unreachable.
RELAY_BACKOFF = Backoff(first_seconds=0.5, longest_seconds=5.0, jitter=True)
# With nothing to relay, the outbox is read again after this long even without a wake-up.
RELAY_IDLE_SECONDS = 1.0
PUBLISH_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 10
# How long `close` waits for the relay's thread (a publish in flight, then the disconnect).
CLOSE_WAIT_SECONDS = 15.0

log = logging.getLogger(__name__)


def views_stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=VIEWS_STREAM_NAME, subjects=VIEWS_STREAM_SUBJECTS,
        retention=RetentionPolicy.LIMITS, storage=StorageType.FILE, num_replicas=replicas,
        max_msgs_per_subject=VIEWS_HISTORY_PER_SUBJECT, discard=DiscardPolicy.OLD,
        duplicate_window=VIEWS_DUPLICATE_WINDOW_SECONDS, max_msg_size=VIEWS_MESSAGE_BYTES_MAX)


async def ensure_views_stream(js: JetStreamContext, replicas: int = 1) -> None:
    """Create `LEDGER_VIEWS`, or bring an existing one to these settings (a replica count
    changed on a live stream is applied by JetStream in place)."""
    config = views_stream_config(replicas)
    try:
        await js.add_stream(config)
    except BadRequestError:  # it exists with other settings (an older ledger's)
        await js.update_stream(config)


class NatsViewsRelay:
    """Relays an outbox to `LEDGER_VIEWS` from a thread of its own until `close()`."""

    def __init__(self, nats_url: str, outbox: ViewOutbox, *,
                 on_close: Callable[[], None] | None = None,
                 backoff: Backoff = RELAY_BACKOFF, replicas: int | None = None) -> None:
        """`replicas`: copies of `LEDGER_VIEWS` in a cluster; default LEDGER_USAGE_REPLICAS,
        so the views are as durable as the usage they come from."""
        self.nats_url = nats_url
        self.replicas = replicas if replicas is not None else IngestSettings.from_env().replicas
        self.outbox = outbox
        self.backoff = backoff
        self.relayed = 0   # rows published and marked (counters for logs and tests)
        self.failures = 0  # attempts that failed (NATS or the database unreachable)
        self._on_close = on_close
        self._loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="views-relay", daemon=True)
        self._thread.start()

    # The runner's side ---------------------------------------------------------------------

    def publish(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """A batch committed (its messages are in the outbox): relay now, not at the next poll."""
        self._call(self._wake.set)

    def close(self) -> None:
        self._call(self._stop.set)
        self._call(self._wake.set)
        self._thread.join(CLOSE_WAIT_SECONDS)
        if self._thread.is_alive():
            log.warning("the views relay did not stop within %.0fs", CLOSE_WAIT_SECONDS)
        elif self._on_close is not None:
            self._on_close()

    def _call(self, callback: Callable[[], None]) -> None:
        # A loop closed in between (the relay has stopped): nothing left to tell it.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback)

    # The relay's thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._relay_forever())
        finally:
            self._loop.close()

    async def _relay_forever(self) -> None:
        delays: Iterator[float] = self.backoff.delays()
        broker: NatsBroker | None = None
        client: Client | None = None
        while not self._stop.is_set():
            try:
                if broker is None or client is None or not client.is_connected:
                    await self._drop(broker)
                    broker, client = await self._connect()
                relayed = await self._relay_pending(broker)
                delays = self.backoff.delays()
                if not relayed:
                    await self._wait(self._wake, RELAY_IDLE_SECONDS)
            except Exception as error:
                self.failures += 1
                delay = next(delays)
                log.warning("relaying view messages to NATS failed (%s); trying again in %.1fs",
                            error or type(error).__name__, delay)
                await self._drop(broker)
                broker = client = None
                await self._wait(self._stop, delay)
        await self._drop(broker)

    async def _connect(self) -> tuple[NatsBroker, Client]:
        problems: deque[Exception] = deque(maxlen=CONNECTION_ERRORS_KEPT)

        async def on_error(error: Exception) -> None:
            problems.append(error)

        prefix = ledger_inbox_prefix()
        broker = NatsBroker(servers=nats_servers(self.nats_url), name="ledger-views-relay",
                            inbox_prefix=prefix, error_cb=on_error,
                            connect_timeout=CONNECT_TIMEOUT_SECONDS, allow_reconnect=False,
                            security=broker_security(NatsAuthSettings.from_env()))
        try:
            client: Client = await broker.connect()
            await check_inbox_allowed(client, prefix, problems)
            await ensure_views_stream(client.jetstream(), self.replicas)
        except BaseException:
            await self._drop(broker)
            raise
        return broker, client

    async def _relay_pending(self, broker: NatsBroker) -> int:
        """Publish what waits in the outbox, in order, round by round; the rows published."""
        total = 0
        while not self._stop.is_set():
            rows = self.outbox.pending(RELAY_BATCH_ROWS)
            if not rows:
                break
            stored, failure = await publish_in_waves(
                rows, lambda row: self._publish(broker, row))
            if stored:
                self.outbox.mark_relayed(rows[stored - 1].seq)
                self.relayed += stored
                total += stored
            if failure is not None:
                raise failure
        return total

    @staticmethod
    async def _publish(broker: NatsBroker, row: OutboxRow) -> None:
        await broker.publish(row.payload, row.subject, headers={"Nats-Msg-Id": row.message_id},
                             stream=VIEWS_STREAM_NAME, timeout=PUBLISH_TIMEOUT_SECONDS)

    async def _wait(self, event: asyncio.Event, seconds: float) -> None:
        """Until `event` is set or `seconds` pass; a wake-up is used up by the wait."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        if event is self._wake:
            event.clear()

    @staticmethod
    async def _drop(broker: NatsBroker | None) -> None:
        if broker is None:
            return
        try:
            await broker.stop()
        except Exception:
            log.debug("closing the views relay's NATS connection failed", exc_info=True)

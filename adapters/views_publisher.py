"""Publishing read-model changes on NATS after they commit.

The projection runner is synchronous (psycopg); nats-py is asyncio. The publisher owns one event
loop in a daemon thread with one NATS connection, and `publish()` hands it a batch of messages and
waits until they are flushed to the server (bounded by `PUBLISH_TIMEOUT_SECONDS`), so a message
leaves only after its batch committed and before the next batch is read. A NATS outage does not
stop the projections: the failure is logged and counted, and the next change supersedes it (each
message carries the log position and the full current balance).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import nats
from nats.aio.client import Client

PUBLISH_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 10.0

log = logging.getLogger(__name__)


class NatsViewsPublisher:
    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.failures = 0
        self.published = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="views-publisher",
                                        daemon=True)
        self._thread.start()
        self._client: Client = self._run(self._connect(), CONNECT_TIMEOUT_SECONDS)

    async def _connect(self) -> Client:
        return await nats.connect(self.nats_url, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                  max_reconnect_attempts=-1, name="ledger-projections")

    def _run(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def publish(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        if not messages:
            return
        try:
            self._run(self._publish(messages), PUBLISH_TIMEOUT_SECONDS)
            self.published += len(messages)
        except Exception:
            self.failures += 1
            log.exception("publishing %d view changes failed; readers will see the next ones",
                          len(messages))

    async def _publish(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        for subject, payload in messages:
            await self._client.publish(subject, json.dumps(payload, default=str).encode())
        await self._client.flush(timeout=int(PUBLISH_TIMEOUT_SECONDS))

    def close(self) -> None:
        try:
            self._run(self._client.drain(), PUBLISH_TIMEOUT_SECONDS)
        except Exception:
            log.warning("closing the NATS connection of the views publisher failed",
                        exc_info=True)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(PUBLISH_TIMEOUT_SECONDS)

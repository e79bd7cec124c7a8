"""Publishing read-model changes on core NATS through a faststream broker, and the broker's auth.

The projections no longer use `NatsViewsPublisher`: since issue 10 their view messages go through
an outbox and a relay to the JetStream stream `LEDGER_VIEWS` (adapters/nats/views_relay.py,
docs/projections.md), which uses `broker_security` from here. `NatsViewsPublisher` is kept for
callers that want a fire-and-forget core publish (its auth is tested in
tests/integration/test_nats_auth.py); what follows describes it.

The projection runner is synchronous (psycopg); faststream is asyncio. The publisher owns one
event loop in a daemon thread with one `NatsBroker`, and `publish()` hands it a batch of messages
and waits until they are flushed to the server (a PING/PONG on the broker's connection, bounded
by `PUBLISH_TIMEOUT_SECONDS`), so a message leaves only after its batch committed and before the
next batch is read. A NATS outage does not stop the projections: the failure is logged and
counted, and the next change supersedes it (each message carries the log position and the full
current balance). The usage hot path does not use faststream: see docs/ingestion.md. The
broker gets the same auth settings as every other connection (`adapters.nats.auth_settings`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.security import (
    NatsCredentials,
    NatsNKey,
    NatsSecurity,
    NatsToken,
    NatsUserPassword,
)
from nats.aio.client import Client

from adapters.nats.auth_settings import NatsAuthSettings
from adapters.nats.connection import ledger_inbox_prefix, nats_servers

PUBLISH_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 10

log = logging.getLogger(__name__)


def broker_security(auth: NatsAuthSettings) -> NatsSecurity | None:
    """The ledger's NATS auth settings in faststream's terms (its `security=` objects)."""
    context = auth.tls_context()
    if auth.user is not None and auth.password is not None:
        return NatsUserPassword(auth.user, auth.password, ssl_context=context)
    if auth.token is not None:
        return NatsToken(auth.token, ssl_context=context)
    if auth.nkey_seed_file is not None:
        return NatsNKey(auth.nkey_seed_file, ssl_context=context)
    if auth.creds_file is not None:
        return NatsCredentials(str(auth.creds_file), ssl_context=context)
    if context is not None:
        return NatsSecurity(ssl_context=context)
    return None


class NatsViewsPublisher:
    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.failures = 0
        self.published = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="views-publisher",
                                        daemon=True)
        self._thread.start()
        self._broker = NatsBroker(servers=nats_servers(nats_url), name="ledger-projections",
                                  inbox_prefix=ledger_inbox_prefix(),
                                  connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                  max_reconnect_attempts=-1,
                                  security=broker_security(NatsAuthSettings.from_env()))
        self._client: Client = self._run(self._broker.connect(), CONNECT_TIMEOUT_SECONDS)

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
            await self._broker.publish(json.dumps(payload, default=str).encode(), subject)
        await self._client.flush(timeout=int(PUBLISH_TIMEOUT_SECONDS))

    def close(self) -> None:
        try:
            self._run(self._broker.stop(), PUBLISH_TIMEOUT_SECONDS)
        except Exception:
            log.warning("closing the NATS connection of the views publisher failed",
                        exc_info=True)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(PUBLISH_TIMEOUT_SECONDS)

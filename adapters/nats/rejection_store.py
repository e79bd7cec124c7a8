"""Rejections stored on their stream once per original message, for good: `RejectionStore`.

The usage consumer (`adapters.nats.usage_consumer`) hands it the records it refused after a
batch committed; what could not be stored is nak'ed there and comes again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from eventsourcing.persistence import IntegrityError

from adapters.nats.usage_contract import rejection_message
from adapters.nats.usage_port import Delivery, RejectionRefused, UsageBus
from adapters.nats.usage_writer import Rejected
from services.keyed_recording import KeyRow
from services.ledger import Ledger

if TYPE_CHECKING:
    from adapters.nats.usage_consumer import IngestStats

log = logging.getLogger(__name__)

# PostgreSQL's lasting record of the rejections published (idempotency-key table).
REJECTION_PUBLISHED_SCOPE = "rejection_published"
# A rejection the broker refused even in its smallest form: its original comes again after this.
REJECTED_RETRY_DELAY_SECONDS = 5.0


class RejectionStore:
    """Publishes rejections to their stream, each once per original message, for good.

    A rejection's id is its original's stream sequence (`rejected:<stream epoch>:<sequence>`,
    the epoch being the stream's creation time, so a recreated stream never reuses one). The
    broker drops a repeat inside its duplicate window; after it, PostgreSQL's record of the
    rejections published (idempotency-key scope `rejection_published`, written after the
    broker acknowledged) keeps a redelivered original from being published again. The one gap:
    a crash between the broker's acknowledgement and that write, with the redelivery coming
    after the window: then the rejection is stored twice (counted once all the same)."""

    def __init__(self, ledger: Ledger, bus: UsageBus, stats: IngestStats) -> None:
        self.ledger = ledger
        self.bus = bus
        self.stats = stats

    def key(self, delivery: Delivery) -> str:
        return f"{self.bus.stream_epoch}:{delivery.stream_sequence}"

    async def store(self, rejected: list[Rejected]) -> set[int]:
        """Publish each rejection not published before; return the ids of the items that
        could not be (their originals are nak'ed and come again)."""
        by_key = {self.key(item.msg): item for item in rejected}
        published_before = await self._published_before(list(by_key))
        unstored: set[int] = set()
        stored: list[str] = []
        for key, item in by_key.items():
            if key in published_before:
                self.stats.rejections_published_before += 1
            elif await self._publish(key, item):
                stored.append(key)
            else:
                unstored.add(id(item))
        if stored:
            await asyncio.to_thread(self._mark_published, stored)
        return unstored

    async def _published_before(self, keys: list[str]) -> set[str]:
        try:
            return set(await asyncio.to_thread(self.ledger.keyed.select_keys,
                                               REJECTION_PUBLISHED_SCOPE, keys))
        except Exception:
            # Not knowing costs at most a second copy after the broker's window; the
            # database being away must not hold the rejections up.
            log.warning("could not read which rejections were published", exc_info=True)
            return set()

    def _mark_published(self, keys: list[str]) -> None:
        """Remember for good that these rejections are stored (another process may have
        marked some of them first: then mark the rest)."""
        try:
            for _attempt in range(2):
                known = self.ledger.keyed.select_keys(REJECTION_PUBLISHED_SCOPE, keys)
                new = [key for key in keys if key not in known]
                if not new:
                    return
                try:
                    self.ledger.save(idempotency_keys=[
                        KeyRow(REJECTION_PUBLISHED_SCOPE, key, "", "published") for key in new])
                    return
                except IntegrityError:
                    continue
        except Exception:
            log.warning("could not record %d published rejections", len(keys), exc_info=True)

    async def _publish(self, key: str, item: Rejected) -> bool:
        """Store one rejection; False (counted, logged) if the broker refused even its
        smallest form."""
        sequence = item.msg.stream_sequence
        for keep_payload in (True, False):
            headers, body = rejection_message(
                item.code, item.message, payload=item.msg.data,
                original_subject=item.msg.subject, original_sequence=sequence,
                original_msg_id=item.msg.msg_id, rejection_id=f"rejected:{key}",
                keep_payload=keep_payload)
            try:
                await self.bus.publish_rejection(headers, body)
                return True
            except RejectionRefused as error:
                self.stats.rejection_publish_failures += 1
                log.warning("the rejection of stream sequence %d (%s) was refused (%s)%s",
                            sequence, item.code, error,
                            "; trying without its payload" if keep_payload else
                            f"; the original comes again in {REJECTED_RETRY_DELAY_SECONDS:.0f}s")
        return False

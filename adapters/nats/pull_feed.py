"""A lean pull loop for one durable JetStream consumer on nats-py's public API.

Why not nats-py's `fetch()`: it waits for every message with `asyncio.wait_for` on a queue and
opens a fresh request (and inbox) per call; measured at ~26 us of client CPU per message against
~8 us here (issue 10). Here one core subscription on an inbox (`Client.subscribe`) stays open,
delivered messages are appended to a buffer by its callback, and a pull request
(`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`, published with `Client.publish(reply=...)`)
for the next batch is open while the current batch is being committed, so the broker's delivery
overlaps with our database work. Messages are acknowledged by publishing `+ACK` to their reply
subject with `Client.publish` (what `Msg.ack()` sends, minus its per-message checks: the hot
path), and settled otherwise with nats-py's own `Msg.nak(delay)` and `Msg.term()`. The JSON of
the pull request, the `$JS.ACK...` reply subject and `+ACK` are the public JetStream protocol
(ADR-13, ADR-15).

Each request gets its own reply subject (`<inbox>.<n>`, all under one subscription): the broker
ends a request with a status message sent to that subject (404 nothing to deliver, 408 expired,
409 consumer gone or a limit hit, 423 pinned to another client; 100 is only a heartbeat), and a
late status of an old request must not end the one open now. A request whose end never came
(the connection dropped and nats-py reconnected) counts as over `REQUEST_GRACE_SECONDS` after it
expired, so a lost status cannot stall the partition.

Priority groups (pinned client): with `group` set, each request names the group and the pin id
this client was given (header `Nats-Pin-Id` of its deliveries); a 423 status means the pin went
to another client, so the id is forgotten and the next request asks to be pinned anew. The
server serves one pinned client per group at a time and moves the pin when the pinned one has
not pulled for the consumer's `priority_timeout`.

Bounds: at most one request (of `batch_size` messages) is open at a time, so the buffer holds at
most two batches; the consumer's `max_ack_pending` bounds it again on the broker's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from adapters.nats.usage_port import BusSessionLost, Delivery

log = logging.getLogger(__name__)

STATUS_HEARTBEAT = "100"
# These end a request without saying anything is wrong.
STATUSES_REQUEST_OVER = ("404", "408")
# The pin went to another client of the priority group: ask to be pinned again.
STATUS_PIN_LOST = "423"
PIN_ID_HEADER = "Nats-Pin-Id"
# The body of a JetStream acknowledgement, published to a delivery's reply subject (ADR-13).
ACK_PAYLOAD = b"+ACK"
STATUS_HEADER = "Status"
DESCRIPTION_HEADER = "Description"
# A request whose closing status never came is taken as over this long after it expired.
REQUEST_GRACE_SECONDS = 1.0
# JetStream ack subjects: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
# and, with domains or account hashes (ADR-15), $JS.ACK.<domain>.<account hash>.<stream>.
# <consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<random token>].
_ACK_TOKENS_V1 = 9
_ACK_TOKENS_V2_MIN = 11
_STREAM_SEQUENCE_V1 = 5
_STREAM_SEQUENCE_V2 = 7


def stream_sequence(reply: str) -> int:
    """The stream sequence of a JetStream delivery, from its reply (ack) subject."""
    tokens = reply.split(".")
    if len(tokens) >= 2 and tokens[0] == "$JS" and tokens[1] == "ACK":
        if len(tokens) == _ACK_TOKENS_V1:
            return int(tokens[_STREAM_SEQUENCE_V1])
        if len(tokens) >= _ACK_TOKENS_V2_MIN:
            return int(tokens[_STREAM_SEQUENCE_V2])
    raise ValueError(f"not a JetStream ack subject: {reply[:200]!r}")


def _msg(delivery: Delivery) -> Msg:
    assert isinstance(delivery.handle, Msg), "settled by the feed that delivered it"
    return delivery.handle


class NatsPullFeed:
    """One partition's deliveries from one durable pull consumer (see the module docstring)."""

    def __init__(self, client: Client, stream: str, consumer: str, batch_size: int, *,
                 group: str | None = None) -> None:
        self.client = client
        self.batch_size = batch_size
        self.group = group
        self.pin_id = ""
        self._request_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._buffer: deque[Delivery] = deque()
        self._arrived = asyncio.Event()
        self._expected = 0  # messages the open request may still deliver; 0: none open
        self._request_deadline = 0.0
        self._inbox = client.new_inbox()
        self._requests = 0
        self._open_reply = ""  # the reply subject of the open request
        self._subscription: Subscription | None = None
        self._trouble = ""  # the last status that ended a request with a problem
        self._first_arrival = 0.0  # when the oldest delivery in the buffer came

    async def start(self) -> NatsPullFeed:
        self._subscription = await self.client.subscribe(f"{self._inbox}.*", cb=self._on_message)
        return self

    async def close(self) -> None:
        """Stop pulling; messages read ahead but not taken go back to the broker at once
        (a nak), instead of waiting out `ack_wait`."""
        with contextlib.suppress(NatsError):
            if self._subscription is not None and not self.client.is_closed:
                await self._subscription.unsubscribe()
            for delivery in self._buffer:
                await _msg(delivery).nak()
        self._buffer.clear()

    async def settle(self, ack: Sequence[Delivery], term: Sequence[Delivery],
                     nak: Sequence[tuple[Delivery, float]]) -> None:
        try:
            publish = self.client.publish
            for delivery in ack:
                # The JetStream ack, published as is (what `Msg.ack()` sends, without its
                # per-message checks): the hot path, one per record.
                await publish(_msg(delivery).reply, ACK_PAYLOAD)
            for delivery in term:
                await _msg(delivery).term()
            for delivery, delay in nak:
                await _msg(delivery).nak(delay=delay)
        except NatsError as error:
            raise BusSessionLost(f"could not settle deliveries of {self._request_subject}: "
                                 f"{error!r}") from None

    async def _on_message(self, msg: Msg) -> None:
        if msg.reply:
            headers = msg.headers
            if self.group is not None and headers and PIN_ID_HEADER in headers:
                self.pin_id = headers[PIN_ID_HEADER]
            if not self._buffer:
                self._first_arrival = time.monotonic()
            self._buffer.append(Delivery(msg.subject, msg.data, headers,
                                         stream_sequence(msg.reply), msg))
            if self._expected > 0:
                self._expected -= 1
            self._arrived.set()
            return
        status = (msg.headers or {}).get(STATUS_HEADER)
        if status is None or status == STATUS_HEARTBEAT or msg.subject != self._open_reply:
            return  # a heartbeat, or the end of a request that is over already
        if status == STATUS_PIN_LOST:
            self.pin_id = ""
        elif status not in STATUSES_REQUEST_OVER:
            trouble = f"{status} {(msg.headers or {}).get(DESCRIPTION_HEADER, '')}"
            if trouble != self._trouble:
                log.warning("pull request on %s ended: %s", self._request_subject, trouble)
            self._trouble = trouble
        self._expected = 0
        self._arrived.set()

    async def _request(self, expires_seconds: float) -> None:
        self._requests += 1
        self._open_reply = f"{self._inbox}.{self._requests}"
        self._expected = self.batch_size
        self._request_deadline = time.monotonic() + expires_seconds + REQUEST_GRACE_SECONDS
        request: dict[str, object] = {"batch": self.batch_size,
                                      "expires": int(expires_seconds * 1e9)}
        if self.group is not None:
            request["group"] = self.group
            if self.pin_id:
                request["id"] = self.pin_id
        try:
            await self.client.publish(self._request_subject, json.dumps(request).encode(),
                                      reply=self._open_reply)
        except NatsError as error:
            self._expected = 0
            raise BusSessionLost(f"could not ask {self._request_subject} for messages: "
                                 f"{error!r}") from None

    async def _wait_arrival(self, seconds: float) -> None:
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), seconds)

    def _request_open(self) -> bool:
        if self._expected > 0 and time.monotonic() > self._request_deadline:
            self._expected = 0  # its end was lost (a reconnect): ask again
        return self._expected > 0

    async def take(self, wait_seconds: float, idle_seconds: float) -> list[Delivery]:
        """Up to `batch_size` deliveries: returns once a batch is full, or `wait_seconds` after
        the first one came, or empty after `idle_seconds` with nothing (so the caller can
        look at its stop flag)."""
        if self.client.is_closed:
            raise BusSessionLost(f"the connection pulling from {self._request_subject} closed")
        if not self._buffer:
            if not self._request_open():
                self._trouble = ""
                await self._request(idle_seconds)
            started = time.monotonic()
            await self._wait_arrival(idle_seconds)
            if not self._buffer:
                if self._trouble:
                    # The broker refused the request (say, the consumer was deleted): do not
                    # ask again at once, in a tight loop.
                    await asyncio.sleep(max(0.0, idle_seconds - (time.monotonic() - started)))
                return []
        # Counted from the oldest delivery's arrival, not from now: what came while the last
        # batch was being committed has waited already (issue 10: latency at a steady rate).
        deadline = self._first_arrival + wait_seconds
        while len(self._buffer) < self.batch_size and self._request_open():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self._wait_arrival(remaining)
        count = min(len(self._buffer), self.batch_size)
        batch = [self._buffer.popleft() for _ in range(count)]
        if self._buffer:
            self._first_arrival = time.monotonic()  # the rest start their wait now
        if not self._request_open():
            # Read ahead: the next batch travels while this one is committed.
            await self._request(idle_seconds)
        return batch

"""The outbox of view messages in PostgreSQL: written with each batch, read by the relay.

The projection writes a batch's `ledger.views.*` messages into `<schema>.outbox` in the batch's
own transaction (`append_outbox`, called by `view_writes.BatchWriter.finish`), so a message exists
exactly when the change it announces committed, whether NATS is up or not. The relay
(adapters/nats/views_relay.py) reads the rows in `seq` order through `PostgresViewOutbox`, on a
connection of its own, publishes them, and then marks them relayed by deleting them: the stream
keeps the history, the table only what is still waiting. A crash between publishing and marking
publishes the rows again, with the same message ids, and the stream drops the repeats.

The table is bounded by `OUTBOX_ROWS_MAX` (projections/view_messages.py): past it, rows
superseded by a newer one on the same subject are dropped first, then the oldest.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from adapters.postgres.view_schema import LIVE_SCHEMA, connect, q
from projections.view_messages import OUTBOX_ROWS_MAX, OutboxRow

log = logging.getLogger(__name__)

_APPEND_OUTBOX = (
    "INSERT INTO {s}.outbox (position, subject, payload) "
    "SELECT %s, m.subject, m.payload FROM unnest(%s::text[], %s::bytea[]) "
    "WITH ORDINALITY AS m(subject, payload, n) ORDER BY m.n"
)
# The span of `seq` is an upper bound of the rows (rolled-back batches leave gaps), read from the
# primary key's two ends; only when it passes the limit are the rows counted.
_OUTBOX_SPAN = "SELECT coalesce(max(seq) - min(seq) + 1, 0) FROM {s}.outbox"
_OUTBOX_COUNT = "SELECT count(*) FROM {s}.outbox"
_DROP_SUPERSEDED = (
    "DELETE FROM {s}.outbox WHERE seq NOT IN (SELECT max(seq) FROM {s}.outbox GROUP BY subject)"
)
_DROP_OLDEST = "DELETE FROM {s}.outbox WHERE seq <= (SELECT max(seq) FROM {s}.outbox) - %s"
_PENDING = "SELECT seq, position, subject, payload FROM {s}.outbox ORDER BY seq LIMIT %s"
_MARK_RELAYED = "DELETE FROM {s}.outbox WHERE seq <= %s"


def append_outbox(cur: psycopg.Cursor[Any], schema: str, position: int,
                  messages: list[tuple[str, bytes]]) -> int:
    """Add a batch's view messages to the outbox, in the batch's transaction, and keep it under
    `OUTBOX_ROWS_MAX`: superseded rows go first, then the oldest. Returns the rows dropped."""
    cur.execute(q(_APPEND_OUTBOX, schema), (position, [m[0] for m in messages],
                                            [m[1] for m in messages]))
    span = cur.execute(q(_OUTBOX_SPAN, schema)).fetchone()
    if span is None or span[0] <= OUTBOX_ROWS_MAX:
        return 0
    count = cur.execute(q(_OUTBOX_COUNT, schema)).fetchone()
    if count is None or count[0] <= OUTBOX_ROWS_MAX:
        return 0
    dropped = cur.execute(q(_DROP_SUPERSEDED, schema)).rowcount
    if count[0] - dropped > OUTBOX_ROWS_MAX:
        dropped += cur.execute(q(_DROP_OLDEST, schema), (OUTBOX_ROWS_MAX,)).rowcount
    log.warning("the views outbox passed %d unrelayed rows (is the relay to NATS running?): "
                "dropped %d superseded or oldest ones", OUTBOX_ROWS_MAX, dropped)
    return dropped


class PostgresViewOutbox:
    """The relay's side of the outbox, on its own connection (opened again after it broke)."""

    def __init__(self, database_url: str, schema: str = LIVE_SCHEMA) -> None:
        self.database_url = database_url
        self.schema = schema
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = connect(self.database_url)
        return self._conn

    def pending(self, limit: int) -> list[OutboxRow]:
        rows = self._connection().execute(q(_PENDING, self.schema), (limit,)).fetchall()
        return [OutboxRow(int(seq), int(position), subject, bytes(payload))
                for seq, position, subject, payload in rows]

    def mark_relayed(self, up_to_seq: int) -> None:
        self._connection().execute(q(_MARK_RELAYED, self.schema), (up_to_seq,))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

"""The Ledger application's notification log in PostgreSQL, as the projections read it."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from adapters.postgres.view_schema import EVENTS_TABLE, connect
from projections.decoding import LogEntry


class PostgresNotificationLog:
    """The Ledger application's notification log, read in pages, with LISTEN for new events.

    Reads go straight to the events table with a binary cursor (the same rows as the library's
    `select_notifications`, about three times faster to fetch); the table and the NOTIFY channel
    are the ones the Ledger application's recorder uses.
    """

    def __init__(self, database_url: str, table: str = EVENTS_TABLE,
                 channel: str | None = None) -> None:
        self.database_url = database_url
        self.table = table
        self.channel = channel or table
        self.conn = connect(database_url)
        self._listener: psycopg.Connection[Any] | None = None
        self._select = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM public.{t} WHERE notification_id > %s AND notification_id <= %s "
            "ORDER BY notification_id LIMIT %s").format(t=sql.Identifier(table))

    def close(self) -> None:
        self.conn.close()
        if self._listener is not None:
            self._listener.close()

    def reconnect(self) -> None:
        """After a lost connection: a new one for reading (the listener is made again lazily)."""
        self.conn.close()
        self.conn = connect(self.database_url)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def read_after(self, position: int, limit: int, stop: int | None = None) -> list[LogEntry]:
        upper = stop if stop is not None else 2**63 - 1
        with self.conn.cursor(binary=True) as cur:
            cur.execute(self._select, (position, upper, limit), prepare=True)
            return list(map(LogEntry._make, cur.fetchall()))

    def head_position(self) -> int:
        row = self.conn.execute(sql.SQL("SELECT coalesce(max(notification_id), 0) FROM "
                                        "public.{t}").format(t=sql.Identifier(self.table))
                                ).fetchone()
        return int(row[0]) if row else 0

    def wait_for_new(self, timeout_seconds: float) -> None:
        """Block until the recorder NOTIFYs (an insert committed) or the timeout passes."""
        if self._listener is None:
            self._listener = connect(self.database_url)
            self._listener.execute(sql.SQL("LISTEN {c}").format(c=sql.Identifier(self.channel)))
            return  # a notify may have been missed before LISTEN: let the caller read again
        # Consume at most one notification; which insert it announces does not matter.
        list(self._listener.notifies(timeout=timeout_seconds, stop_after=1))

"""Read models for HTTP requests: the projections' own store, on a pooled connection.

`PostgresViewStore` holds one connection, which is not safe across the threadpool that runs
FastAPI's request handlers. `views(request)` borrows a connection from the app's pool for one
request and wraps it in `ViewReader`, a `PostgresViewStore` that only reads: its queries (balance,
authorization, usage buckets, invoices, top-ups) are the projections' own, so the API and
`ledger balance` answer from the same code. It never creates tables or writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from fastapi import Request
from psycopg_pool import ConnectionPool

from adapters.postgres.view_schema import LIVE_SCHEMA
from adapters.postgres.view_store import PostgresViewStore

POOL_SIZE_MIN = 1
POOL_SIZE_MAX = 10
POOL_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 10
# A read that takes longer than this is cut off: the API answers 503 instead of piling up.
STATEMENT_TIMEOUT_MS = 5000


class ViewReader(PostgresViewStore):
    """The read side of `PostgresViewStore` on a borrowed connection."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str = LIVE_SCHEMA) -> None:
        # Deliberately not PostgresViewStore.__init__: that one connects, creates the tables
        # and a batch writer, which belongs to the projection runner, not to a request.
        self.database_url = ""
        self.schema = schema
        self.conn = conn

    def close(self) -> None:
        """The connection goes back to the pool; nothing to close here."""


def open_pool(database_url: str, name: str = "ledger-http") -> ConnectionPool[Any]:
    pool: ConnectionPool[Any] = ConnectionPool(
        database_url, min_size=POOL_SIZE_MIN, max_size=POOL_SIZE_MAX, timeout=POOL_TIMEOUT_SECONDS,
        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "application_name": name,
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"},
        name=name, open=True)
    return pool


@contextmanager
def views(request: Request) -> Iterator[ViewReader]:
    """A read-model store for the length of a `with` block (one pooled connection)."""
    pool: ConnectionPool[Any] = request.app.state.pool
    with pool.connection() as conn:
        yield ViewReader(conn)

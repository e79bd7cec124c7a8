"""Dashboard sessions and token last use, in two small tables beside the event store.

A session is what the dashboard's login sets in the `ledger_session` cookie: 256 random bits,
stored (like tokens) only as a SHA-256 digest, pointing at the token the user logged in with. The
token is checked again on every request, so revoking or expiring it ends its sessions at once.

Token last use is bookkeeping, not a business fact, so it is not an event: one row per token,
written at most once per `LAST_USE_WRITE_INTERVAL_SECONDS` per process (a busy service token would
otherwise write on every request).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg_pool import ConnectionPool

SESSION_COOKIE_NAME = "ledger_session"
SESSION_RANDOM_BYTES = 32
SESSION_LIFETIME = timedelta(hours=12)
SESSION_VALUE_LENGTH_MAX = 100
LAST_USE_WRITE_INTERVAL_SECONDS = 60.0
SESSIONS_TABLE = "ledger_http_sessions"
LAST_USE_TABLE = "ledger_token_last_use"

_DDL = [
    f"CREATE TABLE IF NOT EXISTS public.{SESSIONS_TABLE} (session_digest text PRIMARY KEY, "
    "token_id uuid NOT NULL, created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS public.{LAST_USE_TABLE} (token_id uuid PRIMARY KEY, "
    "last_used_at timestamptz NOT NULL)",
]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class SessionStore:
    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool
        self._last_written: dict[UUID, datetime] = {}
        self._lock = threading.Lock()

    def create_tables(self) -> None:
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (SESSIONS_TABLE,))
            for statement in _DDL:
                conn.execute(statement)

    # Sessions --------------------------------------------------------------------------

    def create(self, token_id: UUID, now: datetime) -> str:
        value = secrets.token_urlsafe(SESSION_RANDOM_BYTES)
        with self.pool.connection() as conn:
            # Expired sessions are removed as new ones are made: the table stays small.
            conn.execute(f"DELETE FROM public.{SESSIONS_TABLE} WHERE expires_at < %s", (now,))
            conn.execute(f"INSERT INTO public.{SESSIONS_TABLE} VALUES (%s, %s, %s, %s)",
                         (_digest(value), token_id, now, now + SESSION_LIFETIME))
        return value

    def token_of(self, value: str, now: datetime) -> UUID | None:
        if not value or len(value) > SESSION_VALUE_LENGTH_MAX:
            return None
        with self.pool.connection() as conn:
            row = conn.execute(f"SELECT token_id FROM public.{SESSIONS_TABLE} "
                               "WHERE session_digest = %s AND expires_at > %s",
                               (_digest(value), now)).fetchone()
        return row[0] if row else None

    def end(self, value: str) -> None:
        if not value or len(value) > SESSION_VALUE_LENGTH_MAX:
            return
        with self.pool.connection() as conn:
            conn.execute(f"DELETE FROM public.{SESSIONS_TABLE} WHERE session_digest = %s",
                         (_digest(value),))

    # Last use ---------------------------------------------------------------------------

    def touch(self, token_id: UUID, now: datetime) -> None:
        with self._lock:
            last = self._last_written.get(token_id)
            if last is not None and (now - last).total_seconds() < LAST_USE_WRITE_INTERVAL_SECONDS:
                return
            self._last_written[token_id] = now
        with self.pool.connection() as conn:
            conn.execute(f"INSERT INTO public.{LAST_USE_TABLE} VALUES (%s, %s) "
                         "ON CONFLICT (token_id) DO UPDATE SET last_used_at = "
                         "greatest(EXCLUDED.last_used_at, "
                         f"{LAST_USE_TABLE}.last_used_at)", (token_id, now))

    def last_uses(self) -> dict[UUID, datetime]:
        with self.pool.connection() as conn:
            rows = conn.execute(f"SELECT token_id, last_used_at FROM public.{LAST_USE_TABLE}"
                                ).fetchall()
        return {r[0]: r[1] for r in rows}

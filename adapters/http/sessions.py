"""Dashboard sessions and token last use, in two small tables beside the event store.

A session is what the dashboard's login sets in the `ledger_session` cookie: 256 random bits,
stored (like tokens) only as a SHA-256 digest, pointing at the token the user logged in with. The
token is checked again on every request, so revoking or expiring it ends its sessions at once.

Token last use is bookkeeping, not a business fact, so it is not an event: one row per token.
A request only notes the moment in memory; a background thread writes the noted moments of all
tokens in one statement every `LAST_USE_FLUSH_INTERVAL_SECONDS` (and when the app stops, and
before tokens are listed), so a busy token costs no write per request.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg_pool import ConnectionPool

log = logging.getLogger("ledger.http.sessions")

SESSION_COOKIE_NAME = "ledger_session"
SESSION_RANDOM_BYTES = 32
SESSION_LIFETIME = timedelta(hours=12)
SESSION_VALUE_LENGTH_MAX = 100
LAST_USE_FLUSH_INTERVAL_SECONDS = 60.0
# Tokens noted between two flushes; beyond it a request flushes at once (bounded memory).
LAST_USE_PENDING_MAX = 10_000
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
        self._pending: dict[UUID, datetime] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

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
        """Note that the token was used now; written by the next flush."""
        with self._lock:
            last = self._pending.get(token_id)
            if last is None or last < now:
                self._pending[token_id] = now
            full = len(self._pending) >= LAST_USE_PENDING_MAX
        if full:
            self.flush()

    def flush(self) -> None:
        """Write every noted last use in one statement (the later moment wins)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        ids, moments = list(pending), list(pending.values())
        try:
            with self.pool.connection() as conn:
                conn.execute(f"INSERT INTO public.{LAST_USE_TABLE} "
                             "SELECT * FROM unnest(%s::uuid[], %s::timestamptz[]) "
                             "ON CONFLICT (token_id) DO UPDATE SET last_used_at = "
                             "greatest(EXCLUDED.last_used_at, "
                             f"{LAST_USE_TABLE}.last_used_at)", (ids, moments))
        except Exception:
            with self._lock:  # kept for the next flush, unless newer moments came meanwhile
                for token_id, moment in pending.items():
                    if self._pending.get(token_id, moment) <= moment:
                        self._pending[token_id] = moment
            raise

    def start_flushing(self) -> None:
        """Flush every `LAST_USE_FLUSH_INTERVAL_SECONDS` on a daemon thread until stopped."""
        self._stop.clear()
        self._flusher = threading.Thread(target=self._flush_loop, name="ledger-last-use",
                                         daemon=True)
        self._flusher.start()

    def stop_flushing(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        self.flush()

    def _flush_loop(self) -> None:
        while not self._stop.wait(LAST_USE_FLUSH_INTERVAL_SECONDS):
            try:
                self.flush()
            except Exception:  # kept for the next round; never kill the thread
                log.exception("writing token last use failed")

    def last_uses(self) -> dict[UUID, datetime]:
        self.flush()
        with self.pool.connection() as conn:
            rows = conn.execute(f"SELECT token_id, last_used_at FROM public.{LAST_USE_TABLE}"
                                ).fetchall()
        return {r[0]: r[1] for r in rows}

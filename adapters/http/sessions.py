"""Dashboard sessions and token last use, in two small tables beside the event store.

A session is what the dashboard's login sets in the `ledger_session` cookie: 256 random bits,
stored (like tokens) only as a SHA-256 digest, pointing at the token the user logged in with. The
token is checked again on every request, so revoking or expiring it ends its sessions at once.

Token last use is bookkeeping, not a business fact, so it is not an event: one row per token.
A request only notes the moment in memory; a background thread writes the noted moments of all
tokens in one statement every `LAST_USE_FLUSH_INTERVAL_SECONDS` (and when the app stops, and
before tokens are listed), so a busy token costs no write per request. With several worker
processes a listing cannot flush the other workers' notes, so a token's first use in a process,
and its first use after `LAST_USE_RESOLUTION_SECONDS` without a write, wakes the thread to write
at once: whichever worker lists tokens, a last use is at most that resolution old (and exact
for the uses the listing worker served itself).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
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
LAST_USE_RESOLUTION_SECONDS = 60.0
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
        self._wake = threading.Event()
        # When this process last had each token's use written (monotonic seconds).
        self._written: dict[UUID, float] = {}
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
        """Note that the token was used now; written by the next flush, which is at once when
        this process has not written the token's use for `LAST_USE_RESOLUTION_SECONDS`."""
        moment = time.monotonic()
        with self._lock:
            last = self._pending.get(token_id)
            if last is None or last < now:
                self._pending[token_id] = now
            written = self._written.get(token_id)
            soon = written is None or moment - written >= LAST_USE_RESOLUTION_SECONDS
            if soon:
                if len(self._written) >= LAST_USE_PENDING_MAX:
                    self._written.clear()  # bounded: the cost is a few early writes
                self._written[token_id] = moment
            full = len(self._pending) >= LAST_USE_PENDING_MAX
        if full:
            self.flush()
        elif soon:
            self._wake.set()

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
        self._wake.clear()
        self._flusher = threading.Thread(target=self._flush_loop, name="ledger-last-use",
                                         daemon=True)
        self._flusher.start()

    def stop_flushing(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        self.flush()

    def _flush_loop(self) -> None:
        while True:
            self._wake.wait(LAST_USE_FLUSH_INTERVAL_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                return
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

"""Running admin commands from HTTP: idempotency keys, actors, and what money moved.

Every POST takes an `Idempotency-Key` header. Two layers use it:
- the Ledger's own keys, where a command takes one (then the effect is exactly once, atomically
  with its events); the key is namespaced by the token, so two callers cannot collide;
- the API's response store (`ledger_http_idempotency`): the first answer is kept and a retry with
  the same key and the same request gets it again (header `Idempotent-Replayed: true`); the same
  key with a different request is a 409; a retry while the first is still running is a 409 too.
A request that failed with a problem frees its key, so it can be corrected and retried.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from adapters.http.auth import Principal
from adapters.http.problems import FieldError, ProblemError
from adapters.http.schemas import MoneyMoved, money
from adapters.postgres.view_schema import EVENTS_TABLE
from domain.team import Team
from services.ledger import Ledger

IDEMPOTENCY_TABLE = "ledger_http_idempotency"
IDEMPOTENCY_KEY_LENGTH_MAX = 200
REPLAYED_HEADER = "Idempotent-Replayed"

_DDL = (f"CREATE TABLE IF NOT EXISTS public.{IDEMPOTENCY_TABLE} (token_id uuid NOT NULL, "
        "key text NOT NULL, fingerprint text NOT NULL, status integer NOT NULL, body jsonb, "
        "created_at timestamptz NOT NULL, PRIMARY KEY (token_id, key))")


def create_tables(pool: ConnectionPool[Any]) -> None:
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (IDEMPOTENCY_TABLE,))
        conn.execute(_DDL)


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_LENGTH_MAX or not key.isprintable():
        raise ProblemError(422, "invalid_idempotency_key", "Invalid request",
                           f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LENGTH_MAX} printable "
                           "characters", [FieldError(field="header.Idempotency-Key",
                                                     message="1 to 200 printable characters")])
    return key


def ledger_key(principal: Principal, key: str | None) -> str | None:
    return f"http:{principal.token_id}:{key}" if key is not None else None


def run_idempotent(request: Request, principal: Principal, key: str | None, body: Any,
                   run: Callable[[], tuple[int, Any]]) -> JSONResponse:
    """Run `run` once per (token, key); answer its (status, JSON body), or the stored one."""
    key = check_key(key)
    if key is None:
        status, payload = run()
        return JSONResponse(jsonable_encoder(payload), status_code=status)
    pool: ConnectionPool[Any] = request.app.state.pool
    fingerprint = hashlib.sha256(json.dumps(
        [request.method, request.url.path, body], sort_keys=True, default=str).encode()
    ).hexdigest()
    now: datetime = request.app.state.clock()
    with pool.connection() as conn:
        inserted = conn.execute(
            f"INSERT INTO public.{IDEMPOTENCY_TABLE} VALUES (%s, %s, %s, 0, NULL, %s) "
            "ON CONFLICT DO NOTHING", (principal.token_id, key, fingerprint, now)).rowcount
        if not inserted:
            row = conn.execute(f"SELECT fingerprint, status, body FROM public.{IDEMPOTENCY_TABLE}"
                               " WHERE token_id = %s AND key = %s",
                               (principal.token_id, key)).fetchone()
            if row is None:  # freed by a failed first attempt just now: try once more
                return run_idempotent(request, principal, key, body, run)
            if row[0] != fingerprint:
                raise ProblemError(409, "idempotency_conflict", "Idempotency key reused",
                                   f"Idempotency-Key {key!r} was used for a different request; "
                                   "use a new key for a new request")
            if row[1] == 0:
                raise ProblemError(409, "idempotency_in_progress", "Request in progress",
                                   f"a request with Idempotency-Key {key!r} is still running; "
                                   "retry in a moment")
            return JSONResponse(row[2], status_code=row[1], headers={REPLAYED_HEADER: "true"})
    try:
        status, answer = run()
        payload = jsonable_encoder(answer)
    except BaseException:
        with pool.connection() as conn:
            conn.execute(f"DELETE FROM public.{IDEMPOTENCY_TABLE} WHERE token_id = %s AND "
                         "key = %s AND status = 0", (principal.token_id, key))
        raise
    with pool.connection() as conn:
        conn.execute(f"UPDATE public.{IDEMPOTENCY_TABLE} SET status = %s, body = %s "
                     "WHERE token_id = %s AND key = %s",
                     (status, Jsonb(payload), principal.token_id, key))
    return JSONResponse(payload, status_code=status)


@cache
def _takes_idempotency_key(method: Callable[..., Any]) -> bool:
    return "idempotency_key" in inspect.signature(method).parameters


def call(method: Callable[..., Any], *args: Any, idempotency_key: str | None,
         **kwargs: Any) -> Any:
    """Call a Ledger command, passing the idempotency key where the command takes one."""
    function = getattr(method, "__func__", method)
    if idempotency_key is not None and _takes_idempotency_key(function):
        kwargs["idempotency_key"] = idempotency_key
    return method(*args, **kwargs)


# Money before and after -------------------------------------------------------------------

def team_balance(ledger: Ledger, team: Team) -> tuple[int, int]:
    """(balance, available) from the write side: the team's money and its accounts' spend."""
    spent = sum(ledger.get_account(account_id).spent_nanos for account_id in team.account_ids)
    balance = (sum(team.top_ups.values()) - sum(team.refunds.values())
               + sum(team.adjustments.values()) - spent)
    return balance, balance + team.credit_limit_nanos


def event_position(pool: ConnectionPool[Any], aggregate_id: UUID, after_version: int
                   ) -> int | None:
    """The log position of the aggregate's first event after `after_version`."""
    with pool.connection() as conn:
        row = conn.execute(f"SELECT notification_id FROM public.{EVENTS_TABLE} "
                           "WHERE originator_id = %s AND originator_version > %s "
                           "ORDER BY originator_version LIMIT 1",
                           (aggregate_id, after_version)).fetchone()
    return int(row[0]) if row else None


def money_moved(request: Request, team_id: UUID, run: Callable[[], object]) -> MoneyMoved:
    """Run a team command and say what it did to the balance, with its event's position."""
    ledger: Ledger = request.app.state.ledger
    team = ledger.get_team(team_id)
    version = team.version
    balance_before, available_before = team_balance(ledger, team)
    run()
    after = ledger.get_team(team_id)
    balance_after, available_after = team_balance(ledger, after)
    position = (event_position(request.app.state.pool, team_id, version)
                if after.version > version else None)
    currency = team.currency
    return MoneyMoved(balance_before=money(balance_before, currency),
                      balance_after=money(balance_after, currency),
                      available_before=money(available_before, currency),
                      available_after=money(available_after, currency),
                      event_position=position)

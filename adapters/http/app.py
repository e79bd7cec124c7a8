"""The HTTP application: `create_app(ledger, database_url, ...)` builds the FastAPI app.

One app serves the JSON API under /v1, /healthz, /metrics, /openapi.json and (when its package
is present) the dashboard's pages. Everything it needs is passed in (the composition root, e.g.
`ledger serve`, opens the Ledger and picks the URLs), and kept on `app.state`:

    app.state.ledger        services.ledger.Ledger (commands and aggregates)
    app.state.tokens        services.tokens.Tokens
    app.state.auth          adapters.http.auth.Authenticator (tokens, sessions, and through
                            `auth.aggregates(request)` the version-checked tokens and teams)
    app.state.pool          psycopg_pool.ConnectionPool (use adapters.http.views.views(request))
    app.state.database_url  str
    app.state.nats_url      str | None
    app.state.clock         () -> aware datetime
    app.state.metrics       adapters.http.metrics.Metrics
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from psycopg_pool import ConnectionPool

from adapters.http import commands, problems
from adapters.http.auth import Authenticator
from adapters.http.auth_cache import AuthorizationSource
from adapters.http.metrics import Metrics
from adapters.http.middleware import BodyLimitMiddleware, RequestContextMiddleware
from adapters.http.sessions import SessionStore
from adapters.http.views import open_pool
from adapters.postgres.view_store import PostgresViewStore
from services.ledger import Ledger, utc_now
from services.tokens import Tokens

log = logging.getLogger("ledger.http")

API_TITLE = "Ledger API"
API_VERSION = "1.0.0"
DASHBOARD_ROUTER_MODULE = "adapters.http.dashboard.routes"
# Routes are matched in this order, one pattern after another: the reads a gateway makes all
# day (balance, may-spend, usage) come first (no two modules' paths overlap, so the order
# changes nothing else; the dashboard's pages come after all of them).
API_ROUTER_MODULES = [
    "adapters.http.routes_reads",
    "adapters.http.routes_system",
    "adapters.http.routes_tokens",
    "adapters.http.routes_teams",
    "adapters.http.routes_accounts",
    "adapters.http.routes_packages",
    "adapters.http.routes_usage",
    "adapters.http.routes_billing",
    "adapters.http.routes_auto_recharge",
    "adapters.http.routes_invoices",
]

API_DESCRIPTION = """\
The ledger's HTTP API, version 1.

**Authentication**: `Authorization: Bearer ldg_...` (a token from `ledger token create`).
**Money**: amounts are integer nanos of the team's currency (1 unit = 10^9 nanos) sent as
**decimal strings** (`"12500000000"`), because they exceed 2^53; each comes with a display
amount (`"12.50 USD"`) for people. Never floats.
**Errors**: RFC 9457 `application/problem+json`; `detail` says what to fix, `errors` lists
fields. **Idempotency**: every POST takes an `Idempotency-Key` header; a retry with the same key
and body answers the first answer again, with a different body it is a 409.
**Freshness**: every read says the log `position` it reflects, the `head_position` of the log
and `lag_events` between them.
"""


def create_app(ledger: Ledger, database_url: str, *, nats_url: str | None = None,
               clock: Callable[[], datetime] | None = None,
               include_dashboard: bool = True) -> FastAPI:
    """Build the app around an open Ledger and the database its read models live in."""
    now = clock or utc_now
    pool = open_pool(database_url)
    try:
        sessions = SessionStore(pool)
        _create_tables(database_url, pool)
    except BaseException:
        pool.close()  # the database went away while starting: do not leak the pool's threads
        raise
    tokens = Tokens(ledger, clock=now)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sessions.start_flushing()
        try:
            yield
        finally:
            sessions.stop_flushing()
            pool.close()

    app = FastAPI(title=API_TITLE, version=API_VERSION, description=API_DESCRIPTION,
                  lifespan=lifespan, openapi_url="/openapi.json", docs_url="/docs",
                  redoc_url=None, generate_unique_id_function=operation_id)
    app.state.ledger = ledger
    app.state.tokens = tokens
    app.state.auth = Authenticator(AuthorizationSource(ledger, tokens, pool), sessions, now)
    app.state.pool = pool
    app.state.database_url = database_url
    app.state.nats_url = nats_url
    app.state.clock = now
    app.state.metrics = Metrics.shared()

    problems.install(app)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)

    for name in API_ROUTER_MODULES:
        app.include_router(importlib.import_module(name).router)
    if include_dashboard:
        _include_dashboard(app)
    return app


def _create_tables(database_url: str, pool: ConnectionPool[Any]) -> None:
    # The read models' tables must exist before the first read, even if no runner ran yet.
    PostgresViewStore(database_url).close()
    SessionStore(pool).create_tables()
    commands.create_tables(pool)


def prepare_database(database_url: str) -> None:
    """Create every table the app uses, once, before several worker processes start at once
    (each creates them again: then they exist, which costs nothing)."""
    pool = open_pool(database_url, name="ledger-http-setup")
    try:
        _create_tables(database_url, pool)
    finally:
        pool.close()


def operation_id(route: APIRoute) -> str:
    """Short operation ids for generated clients: `teams_register_team`, `reads_balance`."""
    return f"{route.tags[0]}_{route.name}" if route.tags else route.name


def _include_dashboard(app: FastAPI) -> None:
    try:
        module = importlib.import_module(DASHBOARD_ROUTER_MODULE)
    except ModuleNotFoundError as error:
        if error.name not in (DASHBOARD_ROUTER_MODULE, "adapters.http.dashboard"):
            raise
        log.info("dashboard not installed: %s is missing", DASHBOARD_ROUTER_MODULE)
        return
    app.include_router(module.router)

"""GET /healthz, GET /metrics and GET /v1/me."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlparse

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from adapters.http.auth import Principal, PrincipalDep
from adapters.http.metrics import LedgerCollector, Metrics
from adapters.http.problems import PROBLEM_RESPONSES
from adapters.http.views import views

router = APIRouter()

BUS_CHECK_TIMEOUT_SECONDS = 1.0
# The bus answer is kept this long, so that a busy health checker does not open a connection
# to NATS on every call.
BUS_CHECK_CACHE_SECONDS = 5.0
NATS_DEFAULT_PORT = 4222
# Above this many events behind the log, /healthz says the projections are lagging.
PROJECTION_LAG_WARN_EVENTS = 100_000


class Check(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    status: str = Field(description="`ok`, `degraded` (answers, but something needs care) or "
                        "`down` (the database is unreachable)")
    database: Check
    bus: Check
    projections: Check
    position: int | None = None
    head_position: int | None = None
    lag_events: int | None = None


def _database_and_lag(request: Request) -> tuple[Check, Check, tuple[int, int] | None]:
    try:
        with views(request) as store:
            position, head = store.freshness()
    except Exception as error:  # any failure means "database down", named below
        return (Check(ok=False, detail=f"database unreachable: {type(error).__name__}"),
                Check(ok=False, detail="unknown: the database is unreachable"), None)
    lag = max(head - position, 0)
    projections = Check(ok=lag <= PROJECTION_LAG_WARN_EVENTS,
                        detail=f"{lag} events behind the log")
    return Check(ok=True, detail="reachable"), projections, (position, head)


async def _bus(request: Request) -> Check:
    url = request.app.state.nats_url
    if not url:
        return Check(ok=True, detail="not configured for this process")
    cached: tuple[float, Check] | None = getattr(request.app.state, "bus_check", None)
    if cached is not None and time.monotonic() - cached[0] < BUS_CHECK_CACHE_SECONDS:
        return cached[1]
    check = await _probe_nats(url.split(",")[0])
    request.app.state.bus_check = (time.monotonic(), check)
    return check


async def _probe_nats(url: str) -> Check:
    """Open a TCP connection and read the server's INFO line: proof a NATS server answers."""
    parsed = urlparse(url if "://" in url else f"nats://{url}")
    host, port = parsed.hostname or "127.0.0.1", parsed.port or NATS_DEFAULT_PORT
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                BUS_CHECK_TIMEOUT_SECONDS)
        try:
            line = await asyncio.wait_for(reader.readline(), BUS_CHECK_TIMEOUT_SECONDS)
        finally:
            writer.close()
    except (OSError, TimeoutError) as error:
        return Check(ok=False, detail=f"NATS at {host}:{port} unreachable: "
                     f"{type(error).__name__}")
    if not line.startswith(b"INFO "):
        return Check(ok=False, detail=f"{host}:{port} answered, but not as a NATS server")
    return Check(ok=True, detail=f"NATS at {host}:{port} answers")


@router.get("/healthz", response_model=Health, tags=["system"],
            responses={503: {"model": Health, "description": "The database is unreachable"}})
async def healthz(request: Request) -> Any:
    """Is the service able to answer: database, bus, and how far the read models lag."""
    database, projections, freshness = await asyncio.to_thread(_database_and_lag, request)
    bus = await _bus(request)
    status = "down" if not database.ok else (
        "ok" if bus.ok and projections.ok else "degraded")
    health = Health(status=status, database=database, bus=bus, projections=projections)
    if freshness is not None:
        health.position, health.head_position = freshness
        health.lag_events = max(freshness[1] - freshness[0], 0)
    return JSONResponse(health.model_dump(), status_code=503 if status == "down" else 200)


def _scrape(request: Request) -> bytes:
    app_state = request.app.state

    def freshness() -> tuple[int, int]:
        with views(request) as store:
            return store.freshness()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(app_state.ledger.keyed.counter_values, freshness))
    metrics: Metrics = app_state.metrics
    return metrics.request_metrics() + generate_latest(registry)


@router.get("/metrics", tags=["system"], response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                             "description": "Prometheus text format"}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics: request latency by route, usage outcomes, projection lag."""
    body = await asyncio.to_thread(_scrape, request)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class Me(BaseModel):
    kind: str = Field(description="operator, user or service")
    subject: str = Field(description="the user id, or the service's name")
    token_id: str
    scopes: list[str]


@router.get("/v1/me", response_model=Me, tags=["tokens"], responses=PROBLEM_RESPONSES)
def me(principal: Principal = PrincipalDep) -> Me:
    """Who this token is."""
    return Me(kind=principal.kind.value, subject=principal.subject,
              token_id=str(principal.token_id), scopes=sorted(s.value for s in principal.scopes))

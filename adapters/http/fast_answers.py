"""Answers for the hot read routes without FastAPI's per-request extras.

A read route declared the usual way (a sync handler taking `PrincipalDep`, returning a dict
checked against its `response_model`) pays for two hops to the thread pool (the dependency, then
the handler), the dependency solver, and a second pydantic validation and encoding of an answer
the route built itself. The balance, "may this account spend?" and usage reads are the calls a
gateway makes all day, so they are written as: an `async` handler that makes one hop to the
thread pool (`in_thread`) where the principal is read (`auth.require_principal`, the same check)
and the answer built, returned as JSON bytes here (`json_answer`). Their `response_model` stays
declared, so OpenAPI is unchanged, and the tests validate the answers against it (schemathesis
and tests/http/test_fast_answers.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Any, TypeVar

from fastapi import Response
from starlette.concurrency import run_in_threadpool

from domain.money import format_nanos

T = TypeVar("T")


def money_json(amount_nanos: int, currency: str) -> dict[str, str]:
    """`schemas.Money` as a dict (nanos as a decimal string), without building the model."""
    return {"nanos": str(amount_nanos), "currency": currency,
            "display": format_nanos(amount_nanos, currency)}


def _encode(value: Any) -> str:
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def json_answer(data: dict[str, Any], status_code: int = 200) -> Response:
    """JSON as FastAPI's own JSONResponse writes it (compact, UTF-8, no NaN), dates as ISO."""
    body = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                      default=_encode).encode()
    return Response(body, status_code=status_code, media_type="application/json")


async def in_thread(work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` on the thread pool: the one hop of a lean read (its database calls block)."""
    return await run_in_threadpool(work, *args)

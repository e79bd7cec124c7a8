"""POST /v1/usage: a batch of usage records, the same records and contract as the bus.

Each record goes through the bus contract's own decoder
(`adapters.nats.usage_contract.decode_usage`), so HTTP and the bus accept and refuse exactly the
same records, and then through the same service call (`Ledger.record_usage_batch`), so `usage_id`
keeps its lasting idempotency: the answer says per record `recorded`, `duplicate` or `rejected`
with the reason, and a bad record never blocks the good ones beside it. Limits:
`USAGE_BATCH_RECORDS_MAX` records and `middleware.USAGE_BODY_BYTES_MAX` bytes per body; duplicate
keys in a record are refused.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from adapters.http.auth import Principal, require_scope
from adapters.http.middleware import USAGE_BODY_BYTES_MAX
from adapters.http.problems import PROBLEM_RESPONSES, FieldError, ProblemError
from adapters.http.schemas import Money, money
from adapters.nats.usage_contract import BusRejection, UsageMessage, decode_usage
from domain.tokens import Scope
from domain.usage import UsageRecord
from services.ledger import Ledger

router = APIRouter(tags=["usage"], responses=PROBLEM_RESPONSES)

USAGE_BATCH_RECORDS_MAX = 1000
PublisherDep = Depends(require_scope(Scope.PUBLISH_USAGE))


class RecordResult(BaseModel):
    index: int = Field(description="Position of the record in the batch, from 0")
    usage_id: str | None
    outcome: str = Field(description="recorded, duplicate or rejected")
    code: str | None = Field(default=None, description="Why it was rejected")
    reason: str | None = Field(default=None, description="What to fix")
    cost: Money | None = Field(default=None, description="Cost charged (recorded only)")


class UsageBatchAnswer(BaseModel):
    recorded: int
    duplicates: int
    rejected: int
    results: list[RecordResult]


_RECORD_SCHEMA = UsageMessage.model_json_schema()
_BATCH_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["records"],
    "properties": {"records": {"type": "array", "minItems": 1,
                               "maxItems": USAGE_BATCH_RECORDS_MAX, "items": _RECORD_SCHEMA}},
    "description": f"At most {USAGE_BATCH_RECORDS_MAX} records and {USAGE_BODY_BYTES_MAX} bytes. "
                   "Each record is validated on its own: a bad one is answered as rejected, the "
                   "others are recorded.",
}


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate keys {repeated}")
    return dict(pairs)


def _invalid(detail: str, field: str = "body") -> ProblemError:
    return ProblemError(422, "invalid_batch", "Invalid usage batch", detail,
                        [FieldError(field=field, message=detail)])


def _records_of(body: bytes) -> list[Any]:
    try:
        data = json.loads(body, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError) as error:
        raise _invalid(f"the body is not valid JSON ({error}); send "
                       '{"records": [ ...usage records... ]}') from None
    if not isinstance(data, dict) or set(data) != {"records"}:
        raise _invalid('the body must be an object with one field, "records": a list')
    records = data["records"]
    if not isinstance(records, list) or not records:
        raise _invalid('"records" must be a non-empty list of usage records', "body.records")
    if len(records) > USAGE_BATCH_RECORDS_MAX:
        raise _invalid(f"a batch holds at most {USAGE_BATCH_RECORDS_MAX} records, got "
                       f"{len(records)}; split it", "body.records")
    return records


@router.post("/v1/usage", response_model=UsageBatchAnswer,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": _BATCH_SCHEMA}}}})
async def post_usage(request: Request, principal: Principal = PublisherDep) -> Any:
    """Record a batch of usage (services with scope `usage:publish`, operators).

    An `Idempotency-Key` header is accepted but not needed: each record's `usage_id` is its
    idempotency key, kept for good, so resending a batch records nothing twice."""
    records = _records_of(await request.body())
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_record, request, records)


def _record(request: Request, raw_records: list[Any]) -> dict[str, Any]:
    ledger: Ledger = request.app.state.ledger
    results: list[dict[str, Any] | None] = [None] * len(raw_records)
    valid: list[tuple[int, UsageRecord]] = []
    for index, raw in enumerate(raw_records):
        decoded = decode_usage(json.dumps(raw).encode(), None)
        if isinstance(decoded, BusRejection):
            results[index] = {"index": index, "usage_id": decoded.usage_id,
                              "outcome": "rejected", "code": decoded.code,
                              "reason": decoded.message}
        else:
            valid.append((index, decoded))
    if valid:
        outcome = ledger.record_usage_batch([record for _, record in valid])
        by_id: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        currencies: dict[Any, str] = {}
        for recorded in outcome.recorded:
            if recorded.team_id not in currencies:
                currencies[recorded.team_id] = ledger.get_team(recorded.team_id).currency
            by_id[recorded.usage_id].append({
                "outcome": "recorded",
                "cost": money(recorded.cost_nanos, currencies[recorded.team_id]).model_dump()})
        for usage_id in outcome.duplicates:
            by_id[usage_id].append({"outcome": "duplicate"})
        for rejection in outcome.rejections:
            by_id[rejection.usage_id].append({"outcome": "rejected", "code": rejection.code,
                                              "reason": rejection.message})
        for index, record in valid:
            queue = by_id[record.usage_id]
            assert queue, f"the service answered nothing for usage_id {record.usage_id!r}"
            results[index] = {"index": index, "usage_id": record.usage_id, **queue.popleft()}
    final = [r for r in results if r is not None]
    counts = {name: sum(1 for r in final if r["outcome"] == name)
              for name in ("recorded", "duplicate", "rejected")}
    metric = request.app.state.metrics.usage_records
    for name, count in counts.items():
        if count:
            metric.labels(name).inc(count)
    return {"recorded": counts["recorded"], "duplicates": counts["duplicate"],
            "rejected": counts["rejected"], "results": final}

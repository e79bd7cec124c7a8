"""Benchmark: the hardened usage decoder against the one it replaced, in the same process.

    uv run python bench/decode_usage.py [--records 20000] [--rounds 7]

The old decoder (before issue 8: size check, pydantic, subject check, domain record) is kept
below as it was, so both run on the same records, interleaved round by round, in one process:
machine noise hits both alike and the ratio is what to read. Three variants are timed on the
same compact JSON the publisher sends:

- old:            `decode_usage` as it was;
- new:            `bus_contract.decode_usage` with no `Nats-Msg-Id` (the HTTP API's case);
- new + msg id:   the consumer's case: the header is checked against the content digest.

And the schema step alone, both ways the decoder can take it (2026-12-04): the frozen
`UsageMessage` model then the domain record (how every record was read before), against the
`UsageFields` dict then the domain record (how an accepted record is read now).

Also timed: the slow duplicate-key path, forced by commas inside string fields (a producer's
model name with commas), to show what a record pays when the fast check cannot decide.

Prints the best and median round's CPU microseconds per record for each (process CPU time, so
other processes on a shared machine disturb it less than wall time), and the ratios new/old.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from pydantic import TypeAdapter, ValidationError

from adapters.nats.ingest_settings import MESSAGE_BYTES_MAX
from adapters.nats.usage_contract import (
    BusRejection,
    UsageFields,
    UsageMessage,
    decode_usage,
    usage_message_id,
    usage_subject,
)
from adapters.runtime.demo import PricedAccount, realistic_record
from domain.errors import InvalidUsageError
from domain.pricing import PriceTerms
from domain.usage import UsageRecord

FIELDS = TypeAdapter(UsageFields)
TERMS = PriceTerms(request_nanos=1, input_token_nanos=1, cached_input_token_nanos=1,
                   output_token_nanos=1)


def old_decode_usage(payload: bytes, subject_account: str | None) -> UsageRecord | BusRejection:
    """The decoder before issue 8 (its happy path is all a valid record ever took)."""
    if len(payload) > MESSAGE_BYTES_MAX:
        return BusRejection("too_large", "too large")
    try:
        message = UsageMessage.model_validate_json(payload)
    except ValidationError as error:
        return BusRejection("invalid_record", str(error))
    if subject_account is not None and subject_account != str(message.account_id):
        return BusRejection("subject_mismatch", usage_subject(message.account_id))
    try:
        return message.to_record()
    except InvalidUsageError as error:
        return BusRejection("invalid_record", str(error), message.usage_id)


Item = tuple[bytes, str, str]  # payload, subject account, message id


def make_items(count: int, commas: bool) -> list[Item]:
    rng = random.Random(7)
    accounts = [PricedAccount(uuid4(), TERMS) for _ in range(100)]
    now = datetime.now(UTC)
    items = []
    for i in range(count):
        record = realistic_record(rng, accounts[i % len(accounts)], f"bench-{i}",
                                  now - timedelta(seconds=i % 3600))
        if commas:
            record = replace(record, model=f"{record.model},v2,eu")
        message = UsageMessage.from_record(record)
        items.append((message.to_json(), str(record.account_id), usage_message_id(message)))
    return items


def time_round(items: list[Item], run: Callable[[Item], object]) -> float:
    """CPU microseconds per record of this process (other processes' load does not count)."""
    started = time.process_time()
    for item in items:
        run(item)
    return (time.process_time() - started) / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    now = datetime.now(UTC)
    plain = make_items(args.records, commas=False)
    with_commas = make_items(args.records, commas=True)
    variants: dict[str, tuple[list[Item], Callable[[Item], object]]] = {
        "old": (plain, lambda i: old_decode_usage(i[0], i[1])),
        "new": (plain, lambda i: decode_usage(i[0], i[1], now=now)),
        "new + msg id": (plain, lambda i: decode_usage(i[0], i[1], msg_id=i[2], now=now)),
        "old, commas in model": (with_commas, lambda i: old_decode_usage(i[0], i[1])),
        "new + msg id, commas in model": (
            with_commas, lambda i: decode_usage(i[0], i[1], msg_id=i[2], now=now)),
        "schema: model, then record": (
            plain, lambda i: UsageMessage.model_validate_json(i[0]).to_record()),
        "schema: fields, then record": (
            plain, lambda i: UsageRecord(**FIELDS.validate_json(i[0]))),
    }
    for items, run in variants.values():  # every variant accepts every record
        assert all(isinstance(run(item), UsageRecord) for item in items[:100])
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (items, run) in variants.items():
            times[name].append(time_round(items, run))
    best = {name: min(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:32s} best {best[name]:6.2f} us/record  median "
              f"{statistics.median(values):6.2f}")
    print(f"ratio new/old:                    {best['new'] / best['old']:.2f}")
    print(f"ratio new + msg id / old:         {best['new + msg id'] / best['old']:.2f}")
    print("ratio slow duplicate path / old:  "
          f"{best['new + msg id, commas in model'] / best['old, commas in model']:.2f}")
    print("ratio schema fields / model:      "
          f"{best['schema: fields, then record'] / best['schema: model, then record']:.2f}")


if __name__ == "__main__":
    main()

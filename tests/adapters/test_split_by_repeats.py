"""The writer's grouping: each usage_id once per group, so the service's answer per usage_id maps
back to exactly one message; the n-th copy of an id goes to the n-th group, in order."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from adapters.nats.usage_port import Delivery
from adapters.nats.usage_writer import split_by_repeats
from domain.usage import UsageRecord

ACCOUNT = uuid4()


def item(usage_id: str, sequence: int) -> tuple[Delivery, UsageRecord]:
    record = UsageRecord(usage_id=usage_id, account_id=ACCOUNT,
                         occurred_at=datetime(2026, 12, 1, tzinfo=UTC), model="m", success=True,
                         input_tokens=1, output_tokens=1)
    return Delivery("ledger.usage.v1.x", b"{}", None, sequence, None), record


def ids(groups: list[list[tuple[Delivery, UsageRecord]]]) -> list[list[tuple[str, int]]]:
    return [[(r.usage_id, d.stream_sequence) for d, r in group] for group in groups]


def test_no_repeats_is_one_group_in_order_and_nothing_is_no_group() -> None:
    assert ids(split_by_repeats([item("a", 1), item("b", 2), item("c", 3)])) == [
        [("a", 1), ("b", 2), ("c", 3)]]
    assert split_by_repeats([]) == []


def test_the_nth_copy_of_an_id_goes_to_the_nth_group() -> None:
    items = [item("a", 1), item("b", 2), item("a", 3), item("a", 4), item("c", 5),
             item("b", 6)]
    assert ids(split_by_repeats(items)) == [[("a", 1), ("b", 2), ("c", 5)],
                                            [("a", 3), ("b", 6)], [("a", 4)]]

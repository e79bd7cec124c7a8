"""The same contract on both application recorders: the in-memory one and PostgreSQL's.

Each case runs on `InMemoryLedgerRecorder` and on `LedgerPostgresRecorder` (the `ledger` fixture
of tests/conftest.py opens the Ledger on each, PostgreSQL being the embedded test server), so the
fast tests cannot drift from the real store: events in aggregate sequence, the notification log
in insert order, refused inserts that write nothing, idempotency key rows, rejections, counters,
the max notification id, and subscribers woken by an insert.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import ApplicationRecorder, IntegrityError, StoredEvent

from domain.errors import IdempotencyConflictError
from services.keyed_recording import KeyedRecorder, KeyRow, RejectionRow
from services.ledger import Ledger
from tests.services.support import OWNER

TOPIC = "tests.services.test_recorder_contract:Thing"
SUBSCRIBER_WAIT_SECONDS = 20.0
ACCOUNT_ID = UUID("00000000-0000-4000-8000-000000000001")


def stored(originator_id: UUID, version: int, body: str = "{}") -> StoredEvent:
    return StoredEvent(originator_id=originator_id, originator_version=version, topic=TOPIC,
                       state=body.encode())


def rejection(usage_id: str) -> RejectionRow:
    return RejectionRow(usage_id, str(ACCOUNT_ID), "unknown_account",
                        f"no account for {usage_id}", "f" * 32, datetime(2026, 12, 1, tzinfo=UTC))


def recorders(ledger: Ledger) -> tuple[ApplicationRecorder, KeyedRecorder]:
    return ledger.recorder, ledger.keyed


def test_events_are_selected_in_aggregate_sequence(ledger: Ledger) -> None:
    recorder, _ = recorders(ledger)
    first, second = uuid4(), uuid4()
    recorder.insert_events([stored(first, 1), stored(second, 1), stored(first, 2),
                            stored(first, 3, '{"n":3}')])
    assert [e.originator_version for e in recorder.select_events(first)] == [1, 2, 3]
    assert [e.originator_version for e in recorder.select_events(first, gt=1, lte=2)] == [2]
    assert [e.originator_version for e in recorder.select_events(first, desc=True, limit=2)
            ] == [3, 2]
    assert recorder.select_events(first, gt=2)[0].state == b'{"n":3}'
    assert [e.originator_version for e in recorder.select_events(second)] == [1]


def test_notifications_follow_insert_order_and_insert_returns_their_ids(ledger: Ledger) -> None:
    recorder, _ = recorders(ledger)
    assert recorder.max_notification_id() is None
    ids = [uuid4() for _ in range(3)]
    first_ids = recorder.insert_events([stored(ids[0], 1), stored(ids[1], 1)])
    second_ids = recorder.insert_events([stored(ids[2], 1), stored(ids[0], 2)])
    assert first_ids is not None and second_ids is not None
    returned = [*first_ids, *second_ids]
    assert returned == sorted(returned) and len(set(returned)) == 4
    notifications = recorder.select_notifications(start=None, limit=10)
    assert [n.id for n in notifications] == returned
    assert [(n.originator_id, n.originator_version) for n in notifications] == [
        (ids[0], 1), (ids[1], 1), (ids[2], 1), (ids[0], 2)]
    assert recorder.max_notification_id() == returned[-1]
    later = recorder.select_notifications(start=returned[1], limit=2, inclusive_of_start=False)
    assert [n.id for n in later] == returned[2:4]


def test_an_event_version_taken_twice_refuses_the_whole_insert(ledger: Ledger) -> None:
    recorder, keyed = recorders(ledger)
    taken = uuid4()
    recorder.insert_events([stored(taken, 1)])
    with pytest.raises(IntegrityError):
        recorder.insert_events([stored(uuid4(), 1), stored(taken, 1)],
                               idempotency_keys=[KeyRow("usage", "req-1", "fp", "")],
                               counters={"usage_recorded": 1})
    assert recorder.max_notification_id() == 1
    assert keyed.select_keys("usage", ["req-1"]) == {}
    assert keyed.counter_values().get("usage_recorded", 0) == 0


def test_idempotency_keys_are_stored_with_the_events_and_taken_once(ledger: Ledger) -> None:
    recorder, keyed = recorders(ledger)
    row = KeyRow("usage", "req-1", "fingerprint-1", "")
    recorder.insert_events([stored(uuid4(), 1)], idempotency_keys=[row])
    assert keyed.select_keys("usage", ["req-1", "req-unknown"]) == {"req-1": row}
    assert keyed.select_keys("other-scope", ["req-1"]) == {}
    before = recorder.max_notification_id()
    with pytest.raises(IntegrityError):
        recorder.insert_events([stored(uuid4(), 1)],
                               idempotency_keys=[KeyRow("usage", "req-1", "fingerprint-2", "")])
    with pytest.raises(IntegrityError):  # the same key twice in one insert
        recorder.insert_events([stored(uuid4(), 1)],
                               idempotency_keys=[KeyRow("usage", "req-2", "a", ""),
                                                 KeyRow("usage", "req-2", "a", "")])
    assert recorder.max_notification_id() == before
    assert keyed.select_keys("usage", ["req-1", "req-2"]) == {"req-1": row}


def test_keys_rejections_and_counters_may_be_stored_without_events(ledger: Ledger) -> None:
    recorder, keyed = recorders(ledger)
    extras: dict[str, Any] = {
        "idempotency_keys": [KeyRow("usage_rejection", "k", "fp", "unknown_account")],
        "usage_rejections": [rejection("req-1")],
        "counters": {"usage_rejected": 1},
    }
    recorder.insert_events([], **extras)
    assert recorder.max_notification_id() is None
    assert list(keyed.select_keys("usage_rejection", ["k"])) == ["k"]
    assert [r.usage_id for r in keyed.select_rejections(limit=10)] == ["req-1"]
    assert keyed.counter_values() == {"usage_rejected": 1}


def test_rejections_are_read_oldest_first_within_the_limit(ledger: Ledger) -> None:
    recorder, keyed = recorders(ledger)
    recorder.insert_events([], usage_rejections=[rejection("req-1"), rejection("req-2")])
    recorder.insert_events([], usage_rejections=[rejection("req-3")])
    latest = keyed.select_rejections(limit=2)
    assert [r.usage_id for r in latest] == ["req-2", "req-3"]
    assert latest[-1] == rejection("req-3")


def test_counters_add_up_across_inserts(ledger: Ledger) -> None:
    recorder, keyed = recorders(ledger)
    recorder.insert_events([stored(uuid4(), 1)], counters={"a": 2, "b": 1})
    recorder.insert_events([], counters={"a": 3})
    assert keyed.counter_values() == {"a": 5, "b": 1}


def test_a_command_key_replays_its_result_and_refuses_other_arguments(ledger: Ledger) -> None:
    team_id = ledger.register_team(team_key="acme", name="Acme", currency="USD",
                                   timezone="UTC", actor=OWNER, idempotency_key="k1")
    again = ledger.register_team(team_key="acme", name="Acme", currency="USD",
                                 timezone="UTC", actor=OWNER, idempotency_key="k1")
    assert again == team_id
    with pytest.raises(IdempotencyConflictError):
        ledger.register_team(team_key="other", name="Other", currency="USD", timezone="UTC",
                             actor=OWNER, idempotency_key="k1")


@pytest.mark.timeout(60)
def test_an_insert_wakes_a_subscriber(ledger: Ledger) -> None:
    recorder, _ = recorders(ledger)
    recorder.insert_events([stored(uuid4(), 1)])
    arrived: list[int] = []
    with recorder.subscribe(gt=recorder.max_notification_id()) as subscription:
        def read_one() -> None:
            arrived.append(next(subscription).id)

        reader = threading.Thread(target=read_one, daemon=True)
        reader.start()
        inserted = recorder.insert_events([stored(uuid4(), 1)])
        reader.join(SUBSCRIBER_WAIT_SECONDS)
    assert inserted is not None
    assert arrived == list(inserted)

"""The views relay's waves: many publishes in flight, never two of one subject, each subject's
messages in outbox order, and on a failure the stored prefix (what the relay may mark)."""

from __future__ import annotations

import asyncio

from adapters.nats.relay_waves import publish_in_waves, waves
from projections.view_messages import OutboxRow


def rows(*subjects: str) -> list[OutboxRow]:
    return [OutboxRow(seq=seq, position=100 + seq, subject=subject, payload=b"{}")
            for seq, subject in enumerate(subjects, start=1)]


def test_wave_n_holds_the_nth_row_of_each_subject_in_outbox_order() -> None:
    round_ = rows("a", "b", "a", "c", "a", "b")
    assert [[r.seq for r in wave] for wave in waves(round_)] == [[1, 2, 4], [3, 6], [5]]
    assert waves([]) == []


class Recorder:
    """A stream stand-in: records the store order, checks one in flight per subject, and
    fails the rows it is told to."""

    def __init__(self, failing: set[int] | None = None) -> None:
        self.stored: list[int] = []
        self.in_flight: set[str] = set()
        self.most_in_flight = 0
        self.failing = failing or set()

    async def publish(self, row: OutboxRow) -> None:
        assert row.subject not in self.in_flight, "two messages of one subject in flight"
        self.in_flight.add(row.subject)
        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
        await asyncio.sleep(0)  # the acknowledgement's round trip: others go out meanwhile
        self.in_flight.discard(row.subject)
        if row.seq in self.failing:
            raise TimeoutError(f"no acknowledgement for row {row.seq}")
        self.stored.append(row.seq)


async def test_a_round_goes_out_in_waves_and_every_subject_stays_in_order() -> None:
    round_ = rows("a", "b", "a", "c", "a", "b", "d")
    stream = Recorder()
    assert await publish_in_waves(round_, stream.publish) == (7, None)
    for subject in "abcd":
        mine = [r.seq for r in round_ if r.subject == subject]
        assert [seq for seq in stream.stored if seq in mine] == mine
    assert stream.most_in_flight == 4  # the first wave: a, b, c and d together


async def test_a_failure_stops_the_round_and_answers_the_stored_prefix() -> None:
    round_ = rows("a", "b", "a", "c", "a", "b")
    stream = Recorder(failing={2})  # b's first message is not acknowledged
    prefix, failure = await publish_in_waves(round_, stream.publish)
    assert isinstance(failure, TimeoutError)
    # Wave one (1, 2, 4) was sent; 1 and 4 were stored, 2 not; no later wave went out.
    assert sorted(stream.stored) == [1, 4]
    assert prefix == 1  # only row 1: row 2 is missing, so the relay marks up to row 1

"""The one backoff rule: doubling from the first delay up to the longest, jitter below the bound."""

from __future__ import annotations

import itertools

import pytest

from services.backoff import Backoff


def test_delays_double_from_the_first_up_to_the_longest() -> None:
    backoff = Backoff(first_seconds=0.5, longest_seconds=3.0)
    assert list(itertools.islice(backoff.delays(), 6)) == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert backoff.delay_seconds(1) == 0.5
    assert backoff.delay_seconds(10_000) == 3.0


def test_a_new_iterator_starts_again_from_the_first_delay() -> None:
    backoff = Backoff(first_seconds=1.0, longest_seconds=8.0)
    first = backoff.delays()
    next(first), next(first)
    assert next(backoff.delays()) == 1.0


def test_jittered_delays_stay_between_zero_and_the_bound() -> None:
    backoff = Backoff(first_seconds=0.002, longest_seconds=0.2, jitter=True)
    for failures in range(1, 20):
        bound = min(0.2, 0.002 * 2 ** (failures - 1))
        assert all(0 <= backoff.delay_seconds(failures) <= bound for _ in range(50))
    assert len({backoff.delay_seconds(8) for _ in range(50)}) > 1


@pytest.mark.parametrize(("first", "longest"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_a_backoff_that_cannot_wait_is_refused(first: float, longest: float) -> None:
    with pytest.raises(ValueError, match="first_seconds"):
        Backoff(first_seconds=first, longest_seconds=longest)


def test_failures_count_from_one() -> None:
    with pytest.raises(ValueError, match="failures counts from 1"):
        Backoff(1.0, 2.0).delay_seconds(0)

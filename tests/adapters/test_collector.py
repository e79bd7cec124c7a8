"""The consumer processes' collector settings (adapters.runtime.collector)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from adapters.runtime.collector import YOUNG_GENERATION_ALLOCATIONS, tune_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_the_young_generation_is_collected_less_often_and_start_up_is_frozen(
        restored_collector: None) -> None:
    _, middle, oldest = gc.get_threshold()
    tune_collector()
    assert gc.get_threshold() == (YOUNG_GENERATION_ALLOCATIONS, middle, oldest)
    assert gc.get_freeze_count() > 0


def test_cycles_are_still_collected(restored_collector: None) -> None:
    tune_collector()
    collected = []

    class Node:
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            collected.append(True)

    gc.collect()  # counts start from zero
    for _ in range(1000):
        Node()
    assert collected == []  # cycles: reference counting alone never frees them
    # Allocations past the threshold trigger a collection by themselves, no explicit call.
    garbage = [[] for _ in range(YOUNG_GENERATION_ALLOCATIONS * 2)]
    del garbage
    assert len(collected) == 1000

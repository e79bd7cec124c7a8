"""The one switch-interval rule: only ever shorten it, and put back only what is still ours."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import timedelta

import pytest

from services.thread_switching import switch_interval_at_most

DEFAULT_SECONDS = 0.005


@pytest.fixture(autouse=True)
def default_interval() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(DEFAULT_SECONDS)
    yield
    sys.setswitchinterval(previous)


def test_the_interval_is_shortened_inside_and_restored_after() -> None:
    with switch_interval_at_most(timedelta(milliseconds=1)):
        assert sys.getswitchinterval() == pytest.approx(0.001)
    assert sys.getswitchinterval() == pytest.approx(DEFAULT_SECONDS)


def test_a_shorter_interval_already_set_is_never_lengthened() -> None:
    with (switch_interval_at_most(timedelta(milliseconds=1)),
          switch_interval_at_most(timedelta(milliseconds=2))):
        assert sys.getswitchinterval() == pytest.approx(0.001)
    assert sys.getswitchinterval() == pytest.approx(DEFAULT_SECONDS)


def test_a_setting_made_by_someone_else_inside_is_left_alone() -> None:
    with switch_interval_at_most(timedelta(milliseconds=1)):
        sys.setswitchinterval(0.0002)
    assert sys.getswitchinterval() == pytest.approx(0.0002)


def test_the_interval_is_restored_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError), switch_interval_at_most(timedelta(milliseconds=1)):
        raise RuntimeError("boom")
    assert sys.getswitchinterval() == pytest.approx(DEFAULT_SECONDS)


def test_a_non_positive_interval_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="switch interval"), switch_interval_at_most(timedelta(0)):
        pass

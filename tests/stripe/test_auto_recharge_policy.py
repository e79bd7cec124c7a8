"""The auto-recharge policy on its own: configure transitions, one crossing at a time, the cap,
failures to the stop, resume, and re-arming only on a fresh balance read."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import uuid4

import pytest

from domain.auto_recharge import (
    FAILURES_IN_A_ROW_MAX,
    AutoRechargePolicy,
    AutoRechargeState,
    RechargeSettings,
    auto_recharge_id_for,
)
from domain.errors import InvalidInputError, InvalidStateError
from domain.money import NANOS_PER_UNIT

D = NANOS_PER_UNIT
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
DAY = date(2026, 12, 2)
SETTINGS = RechargeSettings(20 * D, 20 * D, 50 * D, "pm_card_visa")


def policy() -> AutoRechargePolicy:
    return AutoRechargePolicy.create(uuid4(), "USD", SETTINGS, True, "olivia")


def test_the_id_is_the_teams_and_configure_says_what_changed() -> None:
    p = policy()
    assert p.id == auto_recharge_id_for(p.team_id)
    assert p.configure(SETTINGS, True, "olivia") == "unchanged"
    changed = RechargeSettings(10 * D, 20 * D, 50 * D, "pm_card_visa")
    assert p.configure(changed, True, "bob") == "changed"
    assert p.configure(changed, False, "bob") == "disabled"
    assert p.state(NOW) == AutoRechargeState.DISABLED
    assert p.configure(changed, True, "bob") == "enabled"
    names = [type(e).__name__ for e in p.collect_events()]
    assert names == ["Created", "Changed", "Disabled", "Enabled"]


@pytest.mark.parametrize(("settings", "message"), [
    (dict(daily_cap_nanos=10 * D), "raise the cap"),
    (dict(threshold_nanos=-1), "threshold_nanos"),
    (dict(amount_nanos=0), "amount_nanos"),
    (dict(payment_method_id="card_123"), "pm_"),
])
def test_bad_settings_name_what_to_fix(settings: dict[str, object], message: str) -> None:
    fields = {"threshold_nanos": 20 * D, "amount_nanos": 20 * D, "daily_cap_nanos": 50 * D,
              "payment_method_id": "pm_card_visa", **settings}
    with pytest.raises(InvalidInputError, match=message):
        RechargeSettings(**fields)  # type: ignore[arg-type]


def test_one_crossing_at_a_time_and_the_cap_counts_the_day() -> None:
    p = policy()
    p.open_crossing(uuid4(), 5 * D, NOW, DAY, "system:auto-recharge")
    assert p.state(NOW) == AutoRechargeState.CHARGING
    with pytest.raises(InvalidStateError, match="charging"):
        p.open_crossing(uuid4(), 5 * D, NOW, DAY, "system:auto-recharge")
    first = p.open_payment_id
    assert first is not None
    assert p.close_crossing(first, "succeeded", 20 * D, None, None, "system:auto-recharge")
    assert not p.close_crossing(first, "succeeded", 20 * D, None, None, "x")  # a repeat
    assert p.state(NOW) == AutoRechargeState.WAITING_FOR_RECOVERY
    assert not p.sees_recent(0)  # a read older than the credit re-arms nothing
    assert p.rearm(25 * D, "system:auto-recharge")
    p.open_crossing(uuid4(), 5 * D, NOW, DAY, "system:auto-recharge")
    assert p.started_on(DAY) == 40 * D
    second = p.open_payment_id
    assert second is not None
    p.close_crossing(second, "succeeded", 40 * D, None, None, "system:auto-recharge")
    p.rearm(25 * D, "system:auto-recharge")
    with pytest.raises(InvalidStateError, match="daily cap"):  # 40 + 20 > 50
        p.open_crossing(uuid4(), 5 * D, NOW, DAY, "system:auto-recharge")
    p.open_crossing(uuid4(), 5 * D, NOW, DAY + timedelta(days=1), "system:auto-recharge")
    assert p.crossings == 3


def test_failures_back_off_then_stop_until_resumed() -> None:
    p = policy()
    for failure in range(1, FAILURES_IN_A_ROW_MAX + 1):
        at = NOW + timedelta(minutes=failure - 1)
        p.open_crossing(uuid4(), 5 * D, at, DAY, "system:auto-recharge")
        assert p.open_payment_id is not None
        p.close_crossing(p.open_payment_id, "failed", 0, NOW + timedelta(minutes=failure),
                         "card_declined", "system:auto-recharge")
        assert p.failures_in_row == failure
        if failure < FAILURES_IN_A_ROW_MAX:
            assert p.state(NOW) == AutoRechargeState.BACKING_OFF
            assert p.state(NOW + timedelta(minutes=failure)) == AutoRechargeState.ARMED
    assert p.state(NOW + timedelta(days=1)) == AutoRechargeState.STOPPED
    assert p.last_failure == "card_declined"
    assert p.started_on(DAY) == 0  # failed charges took nothing: the cap is given back
    p.resume("olivia")
    assert (p.state(NOW), p.failures_in_row) == (AutoRechargeState.ARMED, 0)
    with pytest.raises(InvalidStateError, match="not stopped"):
        p.resume("olivia")

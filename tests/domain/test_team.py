"""The Team aggregate: members and roles, money settings, top-ups, refunds, adjustments."""

from __future__ import annotations

import pytest

from domain.errors import InvalidInputError, InvalidStateError, LastOwnerError
from domain.money import NANOS_PER_UNIT
from domain.roles import Role
from domain.team import Team

USD = NANOS_PER_UNIT


def new_team() -> Team:
    return Team.register(team_key="acme", name="Acme", currency="USD",
                         timezone="Pacific/Auckland", owner_user_id="olivia", actor="olivia")


def event_names(team: Team) -> list[str]:
    return [type(e).__name__ for e in team.collect_events()]


def test_registering_makes_the_registrant_the_owner() -> None:
    team = new_team()
    assert team.members == {"olivia": Role.OWNER}
    (registered,) = team.collect_events()
    assert type(registered).__name__ == "Registered"
    assert registered.actor == "olivia"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("currency", "XXX", "currency 'XXX' is not supported"),
    ("timezone", "Mars/Olympus", "not an IANA time zone"),
    ("name", " ", "name must be a non-empty string"),
])
def test_registration_refuses_bad_settings(field: str, value: str, message: str) -> None:
    arguments = {"team_key": "acme", "name": "Acme", "currency": "USD", "timezone": "UTC",
                 "owner_user_id": "olivia", "actor": "olivia"}
    arguments[field] = value
    with pytest.raises(InvalidInputError, match=message):
        Team.register(**arguments)


def test_members_are_added_changed_and_removed_with_the_actor_recorded() -> None:
    team = new_team()
    team.add_member("ann", Role.ADMIN, "olivia")
    team.change_member_role("ann", Role.BILLING, "olivia")
    team.remove_member("ann", "olivia")
    events = team.collect_events()[1:]
    assert [type(e).__name__ for e in events] == ["MemberAdded", "MemberRoleChanged",
                                                 "MemberRemoved"]
    assert all(e.actor == "olivia" for e in events)  # type: ignore[attr-defined]
    assert "ann" not in team.members


def test_a_team_never_loses_its_last_owner() -> None:
    team = new_team()
    with pytest.raises(LastOwnerError, match="last owner"):
        team.remove_member("olivia", "olivia")
    with pytest.raises(LastOwnerError):
        team.change_member_role("olivia", Role.ADMIN, "olivia")
    team.add_member("otto", Role.OWNER, "olivia")
    team.change_member_role("olivia", Role.ADMIN, "otto")
    assert team.members["otto"] == Role.OWNER


def test_adding_an_existing_member_says_to_change_the_role() -> None:
    team = new_team()
    with pytest.raises(InvalidStateError, match="change their role"):
        team.add_member("olivia", Role.MEMBER, "olivia")


def test_top_ups_credit_once_and_refunds_cannot_exceed_them() -> None:
    team = new_team()
    team.credit_top_up("pi_1", 50 * USD, 5000, "USD", "olivia")
    with pytest.raises(InvalidStateError, match="already credited"):
        team.credit_top_up("pi_1", 50 * USD, 5000, "USD", "olivia")
    team.refund_top_up("pi_1", "re_1", 20 * USD, "olivia")
    with pytest.raises(InvalidStateError, match="exceeds the 30000000000 nanos still refundable"):
        team.refund_top_up("pi_1", "re_2", 31 * USD, "olivia")
    with pytest.raises(InvalidStateError, match="never credited"):
        team.refund_top_up("pi_9", "re_3", 1, "olivia")
    assert event_names(team)[1:] == ["TopUpCredited", "TopUpRefunded"]


def test_a_top_up_in_another_currency_is_refused() -> None:
    team = new_team()
    with pytest.raises(InvalidInputError, match="billed in USD"):
        team.credit_top_up("pi_1", USD, 100, "EUR", "olivia")


def test_adjustments_are_signed_and_need_a_reason() -> None:
    team = new_team()
    team.record_adjustment("adj-1", -3 * USD, "goodwill reversal", "olivia")
    with pytest.raises(InvalidInputError, match="reason"):
        team.record_adjustment("adj-2", USD, "", "olivia")
    assert team.adjustments == {"adj-1": -3 * USD}


def test_money_settings_record_the_previous_value() -> None:
    team = new_team()
    team.set_credit_limit(100 * USD, "olivia")
    team.set_credit_limit(50 * USD, "olivia")
    *_, last = team.collect_events()
    assert last.previous_nanos == 100 * USD  # type: ignore[attr-defined]
    assert team.credit_limit_nanos == 50 * USD


def test_suspension_blocks_new_accounts_until_reactivated() -> None:
    team = new_team()
    team.suspend("unpaid invoice", "olivia")
    with pytest.raises(InvalidStateError, match="suspended"):
        team.check_active()
    team.reactivate("olivia")
    team.check_active()

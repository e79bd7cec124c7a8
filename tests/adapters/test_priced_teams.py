"""The one "team with priced accounts" builder: what it builds, and that building again (as
`ledger demo` does on the same data folder) gives the same team and changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.runtime.priced_teams import (
    PRICED_ACCOUNTS_MAX,
    PricedTeam,
    numbered_keys,
    open_priced_team,
)
from domain.pricing import PriceTerms
from services.actor import Actor
from services.ledger import Ledger

TERMS = PriceTerms(request_nanos=7, input_token_nanos=3, cached_input_token_nanos=1,
                   output_token_nanos=11)
OWNER = Actor("olivia")
SINCE = datetime(2026, 1, 1, tzinfo=UTC)


def build(ledger: Ledger) -> PricedTeam:
    return open_priced_team(ledger, team_key="acme", terms=TERMS, owner=OWNER, since=SINCE,
                            account_keys=numbered_keys("seat-", 3), timezone="Europe/Berlin",
                            top_up_minor=25_00, credit_limit_nanos=5 * 10**9)


def test_the_builder_opens_priced_accounts_with_money_on_the_team(ledger: Ledger) -> None:
    team = build(ledger)
    got = ledger.get_team(team.team_id)
    assert got.timezone == "Europe/Berlin" and got.currency == "USD"
    assert sum(got.top_ups.values()) == 25 * 10**9
    assert got.credit_limit_nanos == 5 * 10**9
    assert len(team.accounts) == 3
    for priced in team.accounts:
        account = ledger.get_account(priced.account_id)
        assert account.team_id == team.team_id
        assert [(a["package_id"], a["effective_from"]) for a in account.assignments] == [
            (team.package_id, SINCE)]
        assert priced.terms == TERMS


def test_building_again_gives_the_same_team_and_records_nothing(ledger: Ledger) -> None:
    first = build(ledger)
    events_before = ledger.recorder.max_notification_id()
    again = build(ledger)
    assert again == first
    assert ledger.recorder.max_notification_id() == events_before


def test_an_unbounded_team_is_refused() -> None:
    with pytest.raises(ValueError, match=f"0 to {PRICED_ACCOUNTS_MAX}"):
        numbered_keys("seat-", PRICED_ACCOUNTS_MAX + 1)

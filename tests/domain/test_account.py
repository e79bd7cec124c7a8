"""The Account aggregate: usage priced by the package in force at `occurred_at`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from domain.account import Account, AccountKind, AccountStatus, new_usage_recorded
from domain.errors import AccountClosedError, InvalidStateError, NoPackageInForceError
from domain.pricing import PriceTerms
from domain.usage import UsageRecord

T0 = datetime(2026, 11, 1, tzinfo=UTC)
CHEAP = PriceTerms(request_nanos=0, input_token_nanos=1, cached_input_token_nanos=0,
                   output_token_nanos=2)
DEAR = PriceTerms(request_nanos=0, input_token_nanos=10, cached_input_token_nanos=0,
                  output_token_nanos=20)


def new_account() -> Account:
    return Account.open(team_id=uuid4(), account_key="svc", name="CI bot",
                        kind=AccountKind.SERVICE_KEY, holder_user_id=None, actor="olivia")


def usage(account: Account, usage_id: str, at: datetime) -> UsageRecord:
    return UsageRecord(usage_id=usage_id, account_id=account.id, occurred_at=at, model="m",
                       success=True, input_tokens=100, output_tokens=10)


def test_usage_is_priced_by_the_package_in_force_when_it_occurred() -> None:
    account = new_account()
    package = uuid4()
    account.assign_package(package_id=package, package_version=1, package_name="cheap",
                           terms=CHEAP, effective_from=T0, actor="olivia")
    account.assign_package(package_id=package, package_version=2, package_name="dear",
                           terms=DEAR, effective_from=T0 + timedelta(days=10), actor="olivia")
    assert account.record_usage(usage(account, "late", T0 + timedelta(days=1))) == 120
    assert account.record_usage(usage(account, "now", T0 + timedelta(days=11))) == 1200
    events = account.collect_events()
    assert [e.package_version for e in events[-2:]] == [1, 2]  # type: ignore[attr-defined]
    assert account.spent_nanos == 1320
    assert account.usage_count == 2


def test_usage_before_any_package_is_refused_with_the_moment_named() -> None:
    account = new_account()
    with pytest.raises(NoPackageInForceError, match="no package in force at 2026-11-01"):
        account.record_usage(usage(account, "u", T0))


def test_a_package_cannot_be_assigned_before_usage_already_priced() -> None:
    account = new_account()
    account.assign_package(package_id=uuid4(), package_version=1, package_name="p", terms=CHEAP,
                           effective_from=T0, actor="olivia")
    account.record_usage(usage(account, "u", T0 + timedelta(days=5)))
    with pytest.raises(InvalidStateError, match="history is not repriced"):
        account.assign_package(package_id=uuid4(), package_version=1, package_name="q",
                               terms=DEAR, effective_from=T0 + timedelta(days=1), actor="olivia")


def test_suspended_accounts_still_record_usage_but_closed_ones_refuse_it() -> None:
    account = new_account()
    account.assign_package(package_id=uuid4(), package_version=1, package_name="p", terms=CHEAP,
                           effective_from=T0, actor="olivia")
    account.suspend("leaver", "olivia")
    account.record_usage(usage(account, "while-suspended", T0 + timedelta(hours=1)))
    account.reactivate("olivia")
    account.close("offboarded", "olivia")
    assert account.status == AccountStatus.CLOSED
    with pytest.raises(AccountClosedError, match="closed"):
        account.record_usage(usage(account, "after-close", T0 + timedelta(hours=2)))
    with pytest.raises(AccountClosedError):
        account.reactivate("olivia")


def test_the_fast_event_constructor_makes_an_equal_event() -> None:
    fields = {"originator_id": uuid4(), "originator_version": 2, "timestamp": T0,
              "team_id": uuid4(), "usage_id": "u", "occurred_at": T0, "model": "m",
              "success": True, "input_tokens": 1, "cached_input_tokens": 2,
              "output_tokens": 3, "cost_nanos": 4, "package_id": uuid4(), "package_version": 1}
    assert new_usage_recorded(**fields) == Account.UsageRecorded(**fields)
    with pytest.raises(AssertionError):
        new_usage_recorded(**{**fields, "extra": 1})

"""The auto-recharge API: who reads and who sets it, what a bad setting answers, and resume."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx

from domain.auto_recharge import FAILURES_IN_A_ROW_MAX
from domain.money import NANOS_PER_UNIT
from services.payments.auto_recharge import AutoRecharges
from tests.http.support import make_team
from tests.stripe.auto_recharge_support import (
    catch_up,
    open_trigger,
    priced_team,
    set_policy,
    spend,
)
from tests.stripe.conftest import LiveApp, settings_for

DOLLAR = NANOS_PER_UNIT
WAIT_SECONDS_MAX = 30
POLICY = {"threshold_nanos": str(20 * DOLLAR), "amount_nanos": str(25 * DOLLAR),
          "daily_cap_nanos": str(100 * DOLLAR), "payment_method_id": "pm_card_visa"}


def call(live: LiveApp, method: str, path: str, token: str,
         body: dict[str, Any] | None = None) -> httpx.Response:
    return live.api.client.request(method, path, json=body, headers=live.api.headers(token))


def test_owner_and_billing_set_it_viewers_read_it_members_do_not(
        live_app: LiveApp, localstripe: httpx.Client) -> None:
    team = make_team(live_app.api, "acme")
    path = f"/v1/teams/{team.team_id}/auto-recharge"
    missing = call(live_app, "GET", path, team.tokens["auditor"])
    assert missing.status_code == 404 and missing.json()["code"] == "auto_recharge_not_set"
    for role in ("admin", "member", "auditor"):
        assert call(live_app, "PUT", path, team.tokens[role], POLICY).status_code == 403, role

    answer = call(live_app, "PUT", path, team.tokens["billing"], POLICY)
    assert answer.status_code == 200, answer.text
    info = answer.json()
    assert (info["enabled"], info["state"], info["failures_in_row"], info["failures_max"]) == (
        True, "armed", 0, FAILURES_IN_A_ROW_MAX)
    assert (info["threshold"]["nanos"], info["amount"]["display"]) == (
        str(20 * DOLLAR), "25.000000000 USD")
    assert call(live_app, "PUT", path, team.tokens["owner"], POLICY).status_code == 200  # same
    disabled = call(live_app, "PUT", path, team.tokens["owner"], {**POLICY, "enabled": False})
    assert disabled.json()["state"] == "disabled"
    for role in ("auditor", "admin", "billing"):
        assert call(live_app, "GET", path, team.tokens[role]).json()["state"] == "disabled"
    assert call(live_app, "GET", path, team.tokens["member"]).status_code == 403

    events = [type(e).__qualname__ for e in live_app.ledger.events.get(
        AutoRecharges(live_app.ledger, live_app.billing.top_ups).find(
            UUID(team.team_id)).id)]  # type: ignore[union-attr]
    assert events == ["AutoRechargePolicy.Created", "AutoRechargePolicy.Disabled"]


def test_bad_settings_say_what_to_fix_and_resume_needs_a_stop(
        live_app: LiveApp, localstripe: httpx.Client) -> None:
    team = make_team(live_app.api, "acme")
    path = f"/v1/teams/{team.team_id}/auto-recharge"
    owner = team.tokens["owner"]
    below_cap = call(live_app, "PUT", path, owner, {**POLICY, "daily_cap_nanos": str(DOLLAR)})
    assert below_cap.status_code == 422 and "raise the cap" in below_cap.json()["detail"]
    tiny = call(live_app, "PUT", path, owner, {**POLICY, "amount_nanos": str(DOLLAR)})
    assert tiny.status_code == 422 and "between" in tiny.json()["detail"]
    odd = call(live_app, "PUT", path, owner, {**POLICY, "amount_nanos": str(25 * DOLLAR + 1)})
    assert odd.status_code == 422 and "minor units" in odd.json()["detail"]
    not_a_card = call(live_app, "PUT", path, owner, {**POLICY, "payment_method_id": "card_1"})
    assert not_a_card.status_code == 422
    negative = call(live_app, "PUT", path, owner, {**POLICY, "threshold_nanos": "-1"})
    assert negative.status_code == 422

    assert call(live_app, "PUT", path, owner, POLICY).status_code == 200
    resumed = call(live_app, "POST", f"{path}/resume", owner)
    assert resumed.status_code == 409 and "not stopped" in resumed.json()["detail"]
    assert call(live_app, "POST", f"{path}/resume", team.tokens["auditor"]).status_code == 403


def test_the_recharge_is_credited_once_by_localstripes_webhook_then_closes(
        live_app: LiveApp, localstripe: httpx.Client, localstripe_url: str) -> None:
    """No read of the PaymentIntent (read_after of an hour): the webhook credits it; a later
    read of the same PaymentIntent changes nothing."""
    live_app.register_webhook(localstripe)
    database_url = live_app.api.database_url
    catch_up(database_url)
    trigger = open_trigger(database_url, settings_for(localstripe_url))
    trigger.recharges.read_after = timedelta(hours=1)
    try:
        team_id, account_id = priced_team(trigger.ledger, "hooked", balance_dollars=25)
        set_policy(trigger.recharges, team_id, threshold=20, amount=20, cap=100)
        spend(trigger.ledger, account_id, 10)
        catch_up(database_url)
        assert trigger.watcher.run_pass()[team_id] == "charged: payment processing"
        deadline = time.monotonic() + WAIT_SECONDS_MAX
        while not trigger.ledger.get_team(team_id).top_ups:
            assert time.monotonic() < deadline, "localstripe's payment_intent.succeeded webhook"
            time.sleep(0.05)
        assert trigger.watcher.run_pass()[team_id] == "closed succeeded"
        [payment] = trigger.recharges.top_ups.payments_of(team_id)
        trigger.recharges.top_ups.refresh_payment(payment.id)
        assert list(trigger.ledger.get_team(team_id).top_ups.values()) == [20 * DOLLAR]
    finally:
        trigger.close()

"""A team's life through the API: register, members, accounts, packages, usage, money, reads."""

from __future__ import annotations

from adapters.runtime.projection_process import open_runner
from tests.http.conftest import Api
from tests.http.support import make_team, usage_record


def catch_up(database_url: str) -> None:
    with open_runner(database_url) as runner:
        runner.catch_up()


def test_usage_batch_answers_each_record_and_reads_show_it(api: Api) -> None:
    team = make_team(api, "acme")
    c, op = api.client, api.as_operator()
    publisher = api.token_for("service", "gateway", ["usage:publish"])
    batch = {"records": [
        usage_record(team.member_account, "u-1"),
        usage_record(team.member_account, "u-1"),
        usage_record(team.member_account, "u-1", input_tokens=5),
        usage_record(team.other_account, "u-2", success=False),
        {"usage_id": "bad", "account_id": team.other_account},
    ]}
    answer = c.post("/v1/usage", headers=api.headers(publisher), json=batch)
    assert answer.status_code == 200, answer.text
    outcomes = [(r["index"], r["outcome"]) for r in answer.json()["results"]]
    assert outcomes == [(0, "recorded"), (1, "duplicate"), (2, "rejected"), (3, "recorded"),
                        (4, "rejected")]
    first = answer.json()["results"][0]
    # 1 request + 1000 input tokens x 2000 + 100 output tokens x 8000 nanos
    assert first["cost"]["nanos"] == str(1_000_000 + 1000 * 2000 + 100 * 8000)
    assert "input_tokens" in answer.json()["results"][4]["reason"]

    again = c.post("/v1/usage", headers=api.headers(publisher),
                   json={"records": batch["records"][:1]})
    assert again.json()["results"][0]["outcome"] == "duplicate"

    adjust = f"/v1/teams/{team.team_id}/adjustments"
    keyed = {**op, "Idempotency-Key": "adj-1"}
    credit = {"amount_nanos": "5000000000", "reason": "welcome credit"}
    moved = c.post(adjust, headers=keyed, json=credit)
    assert moved.status_code == 200, moved.text
    spent = 1_000_000 + 1000 * 2000 + 100 * 8000  # the failed request is free
    assert moved.json()["balance_before"]["nanos"] == str(-spent)
    assert moved.json()["balance_after"]["nanos"] == str(5_000_000_000 - spent)
    assert moved.json()["event_position"] > 0
    replay = c.post(adjust, headers=keyed, json=credit)
    assert replay.json() == moved.json() and replay.headers["Idempotent-Replayed"] == "true"
    reused = c.post(adjust, headers=keyed, json={"amount_nanos": "7", "reason": "other"})
    assert reused.status_code == 409

    catch_up(api.database_url)
    balance = c.get(f"/v1/teams/{team.team_id}/balance", headers=op).json()
    assert balance["balance"]["nanos"] == str(5_000_000_000 - spent)
    assert balance["lag_events"] == 0 and balance["position"] == balance["head_position"]
    usage = c.get(f"/v1/teams/{team.team_id}/usage?window=total", headers=op).json()
    assert usage["totals"]["requests"] == 2 and usage["totals"]["success_rate"] == "0.5000"
    member_view = c.get(f"/v1/teams/{team.team_id}/usage?window=total",
                        headers=api.headers(team.tokens["member"])).json()
    assert member_view["totals"]["requests"] == 1
    assert [r["key"] for r in member_view["by_account"]] == [team.member_account]
    pool = c.get(f"/v1/teams/{team.team_id}/accounts", headers=api.headers(team.tokens["member"]))
    assert [a["account_id"] for a in pool.json()["accounts"]] == [team.member_account]
    audit = c.get(f"/v1/teams/{team.team_id}/audit?event_type=Team.AdjustmentRecorded",
                  headers=api.headers(team.tokens["auditor"])).json()
    assert [e["actor"] for e in audit["entries"]] == ["operator"]
    assert audit["entries"][0]["balance_after"]["nanos"] == str(5_000_000_000 - spent)
    may = c.get(f"/v1/accounts/{team.member_account}/authorization", headers=op).json()
    assert may["allowed"] is True

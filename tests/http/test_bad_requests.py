"""Bad input gets a problem that names what to fix, and loses nothing valid."""

from __future__ import annotations

import json

from adapters.http.middleware import BODY_BYTES_MAX, USAGE_BODY_BYTES_MAX
from adapters.http.routes_usage import USAGE_BATCH_RECORDS_MAX
from tests.http.conftest import Api
from tests.http.support import make_team, usage_record


def problem(answer: object) -> dict[str, object]:
    assert answer.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body: dict[str, object] = answer.json()  # type: ignore[attr-defined]
    assert {"type", "title", "status", "detail", "code"} <= set(body)
    return body


def test_wrongly_typed_fields_are_listed_one_by_one(api: Api) -> None:
    team = make_team(api, "typed")
    answer = api.client.post(f"/v1/teams/{team.team_id}/adjustments",
                             headers={**api.as_operator(), "Idempotency-Key": "k"},
                             json={"amount_nanos": 12.5, "reason": "", "extra": 1})
    assert answer.status_code == 422
    body = problem(answer)
    fields = {e["field"] for e in body["errors"]}  # type: ignore[union-attr]
    assert fields == {"body.amount_nanos", "body.reason", "body.extra"}
    assert "amount_nanos" in str(body["detail"])


def test_money_as_a_json_number_is_refused_and_as_a_string_is_exact(api: Api) -> None:
    team = make_team(api, "exact")
    big = str(2**63 + 1)  # beyond what a JavaScript number holds exactly
    answer = api.client.post(f"/v1/teams/{team.team_id}/credit-limit",
                             headers=api.as_operator(), json={"credit_limit_nanos": int(big)})
    assert answer.status_code == 422
    answer = api.client.post(f"/v1/teams/{team.team_id}/credit-limit",
                             headers=api.as_operator(), json={"credit_limit_nanos": big})
    assert answer.status_code == 200
    assert answer.json()["available_after"]["nanos"] == big
    assert answer.json()["available_after"]["display"] == "9223372036.854775809 USD"


def test_malformed_json_and_oversized_bodies_get_clear_problems(api: Api) -> None:
    publisher = api.headers(api.token_for("service", "gw", ["usage:publish"]))
    broken = api.client.post("/v1/usage", headers={**publisher, "content-type": "application/json"},
                             content=b'{"records": [')
    assert broken.status_code == 422 and "not valid JSON" in str(problem(broken)["detail"])
    huge = api.client.post("/v1/usage", headers=publisher,
                           content=b"x" * (USAGE_BODY_BYTES_MAX + 1))
    assert huge.status_code == 413 and "split" in str(problem(huge)["detail"])
    big_admin = api.client.post("/v1/teams", headers=api.as_operator(),
                                json={"name": "x" * BODY_BYTES_MAX})
    assert big_admin.status_code == 413
    too_many = {"records": [usage_record("00000000-0000-4000-8000-000000000000", f"u{i}")
                            for i in range(USAGE_BATCH_RECORDS_MAX + 1)]}
    answer = api.client.post("/v1/usage", headers=publisher, json=too_many)
    assert answer.status_code == 422 and "at most" in str(problem(answer)["detail"])
    twice = b'{"records": [{"usage_id": "a", "usage_id": "b"}]}'
    answer = api.client.post("/v1/usage", headers=publisher, content=twice)
    assert answer.status_code == 422 and "duplicate keys" in str(problem(answer)["detail"])


def test_a_bad_record_is_rejected_with_its_reason_and_the_good_ones_are_kept(api: Api) -> None:
    team = make_team(api, "mixed")
    publisher = api.headers(api.token_for("service", "gw", ["usage:publish"]))
    records = [usage_record(team.member_account, "good-1"),
               usage_record(team.member_account, "bad-1", input_tokens="12"),
               usage_record(team.member_account, "bad-2", extra_field=True),
               usage_record("00000000-0000-4000-8000-000000000000", "nobody"),
               usage_record(team.member_account, "good-2", model="other")]
    answer = api.client.post("/v1/usage", headers=publisher,
                             content=json.dumps({"records": records}))
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["outcome"] for r in results] == ["recorded", "rejected", "rejected", "rejected",
                                               "recorded"]
    assert "input_tokens" in results[1]["reason"] and "extra_field" in results[2]["reason"]
    assert results[3]["code"] == "unknown_account"


def test_unknown_routes_and_methods_answer_problems(api: Api) -> None:
    assert problem(api.client.get("/v1/nothing"))["status"] == 404
    assert problem(api.client.put("/v1/me"))["status"] == 405


def test_every_response_carries_a_request_id_and_logs_never_hold_tokens(
        api: Api, caplog: object) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="ledger.http")  # type: ignore[attr-defined]
    answer = api.client.get("/v1/me", headers={**api.as_operator(), "X-Request-ID": "req-42"})
    assert answer.headers["x-request-id"] == "req-42"
    assert api.client.get("/v1/me").headers["x-request-id"]
    text = caplog.text  # type: ignore[attr-defined]
    assert "req-42" in text and '"route": "/v1/me"' in text
    assert api.operator_token not in text and api.operator_token[4:] not in text

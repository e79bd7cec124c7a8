"""Building a team through the API: an owner (the operator who registers it), members with
every role and their tokens, a package, accounts with a holder."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from domain.roles import Role
from tests.http.conftest import Api

PACKAGE_TERMS = {"request_nanos": "1000000", "input_token_nanos": "2000",
                 "cached_input_token_nanos": "500", "output_token_nanos": "8000"}


# One moment for every record of a test run, so that resent records are exact repeats.
USAGE_MOMENT = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


@dataclass
class TeamFixture:
    team_id: str
    tokens: dict[str, str] = field(default_factory=dict)  # role -> token of a member
    member_account: str = ""  # held by the member
    other_account: str = ""  # held by nobody
    package_id: str = ""


def user_id(team_key: str, role: str) -> str:
    return f"{team_key}-{role}"


def make_team(api: Api, team_key: str, package_id: str | None = None) -> TeamFixture:
    c, op = api.client, api.as_operator()
    answer = c.post("/v1/teams", headers=op, json={
        "team_key": team_key, "name": f"Team {team_key}", "currency": "USD",
        "timezone": "Europe/Berlin"})
    assert answer.status_code == 201, answer.text
    team = TeamFixture(team_id=answer.json()["team_id"])
    team.tokens[Role.OWNER.value] = api.operator_token  # the registering operator owns it
    for role in Role:
        if role == Role.OWNER:
            continue
        uid = user_id(team_key, role.value)
        added = c.post(f"/v1/teams/{team.team_id}/members", headers=op,
                       json={"user_id": uid, "role": role.value})
        assert added.status_code == 200, added.text
        team.tokens[role.value] = api.token_for("user", uid)
    if package_id is None:
        created = c.post("/v1/packages", headers=op, json={
            "package_key": f"pkg-{team_key}", "name": "Standard", "currency": "USD",
            "terms": PACKAGE_TERMS})
        assert created.status_code == 201, created.text
        package_id = created.json()["package_id"]
    team.package_id = package_id
    for key, holder in (("seat-m", user_id(team_key, "member")), ("seat-x", None)):
        opened = c.post(f"/v1/teams/{team.team_id}/accounts", headers=op, json={
            "account_key": key, "name": key, "holder_user_id": holder})
        assert opened.status_code == 201, opened.text
        account_id = opened.json()["account_id"]
        assigned = c.post(f"/v1/accounts/{account_id}/package", headers=op, json={
            "package_id": package_id,
            "effective_from": (datetime.now(UTC) - timedelta(days=3)).isoformat()})
        assert assigned.status_code == 200, assigned.text
        if holder:
            team.member_account = account_id
        else:
            team.other_account = account_id
    return team


def usage_record(account_id: str, usage_id: str, **overrides: object) -> dict[str, object]:
    record: dict[str, object] = {
        "usage_id": usage_id, "account_id": account_id,
        "occurred_at": USAGE_MOMENT.isoformat(),
        "model": "gpt-x", "success": True, "input_tokens": 1000, "output_tokens": 100,
        "cached_input_tokens": 0}
    record.update(overrides)
    return record

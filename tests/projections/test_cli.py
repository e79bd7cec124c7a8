"""The auditor's commands end to end, through the real `ledger` entry point."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest

from adapters.cli.main import main
from tests.projections.history import ledger_at, mixed_history


def test_the_auditor_projects_replays_reads_and_exports(
        database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: object,
        capsys: pytest.CaptureFixture[str]) -> None:
    with ledger_at(database_url) as ledger:
        team = mixed_history(ledger)
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)

    assert main(["project", "--once"]) == 0
    assert main(["replay"]) == 0
    assert "replay equals the live read models" in capsys.readouterr().out

    assert main(["balance", "--team", "acme", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["balance"]["team_id"] == str(team.team_id)
    assert answer["lag_events"] == 0 and answer["position"] > 0
    assert answer["usage"]["windows"]["total"]["requests"] == 60
    assert [i["status"] for i in answer["invoices"]] == ["paid"]
    assert {t["top_up_id"] for t in answer["top_ups"]} == {"pi_1", "pi_2"}

    as_of = datetime.now(UTC).isoformat()
    assert main(["balance", "--team", str(team.team_id), "--as-of", as_of, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["balance"] == answer["balance"]

    assert main(["authorize", "--account", str(team.account_ids[0])]) == 0
    assert json.loads(capsys.readouterr().out)["allowed"] is True
    assert main(["authorize", "--account", str(team.account_ids[1])]) == 3  # closed
    assert json.loads(capsys.readouterr().out)["blocked_by"] == "account_closed"

    exported = f"{tmp_path}/acme.jsonl"
    assert main(["audit", "export", "--team", "acme", "--format", "jsonl",
                 "--output", exported]) == 0
    with open(exported) as rows:
        assert sum(1 for _ in rows) > 60

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE ledger_views.usage_daily SET requests = requests + 1 "
                     "WHERE ctid = (SELECT min(ctid) FROM ledger_views.usage_daily)")
    assert main(["replay"]) == 1
    out = capsys.readouterr().out
    assert "usage_daily: first differing rows" in out and "DIFFERS" in out

"""`ledger invoices draft --team T --month YYYY-MM` on PostgreSQL: prints the lines and the
amount due; a month drafted twice is refused with what to do instead (exit 2)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.cli.main import main
from services.invoicing.drafting import monthly_invoice_id
from tests.projections.history import cost_of, ledger_at, make_team, usage


def test_draft_a_month_from_the_command_line(database_url: str, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with ledger_at(database_url) as ledger:
        team = make_team(ledger, "clia", "Europe/Berlin", accounts=1)
        record = usage(team.account_ids[0], "c1", datetime(2026, 10, 3, tzinfo=UTC),
                       input_tokens=10**9)
        ledger.record_usage_batch([record])
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    assert main(["invoices", "draft", "--team", "clia", "--month", "2026-10"]) == 0
    out = capsys.readouterr().out
    assert f"invoice {monthly_invoice_id(team.team_id, '2026-10')} drafted" in out
    assert "clia-a" in out and "m1: 1 requests" in out
    assert f"amount due 1.{cost_of(record) - 10**9:09d} USD" in out
    assert main(["invoices", "draft", "--team", "clia", "--month", "2026-10"]) == 2
    assert "already exists" in capsys.readouterr().err

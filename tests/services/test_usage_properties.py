"""Model-based property: however records, copies and conflicts are split into batches, the
first content seen for each usage_id is charged once and everything else is accounted for."""

from __future__ import annotations

import dataclasses
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ledger import Ledger
from services.usage.outcomes import RejectionCode
from tests.services.support import expected_cost, team_with_accounts, usage

# Each element: (usage id number, content variant, account index).
submissions = st.lists(st.tuples(st.integers(0, 15), st.integers(0, 2), st.integers(0, 1)),
                       min_size=1, max_size=60)


@settings(max_examples=60)
@given(sent=submissions, cuts=st.lists(st.integers(1, 60), max_size=6),
       pipelined=st.booleans())
def test_first_content_is_charged_once_whatever_the_batching(
        sent: list[tuple[int, int, int]], cuts: list[int], pipelined: bool) -> None:
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    setup = team_with_accounts(ledger, accounts=2)
    records = [dataclasses.replace(usage(setup.account_ids[account], f"u{number}",
                                         minutes=number), output_tokens=100 + variant)
               for number, variant, account in sent]
    bounds = sorted({0, len(records), *(c for c in cuts if c < len(records))})
    batches = [records[a:b] for a, b in pairwise(bounds)]
    if pipelined:
        outcomes = list(ledger.record_usage_batches(batches))
    else:
        outcomes = [ledger.record_usage_batch(batch) for batch in batches]

    first: dict[str, object] = {}
    for record in records:
        first.setdefault(record.usage_id, record)
    expected_duplicates = sum(1 for r in records if first[r.usage_id] == r) - len(first)
    expected_conflicts = sum(1 for r in records if first[r.usage_id] != r)

    recorded = [r for o in outcomes for r in o.recorded]
    assert sorted(r.usage_id for r in recorded) == sorted(first)
    assert sum(len(o.duplicates) for o in outcomes) == expected_duplicates
    conflicts = [r for o in outcomes for r in o.rejections]
    assert len(conflicts) == expected_conflicts
    assert all(r.code == RejectionCode.CONFLICT for r in conflicts)
    spent = sum(ledger.get_account(a).spent_nanos for a in setup.account_ids)
    assert spent == sum(expected_cost(r) for r in first.values())  # type: ignore[arg-type]

"""Every `ledger.views.*` message a realistic history produces is what the bus contract says.

The history (top-ups, usage, adjustments, suspensions, invoices: tests/projections/history.py) is
folded in small batches by the real projection code, and each message it would put in the outbox
is validated, as bytes, against its model in `adapters.nats.view_contract`: strict types, every
key described, nothing left over, the subject's team the payload's.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from pydantic import ValidationError

from adapters.nats.view_contract import VIEW_MESSAGES, BalanceViewMessage
from projections.decoding import EventDecoder
from projections.fold import ViewFolder
from projections.view_messages import encoded_view_messages
from tests.projections.history import memory_ledger, memory_log, mixed_history

BATCH_SIZE_EVENTS = 25


@pytest.fixture(scope="module")
def messages() -> list[tuple[str, bytes]]:
    with memory_ledger() as ledger:
        mixed_history(ledger)
        log = memory_log(ledger)
        decoder = EventDecoder(ledger.mapper)
        folder = ViewFolder()
        found: list[tuple[str, bytes]] = []
        while entries := log.read_after(folder.position, BATCH_SIZE_EVENTS):
            found += encoded_view_messages(folder.fold_log(entries, decoder))
    return found


def test_every_view_message_matches_its_model(messages: list[tuple[str, bytes]]) -> None:
    kinds: Counter[str] = Counter()
    for subject, payload in messages:
        prefix, views, kind, team_id = subject.split(".")
        assert (prefix, views) == ("ledger", "views")
        model = VIEW_MESSAGES[kind]
        message = model.model_validate_json(payload)
        assert str(message.team_id) == team_id
        assert set(json.loads(payload)) == set(model.model_fields), subject
        kinds[kind] += 1
    assert set(kinds) == set(VIEW_MESSAGES), kinds
    assert min(kinds.values()) >= 2


def test_money_travels_as_decimal_strings_and_a_number_is_refused(
        messages: list[tuple[str, bytes]]) -> None:
    payload = next(p for s, p in messages if ".balance." in s)
    fields = json.loads(payload)
    assert isinstance(fields["balance_nanos"], str)
    BalanceViewMessage.model_validate(fields, strict=False)
    with pytest.raises(ValidationError, match="balance_nanos"):
        BalanceViewMessage.model_validate_json(
            json.dumps({**fields, "balance_nanos": int(fields["balance_nanos"])}))
    with pytest.raises(ValidationError, match="colour"):
        BalanceViewMessage.model_validate_json(json.dumps({**fields, "colour": "red"}))

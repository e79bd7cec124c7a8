"""The fast decoder for UsageRecorded gives exactly what the Ledger's mapper gives."""

from __future__ import annotations

from typing import Any

from eventsourcing.compressor import ZlibCompressor

from adapters.postgres.notification_log import PostgresNotificationLog
from adapters.runtime.projection_process import ledger_decoder
from projections.decoding import USAGE_RECORDED_TOPIC, EventDecoder
from projections.fold import ViewFolder
from tests.projections.history import ledger_at, mixed_history


def test_the_fast_path_decodes_usage_exactly_like_the_mapper(database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        mixed_history(ledger)
    decoder = ledger_decoder(database_url)
    assert decoder.fast
    log = PostgresNotificationLog(database_url)
    entries = log.read_after(0, 10_000)
    log.close()
    usage_entries = [e for e in entries if e.topic == USAGE_RECORDED_TOPIC]
    assert len(usage_entries) == 61
    for entry in entries:
        fast: Any = decoder.decode(entry)
        reference: Any = decoder.mapper.to_domain_event(entry.stored_event())
        assert type(fast) is type(reference)
        assert vars(fast) == vars(reference)
        assert {k: type(v) for k, v in vars(fast).items()} == \
            {k: type(v) for k, v in vars(reference).items()}
    assert decoder.fast_decoded == 61


def test_the_fast_path_turns_off_when_the_mapper_is_configured_differently(
        database_url: str) -> None:
    mapper = ledger_decoder(database_url).mapper
    mapper.compressor = ZlibCompressor()
    assert not EventDecoder(mapper).fast


def test_folding_from_stored_fields_equals_folding_decoded_events(database_url: str) -> None:
    """The runner folds usage from its stored JSON fields (`fold_log`); `ledger balance --as-of`
    folds decoded events (`fold`). Both must give the same batch, row for row."""
    with ledger_at(database_url) as ledger:
        mixed_history(ledger)
    decoder = ledger_decoder(database_url)
    log = PostgresNotificationLog(database_url)
    entries = log.read_after(0, 10_000)
    log.close()
    from_fields = ViewFolder().fold_log(entries, decoder)
    from_events = ViewFolder().fold([(e, decoder.decode(e)) for e in entries])
    assert from_fields.audit == from_events.audit
    assert from_fields.usage == from_events.usage
    assert from_fields.teams == from_events.teams
    assert from_fields.accounts == from_events.accounts
    assert [r.position for r in from_fields.audit] == [e.position for e in entries]
    usage_rows = [r for r in from_fields.audit if r.event_type == "Account.UsageRecorded"]
    assert len(usage_rows) == 61 and all(r.recorded_at.tzinfo is not None for r in usage_rows)

"""The fast decoder for UsageRecorded gives exactly what the Ledger's mapper gives."""

from __future__ import annotations

from typing import Any

from eventsourcing.compressor import ZlibCompressor

from adapters.readmodel_postgres import PostgresNotificationLog
from adapters.readmodel_process import ledger_decoder
from projections.decoding import USAGE_RECORDED_TOPIC, EventDecoder
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

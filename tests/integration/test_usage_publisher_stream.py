"""The publisher trusts only an acknowledgement from LEDGER_USAGE.

It sends no `Nats-Expected-Stream` header (every consumer would parse it again on every
delivery); the stream that stored a record is read from its acknowledgement instead, so a
record taken by any other stream is an error that says what to fix, never a success.
"""

from __future__ import annotations

import nats
import pytest
from nats.js.api import StreamConfig

from adapters.nats.streams import delete_stream
from adapters.nats.usage_publisher import UsagePublisher, UsageStreamMismatch, _from_usage_stream
from domain.usage import UsageRecord
from tests.integration.support import unpriced_record

OTHER_STREAM = "SOMEONE_ELSES_USAGE"


def record(number: int) -> UsageRecord:
    return unpriced_record(f"req-{number}")


async def test_a_record_stored_by_another_stream_is_an_error_naming_it(
        nats_server_url: str) -> None:
    connection = await nats.connect(nats_server_url)
    js = connection.jetstream()
    try:
        await delete_stream(js)
        await js.add_stream(StreamConfig(name=OTHER_STREAM, subjects=["ledger.usage.v1.*"]))
        async with await UsagePublisher.connect(nats_server_url) as publisher:
            with pytest.raises(UsageStreamMismatch, match=f"{OTHER_STREAM}.*LEDGER_USAGE"):
                await publisher.publish_usage(record(1))
            with pytest.raises(UsageStreamMismatch, match=OTHER_STREAM):
                await publisher.publish_many([record(n) for n in range(2, 10)])
            assert publisher.report.published == 0
    finally:
        await js.delete_stream(OTHER_STREAM)
        await connection.close()


@pytest.mark.parametrize(("ack", "ours"), [
    (b'{"stream":"LEDGER_USAGE","seq":7}', True),
    (b'{"stream":"LEDGER_USAGE","domain":"hub","seq":7,"duplicate":true}', True),
    (b'{"seq": 7, "stream": "LEDGER_USAGE"}', True),  # written otherwise: parsed
    (b'{"stream":"LEDGER_USAGE_REJECTED","seq":7}', False),
    (b'{"stream":"OTHER","seq":7}', False),
    (b'[1, 2]', False),
    (b'not json', False),
])
def test_an_acknowledgement_is_ours_only_if_it_names_the_usage_stream(ack: bytes,
                                                                      ours: bool) -> None:
    assert _from_usage_stream(ack) is ours

"""docs/publishing.md's Python example runs as written against a real NATS and ledger: the
record it publishes is stored, charged once, and its repeat is dropped as a duplicate."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from adapters.nats.ingest_settings import IngestSettings
from adapters.nats.streams import recreate_stream
from adapters.nats.usage_consumer import UsageConsumer
from adapters.runtime.composition import open_ledger
from tests.integration.support import accounts, wait_until

DOC = Path(__file__).resolve().parents[2] / "docs" / "publishing.md"
WAIT_SECONDS = 60.0


def doc_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert len(blocks) == 1, "docs/publishing.md holds one Python example"
    return blocks[0]


async def test_the_documented_example_publishes_and_the_ledger_charges_once(
        database_url: str, nats_server_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    settings = IngestSettings(partitions=2)
    await recreate_stream(nats_server_url, settings)
    ledger = open_ledger(database_url)
    account = accounts(ledger, 1, team_key="publishing-doc")[0]
    namespace: dict[str, object] = {}
    exec(compile(doc_example(), str(DOC), "exec"), namespace)  # the doc is our own text
    await namespace["report_requests"](nats_server_url, account.account_id)  # type: ignore[operator]
    printed = capsys.readouterr().out
    assert "stored at stream sequence 1" in printed
    assert "2 published, 1 dropped as repeats" in printed  # the second publish: same id

    consumer = UsageConsumer(ledger, nats_server_url, partitions=[0, 1], settings=settings)

    def recorded() -> int:
        return ledger.keyed.counter_values().get("usage_recorded", 0)

    running = asyncio.create_task(consumer.run())
    try:
        await wait_until(lambda: recorded() == 1, WAIT_SECONDS, "the record charged")
    finally:
        consumer.stop()
        await running
    assert ledger.keyed.counter_values().get("usage_duplicates", 0) == 0
    ledger.close()

"""The AsyncAPI document of the bus contract is current and matches the code's pydantic models."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.nats.bus_asyncapi import bus_asyncapi, bus_asyncapi_json
from adapters.nats.ingest_settings import REJECTED_SUBJECT
from adapters.nats.usage_contract import UsageMessage
from adapters.nats.view_contract import VIEW_MESSAGES

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "bus-asyncapi.json"


def test_the_stored_document_is_the_generated_one() -> None:
    assert DOCUMENT.read_text() == bus_asyncapi_json(), (
        "docs/bus-asyncapi.json is stale: regenerate it with "
        "`uv run python -m adapters.nats.bus_asyncapi > docs/bus-asyncapi.json`")


def test_the_usage_payload_is_the_pydantic_model() -> None:
    document = json.loads(DOCUMENT.read_text())
    stored = document["components"]["schemas"]["UsageMessage"]
    model = UsageMessage.model_json_schema()
    assert stored["properties"] == model["properties"]
    assert sorted(stored["required"]) == sorted(model["required"])
    assert stored.get("additionalProperties") is False  # unknown fields are refused


def test_every_subject_of_the_contract_is_described() -> None:
    addresses = {channel["address"] for channel in bus_asyncapi()["channels"].values()}
    assert addresses == {"ledger.usage.v1.{account_id}", REJECTED_SUBJECT,
                         "ledger.views.balance.{team_id}", "ledger.views.usage.{team_id}",
                         "ledger.views.audit.{team_id}"}


def test_the_view_payloads_are_the_pydantic_models() -> None:
    document = json.loads(DOCUMENT.read_text())
    for model in VIEW_MESSAGES.values():
        stored = document["components"]["schemas"][model.__name__]
        schema = model.model_json_schema()
        assert stored["properties"] == schema["properties"]
        assert sorted(stored["required"]) == sorted(schema["required"])
        assert stored.get("additionalProperties") is False

"""Stream retention limits are named settings: defaults, overrides, and clear errors."""

from __future__ import annotations

import pytest

from adapters.nats.ingest_settings import (
    MESSAGE_BYTES_MAX,
    REJECTED_MAX_AGE_SECONDS_DEFAULT,
    REJECTED_MAX_BYTES_DEFAULT,
    REJECTED_MESSAGE_BYTES_MAX,
    USAGE_MAX_BYTES_DEFAULT,
    IngestSettings,
)
from adapters.nats.streams import USAGE_MAX_AGE_SECONDS, rejected_stream_config, stream_config
from adapters.nats.usage_contract import OCCURRED_AT_PAST_HORIZON, rejection_message


def test_retention_limits_have_defaults_and_can_be_set_from_the_environment() -> None:
    assert IngestSettings.from_env({}).usage_max_bytes == USAGE_MAX_BYTES_DEFAULT
    settings = IngestSettings.from_env({"LEDGER_USAGE_MAX_BYTES": str(2 * 1024**3),
                                        "LEDGER_REJECTED_MAX_BYTES": str(1024**3 // 2),
                                        "LEDGER_REJECTED_MAX_AGE_SECONDS": "86400"})
    assert stream_config(settings).max_bytes == 2 * 1024**3
    rejected = rejected_stream_config(settings)
    assert rejected.max_bytes == 1024**3 // 2 and rejected.max_age == 86400
    defaults = rejected_stream_config(IngestSettings())
    assert defaults.max_bytes == REJECTED_MAX_BYTES_DEFAULT
    assert defaults.max_age == REJECTED_MAX_AGE_SECONDS_DEFAULT


@pytest.mark.parametrize("name,value", [("LEDGER_USAGE_MAX_BYTES", "lots"),
                                        ("LEDGER_USAGE_MAX_BYTES", "10"),
                                        ("LEDGER_REJECTED_MAX_AGE_SECONDS", "-1")])
def test_a_bad_limit_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        IngestSettings.from_env({name: value})


def test_the_usage_age_limit_never_drops_a_record_the_ledger_would_charge() -> None:
    assert OCCURRED_AT_PAST_HORIZON.total_seconds() == USAGE_MAX_AGE_SECONDS


def test_the_largest_rejection_fits_its_stream() -> None:
    headers, body = rejection_message(
        "occurred_at_out_of_range", "r\u202e" * 10_000, payload=b"\xff" * (MESSAGE_BYTES_MAX * 2),
        original_subject="ledger.usage.v1.255." + "s" * 10_000, original_sequence=2**63,
        original_msg_id="\U0001f680" * 10_000, rejection_id="rejected:" + "e" * 64 + ":1")
    # As NATS frames them: a version line, one `Name: value` line each, an empty line.
    header_bytes = len("NATS/1.0\r\n") + sum(len(f"{name}: {value}\r\n".encode())
                                              for name, value in headers.items()) + 2
    assert header_bytes + len(body) <= REJECTED_MESSAGE_BYTES_MAX

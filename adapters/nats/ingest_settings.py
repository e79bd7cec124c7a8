"""Named settings of usage ingestion over the bus, each with a default and an environment name.

LEDGER_INGEST_BATCH_SIZE          records fetched and committed together (default 1000)
LEDGER_INGEST_WAIT_MS             longest wait for a batch to fill before committing what came
                                  (default 20 ms): the latency bound at low rates
LEDGER_INGEST_IN_FLIGHT_MAX       batches fetched but not yet acknowledged, per process
                                  (default 8): bounds the consumer's memory in a burst
LEDGER_USAGE_PARTITIONS           account partitions of the stream, fixed when the stream is
                                  created (default 8)
LEDGER_USAGE_DUPLICATE_WINDOW_SECONDS  the broker's Nats-Msg-Id window (default 120 s); the
                                  ledger's own idempotency keys cover everything after it
LEDGER_INGEST_ACK_WAIT_SECONDS    how long the broker waits for an ack before redelivering
                                  (default 30 s)
LEDGER_USAGE_REPLICAS             copies of the ledger's streams (usage, rejections, views)
                                  in a NATS cluster (default 1; 3 in compose.yaml)
LEDGER_USAGE_MAX_BYTES            backlog the usage stream holds (default 8 GiB); when full,
                                  producers are refused (discard new), nothing is dropped
LEDGER_REJECTED_MAX_BYTES         rejections kept (default 1 GiB), oldest dropped first
LEDGER_REJECTED_MAX_AGE_SECONDS   rejections kept at most this long (default 30 days)
LEDGER_USAGE_PIN_TTL_SECONDS      failover: a partition's pinned consumer process that has not
                                  pulled for this long loses the partition to another one
                                  (default 15 s; JetStream priority group, pinned client)
LEDGER_HEALTH_FILE                a consumer touches this file while it is connected and its
                                  partition loops run; `ledger health` checks its age
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

STREAM_NAME = "LEDGER_USAGE"
USAGE_SUBJECT_PREFIX = "ledger.usage.v1"
# The stream of the usage subjects: only `ledger.usage.v1.<account_id>` is taken (a publish on
# any other subject gets "no responders" at once instead of being stored for no one).
STREAM_USAGE_SUBJECTS = f"{USAGE_SUBJECT_PREFIX}.*"
REJECTED_SUBJECT = "ledger.usage.rejected"
REJECTED_STREAM_NAME = "LEDGER_USAGE_REJECTED"
CONSUMER_NAME_PREFIX = "ledger-usage-p"

BATCH_SIZE_DEFAULT = 1000
BATCH_SIZE_MAX = 10_000  # the service's own limit on one usage batch
WAIT_MS_DEFAULT = 20
WAIT_MS_MAX = 60_000
# Room for two writer jobs of JOB_BATCHES_MAX batches: one commits while the next is prepared
# (the writer's pipeline); with 4, one job took every batch in flight and the pipeline had
# nothing to prepare (the figures: BENCHMARKS.md, "Figures moved from code comments").
IN_FLIGHT_MAX_DEFAULT = 8
IN_FLIGHT_MAX_LIMIT = 64
# A writer job (one transaction) takes at most this many batches' worth of records. Without
# this bound one job took every batch in flight (8 x 1,000 fit in the service's 10,000 limit)
# and the next had nothing to prepare while it committed. Draining, one consumer process ran
# 6-19% faster with it in 5 of 6 same-run pairs (BENCHMARKS.md, "Session of 2026-12-02,
# 15:05"); two processes (4 partitions each) are unchanged; jobs of 2 batches were slower.
JOB_BATCHES_MAX = 4
PARTITIONS_DEFAULT = 8
PARTITIONS_MAX = 256
DUPLICATE_WINDOW_SECONDS_DEFAULT = 120.0
ACK_WAIT_SECONDS_DEFAULT = 30.0
# Long enough that a live process busy committing (it pulls at least every IDLE_FETCH_SECONDS
# while idle, and right after each batch) is not unpinned on a loaded machine; short enough
# that a dead one's partitions wait seconds, not minutes.
PIN_TTL_SECONDS_DEFAULT = 15.0
PIN_TTL_SECONDS_MIN = 2.0
PIN_TTL_SECONDS_MAX = 3600.0
REPLICAS_DEFAULT = 1
REPLICAS_MAX = 5  # JetStream's own limit
# One usage record is a few hundred bytes of JSON; anything far bigger is not one record.
MESSAGE_BYTES_MAX = 8192
# Retention (docs/ingestion.md, "Retention and sizing"). The usage stream is a work queue: a
# record leaves it once acknowledged, so its limits bound the backlog, not the history.
GIB = 1024**3
USAGE_MAX_BYTES_DEFAULT = 8 * GIB
USAGE_MAX_BYTES_MIN = 1024**2
REJECTED_MAX_BYTES_DEFAULT = 1 * GIB
REJECTED_MAX_AGE_SECONDS_DEFAULT = 30 * 24 * 3600.0
# A rejection carries the original body (at most MESSAGE_BYTES_MAX, else truncated) and
# bounded headers (reason, subject, ids, size, digest): well under this.
REJECTED_MESSAGE_BYTES_MAX = 16 * 1024
BYTES_SETTING_MAX = 2**50


def _int_setting(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, "
                         f"got {raw!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value}")
    return value


def _seconds_setting(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def _bounded_seconds(env: Mapping[str, str], name: str, default: float, low: float,
                     high: float) -> float:
    value = _seconds_setting(env, name, default)
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low:g} to {high:g} seconds, got {value:g}")
    return value


@dataclass(frozen=True)
class IngestSettings:
    batch_size: int = BATCH_SIZE_DEFAULT
    wait_ms: int = WAIT_MS_DEFAULT
    in_flight_max: int = IN_FLIGHT_MAX_DEFAULT
    partitions: int = PARTITIONS_DEFAULT
    duplicate_window_seconds: float = DUPLICATE_WINDOW_SECONDS_DEFAULT
    ack_wait_seconds: float = ACK_WAIT_SECONDS_DEFAULT
    replicas: int = REPLICAS_DEFAULT
    usage_max_bytes: int = USAGE_MAX_BYTES_DEFAULT
    rejected_max_bytes: int = REJECTED_MAX_BYTES_DEFAULT
    rejected_max_age_seconds: float = REJECTED_MAX_AGE_SECONDS_DEFAULT
    health_file: str | None = None
    pin_ttl_seconds: float = PIN_TTL_SECONDS_DEFAULT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IngestSettings:
        env = os.environ if env is None else env
        return cls(
            batch_size=_int_setting(env, "LEDGER_INGEST_BATCH_SIZE", BATCH_SIZE_DEFAULT,
                                    1, BATCH_SIZE_MAX),
            wait_ms=_int_setting(env, "LEDGER_INGEST_WAIT_MS", WAIT_MS_DEFAULT, 1, WAIT_MS_MAX),
            in_flight_max=_int_setting(env, "LEDGER_INGEST_IN_FLIGHT_MAX",
                                       IN_FLIGHT_MAX_DEFAULT, 1, IN_FLIGHT_MAX_LIMIT),
            partitions=_int_setting(env, "LEDGER_USAGE_PARTITIONS", PARTITIONS_DEFAULT,
                                    1, PARTITIONS_MAX),
            duplicate_window_seconds=_seconds_setting(
                env, "LEDGER_USAGE_DUPLICATE_WINDOW_SECONDS", DUPLICATE_WINDOW_SECONDS_DEFAULT),
            ack_wait_seconds=_seconds_setting(env, "LEDGER_INGEST_ACK_WAIT_SECONDS",
                                              ACK_WAIT_SECONDS_DEFAULT),
            replicas=_int_setting(env, "LEDGER_USAGE_REPLICAS", REPLICAS_DEFAULT, 1,
                                  REPLICAS_MAX),
            usage_max_bytes=_int_setting(env, "LEDGER_USAGE_MAX_BYTES", USAGE_MAX_BYTES_DEFAULT,
                                         USAGE_MAX_BYTES_MIN, BYTES_SETTING_MAX),
            rejected_max_bytes=_int_setting(env, "LEDGER_REJECTED_MAX_BYTES",
                                            REJECTED_MAX_BYTES_DEFAULT, USAGE_MAX_BYTES_MIN,
                                            BYTES_SETTING_MAX),
            rejected_max_age_seconds=_seconds_setting(env, "LEDGER_REJECTED_MAX_AGE_SECONDS",
                                                      REJECTED_MAX_AGE_SECONDS_DEFAULT),
            health_file=env.get("LEDGER_HEALTH_FILE") or None,
            pin_ttl_seconds=_bounded_seconds(env, "LEDGER_USAGE_PIN_TTL_SECONDS",
                                             PIN_TTL_SECONDS_DEFAULT, PIN_TTL_SECONDS_MIN,
                                             PIN_TTL_SECONDS_MAX),
        )

    @property
    def job_records_max(self) -> int:
        """The most records a consumer's writer records in one transaction (`JOB_BATCHES_MAX`
        batches, never above the service's batch limit): with the default 8 in flight, one job
        commits while the next is prepared."""
        return min(BATCH_SIZE_MAX, JOB_BATCHES_MAX * self.batch_size)

    @property
    def max_ack_pending(self) -> int:
        """Per partition consumer: room for every batch this process may hold, twice over."""
        return self.batch_size * self.in_flight_max * 2

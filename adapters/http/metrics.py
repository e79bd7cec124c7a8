"""Prometheus metrics: request latency by route, usage outcomes over HTTP, and at scrape time
the ledger's own ingest counters (kept in PostgreSQL with the events, so they count every
process: bus consumers and the API alike) and the projections' lag.

Request metrics live in one registry per process (`Metrics.shared()`), because a histogram can be
registered once; the database-backed figures are read by a collector per app when /metrics is
scraped, so they are never stale and cost nothing between scrapes.

With several HTTP worker processes (`adapters.http.workers`), prometheus-client's multiprocess
mode is on (PROMETHEUS_MULTIPROC_DIR, set for each worker before it imports the client): each
worker writes its samples to files there, and `request_metrics()` sums every worker's files, so
whichever worker answers a scrape reports the requests of all of them (no per-worker label).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                           5.0, 10.0)


class Metrics:
    _shared: ClassVar[Metrics | None] = None

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "ledger_http_request_duration_seconds", "HTTP request latency by route",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS_SECONDS,
            registry=self.registry)
        self.usage_records = Counter(
            "ledger_http_usage_records", "Usage records received over POST /v1/usage, by outcome",
            ["outcome"], registry=self.registry)

    def request_metrics(self) -> bytes:
        """The request metrics in Prometheus text format: this process's, or with several
        workers (multiprocess mode) the sums over every worker."""
        if not os.environ.get(MULTIPROCESS_DIR_ENV):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    @classmethod
    def shared(cls) -> Metrics:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared


class LedgerCollector(Collector):
    """Figures read from the database when scraped."""

    def __init__(self, counters: Callable[[], dict[str, int]],
                 freshness: Callable[[], tuple[int, int]]) -> None:
        self.counters = counters
        self.freshness = freshness

    def collect(self) -> Iterator[Any]:
        ingest = CounterMetricFamily("ledger_usage_events",
                                     "Usage records by outcome, every process (from the store)",
                                     labels=["outcome"])
        for name, value in sorted(self.counters().items()):
            ingest.add_metric([name.removeprefix("usage_")], value)
        yield ingest
        position, head = self.freshness()
        yield GaugeMetricFamily("ledger_projection_position", "Log position the read models "
                                "reflect", value=position)
        yield GaugeMetricFamily("ledger_log_head_position", "Last position in the event log",
                                value=head)
        yield GaugeMetricFamily("ledger_projection_lag_events", "Events the read models are "
                                "behind the log (an upper bound)", value=max(head - position, 0))

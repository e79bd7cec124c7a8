"""`ledger up`'s auto-recharge watcher in an OS process of its own, for the two-process test.

    python -m tests.stripe.recharge_watcher_process DATABASE_URL DATA_DIR

Stripe and the poll interval come from the environment, as in `ledger up`; SIGTERM stops it.
The one change from production: localstripe sends no webhook here, so a payment's outcome is
read from Stripe at the next pass instead of after `READ_AFTER`.
"""

from __future__ import annotations

import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path

import services.payments.auto_recharge as auto_recharge
from adapters.nats.ingest_settings import IngestSettings
from adapters.runtime.auto_recharge_runner import run_watcher
from adapters.runtime.processes import Runtime


def main() -> None:
    database_url, data_dir = sys.argv[1], Path(sys.argv[2])
    auto_recharge.READ_AFTER = timedelta(0)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run_watcher(Runtime(database_url, "", data_dir, IngestSettings()), stop)


if __name__ == "__main__":
    main()

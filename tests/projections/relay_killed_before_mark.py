"""A views relay that kills its own process (SIGKILL) after publishing a round of outbox rows,
before marking them relayed: run by tests/projections/test_views_relay.py.

    python -m tests.projections.relay_killed_before_mark <database_url> <nats_url>
"""

from __future__ import annotations

import os
import signal
import sys
import time

from adapters.nats.views_relay import NatsViewsRelay
from adapters.postgres.view_outbox import PostgresViewOutbox

WAIT_SECONDS = 60.0


class KilledBeforeMark(PostgresViewOutbox):
    def mark_relayed(self, up_to_seq: int) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def main(database_url: str, nats_url: str) -> None:
    NatsViewsRelay(nats_url, KilledBeforeMark(database_url))
    time.sleep(WAIT_SECONDS)  # the relay kills the process long before
    sys.exit("the relay never reached mark_relayed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

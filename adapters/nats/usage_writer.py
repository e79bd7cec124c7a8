"""The usage consumer's one writer thread: group commit, pipelined through the service.

Partition loops (on the event loop) submit decoded batches; the writer thread records them with
`Ledger.record_usage_batches`, which prepares batch N+1 (pricing, events, encoding) while batch
N commits in PostgreSQL. Measured with the consumer alone on queued records, the writer thread
was busy ~96% of the time when it prepared and committed each batch in turn; overlapping the two
is the cheapest large gain left on this path.

Group commit is kept: the writer asks for its next job only when the pipeline is ready for one,
and a job is every submission waiting at that moment, up to `job_records_max` records (the
consumer's setting, a few batches; never above the service's 10,000-record limit), so a slow
trickle over many partitions is still one transaction, not one per partition, and a burst over
every partition still leaves a second job to prepare while the first commits. When
nothing is waiting, the writer tells the pipeline so (a `None` in its stream) and the batch in
flight is finished and answered at once: latency at low rates does not wait for a next batch.

If the same `usage_id` occurs twice in one job, the job is split into groups in which each id
occurs once, recorded in order, so the service's answer maps back to exactly one message.

Bus-level rejections (bad JSON, bad fields) are counted here too, once each (keyed by stream
sequence), in their own transaction, when no batch is in flight.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eventsourcing.persistence import IntegrityError

from adapters.nats.usage_port import Delivery
from domain.usage import UsageRecord
from services.keyed_recording import KeyRow, RejectionRow
from services.ledger import Ledger
from services.usage.outcomes import UsageBatchOutcome, UsageRejection
from services.usage.preparing import USAGE_BATCH_SIZE_MAX

log = logging.getLogger(__name__)

# Bus-level rejections are keyed by stream sequence in this scope, so each is counted once.
BUS_REJECTION_SCOPE = "bus_rejection"
COUNTER_INVALID = "usage_invalid"
# The writer thread looks at its stop flag this often while it waits for work.
WRITER_POLL_SECONDS = 0.5
# If the event loop does not answer the writer for this long, it is checked for being gone.
LOOP_GONE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Rejected:
    msg: Delivery
    code: str
    message: str


# What the ledger said about one message: recorded (True), duplicate (False), or rejected.
Verdict = UsageRejection | bool
Verdicts = dict[int, Verdict]  # by id() of the message


@dataclass(frozen=True, slots=True)
class Submission:
    """One partition's decoded batch, waiting for the writer."""

    items: list[tuple[Delivery, UsageRecord]]
    bus_rejected: list[Rejected]
    done: asyncio.Future[Verdicts]


@dataclass
class _Job:
    """The submissions recorded together, and their answers as they come."""

    taken: list[Submission]
    groups: list[list[tuple[Delivery, UsageRecord]]]
    bus_rejected: list[Rejected]
    outcomes: list[UsageBatchOutcome] = field(default_factory=list)


def split_by_repeats(items: Sequence[tuple[Delivery, UsageRecord]]
                     ) -> list[list[tuple[Delivery, UsageRecord]]]:
    """Groups in which each usage_id appears once: the n-th copy of an id goes to group n.

    The service answers per usage_id; with one copy per group its answer maps back to exactly
    one message. Groups commit in order, so later copies meet the earlier ones as stored keys.
    """
    if items and len({record.usage_id for _, record in items}) == len(items):
        return [list(items)]  # the usual case, no repeats: one group, a third of the work
    seen: dict[str, int] = {}
    groups: list[list[tuple[Delivery, UsageRecord]]] = []
    for msg, record in items:
        index = seen.get(record.usage_id, 0)
        seen[record.usage_id] = index + 1
        if index == len(groups):
            groups.append([])
        groups[index].append((msg, record))
    return groups


class UsageWriter:
    def __init__(self, ledger: Ledger, rejection_key: Callable[[Delivery], str], *,
                 job_records_max: int = USAGE_BATCH_SIZE_MAX) -> None:
        self.ledger = ledger
        self.rejection_key = rejection_key
        self.job_records_max = min(job_records_max, USAGE_BATCH_SIZE_MAX)
        self._submissions: asyncio.Queue[Submission] = asyncio.Queue()
        self._carried: Submission | None = None
        self._stopping = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix="ledger-usage-writer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_done: asyncio.Future[None] | None = None

    def start(self) -> UsageWriter:
        self._loop = asyncio.get_running_loop()
        self._thread_done = self._loop.run_in_executor(self._executor, self._write_forever)
        return self

    async def stop(self) -> None:
        """Finish (every submission was answered before the loops stopped) and end the thread."""
        self._stopping.set()
        if self._thread_done is not None:
            try:
                await self._thread_done
            except Exception:
                log.exception("the usage writer thread failed")
        self._executor.shutdown(wait=False)

    async def submit(self, items: list[tuple[Delivery, UsageRecord]],
                     bus_rejected: list[Rejected]) -> Verdicts:
        """Record a decoded batch; return each message's verdict once committed (or raise)."""
        assert self._loop is not None and self._thread_done is not None, "start() first"
        if self._thread_done.done():
            raise RuntimeError("the usage writer thread is not running")
        submission = Submission(items, bus_rejected, self._loop.create_future())
        await self._submissions.put(submission)
        return await submission.done

    # On the event loop, asked by the writer thread -------------------------------------------

    async def _next_job(self, wait_seconds: float) -> _Job | None:
        """Every submission waiting now (up to the service's batch limit), or None if none
        came within `wait_seconds` (0: do not wait)."""
        first = self._carried
        self._carried = None
        if first is None:
            if self._submissions.empty() and wait_seconds <= 0:
                return None
            try:
                first = await asyncio.wait_for(self._submissions.get(), wait_seconds)
            except TimeoutError:
                return None
        taken = [first]
        size = len(first.items)
        while not self._submissions.empty():
            following = self._submissions.get_nowait()
            if size + len(following.items) > self.job_records_max:
                self._carried = following
                break
            taken.append(following)
            size += len(following.items)
        items = [item for submission in taken for item in submission.items]
        bus_rejected = [r for submission in taken for r in submission.bus_rejected]
        return _Job(taken, split_by_repeats(items), bus_rejected)

    @staticmethod
    def _answer(job: _Job) -> None:
        verdicts: Verdicts = {}
        for group, outcome in zip(job.groups, job.outcomes, strict=True):
            recorded = {r.usage_id for r in outcome.recorded}
            refused = {r.usage_id: r for r in outcome.rejections}
            for msg, record in group:
                verdicts[id(msg)] = refused.get(record.usage_id) or (
                    record.usage_id in recorded)
        for submission in job.taken:
            if not submission.done.done():
                submission.done.set_result(verdicts)

    @staticmethod
    def _fail(job: _Job, error: BaseException) -> None:
        for submission in job.taken:
            if not submission.done.done():
                submission.done.set_exception(error)

    # In the writer thread ----------------------------------------------------------------------

    def _ask_loop(self, wait_seconds: float) -> _Job | None:
        """The next job from the event loop (`_next_job` bounds its own wait; the long timeout
        here only notices an event loop that stopped running)."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._next_job(wait_seconds), self._loop)
        while True:
            try:
                return future.result(timeout=wait_seconds + LOOP_GONE_SECONDS)
            except concurrent.futures.TimeoutError:
                if not self._loop.is_running():
                    self._stopping.set()
                    return None
            except concurrent.futures.CancelledError:
                return None

    def _write_forever(self) -> None:
        """Run the pipeline until stopped; after a failed commit, fail the jobs it held and
        start it again (their messages are nak'ed and delivered again)."""
        while not self._stopping.is_set():
            unanswered: dict[int, _Job] = {}
            pulled: deque[tuple[_Job, int]] = deque()
            try:
                outcomes = self.ledger.record_usage_batches(self._stream(unanswered, pulled))
                for outcome in outcomes:
                    job, index = pulled.popleft()
                    job.outcomes.append(outcome)
                    if index == len(job.groups) - 1:
                        del unanswered[id(job)]
                        self._call_loop(self._answer, job)
            except Exception as error:
                if self._loop is None or self._loop.is_closed():
                    return
                log.warning("recording a usage batch failed: %r", error)
                for job in unanswered.values():
                    self._call_loop(self._fail, job, error)

    def _stream(self, unanswered: dict[int, _Job], pulled: deque[tuple[_Job, int]]
                ) -> Iterator[list[UsageRecord] | None]:
        """The batches for `record_usage_batches`, one per group, as the pipeline asks.
        Every job taken is in `unanswered` until answered, so a failure can fail it."""
        while not self._stopping.is_set():
            job = self._ask_loop(0)
            if job is None:
                # Nothing waiting: finish the batch in flight, then wait for work.
                yield None
                job = self._ask_loop(WRITER_POLL_SECONDS)
                if job is None:
                    continue
            unanswered[id(job)] = job
            if job.bus_rejected:
                # Counted in a transaction of its own, with no batch in flight beside it.
                yield None
                try:
                    self._count_bus_rejections(job.bus_rejected)
                except Exception as error:
                    del unanswered[id(job)]
                    self._call_loop(self._fail, job, error)
                    continue
            if not job.groups:
                del unanswered[id(job)]
                self._call_loop(self._answer, job)
                continue
            for index, group in enumerate(job.groups):
                pulled.append((job, index))
                yield [record for _, record in group]

    def _call_loop(self, callback: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(callback, *args)

    def _count_bus_rejections(self, rejected: list[Rejected]) -> None:
        by_key = {self.rejection_key(item.msg): item for item in rejected}
        for _attempt in range(2):
            known = self.ledger.keyed.select_keys(BUS_REJECTION_SCOPE, list(by_key))
            new = {key: item for key, item in by_key.items() if key not in known}
            if not new:
                return
            now = datetime.now(UTC)
            try:
                self.ledger.save(
                    idempotency_keys=[KeyRow(BUS_REJECTION_SCOPE, key, item.code, item.code)
                                      for key, item in new.items()],
                    usage_rejections=[RejectionRow("", "", item.code, item.message, "", now)
                                      for item in new.values()],
                    counters={COUNTER_INVALID: len(new)},
                )
                return
            except IntegrityError:
                continue  # another process counted some of them first: look again

"""The engine scheduler: fair, first-come order of chunk requests, with optional micro-batching.

Every HTTP request is a :class:`Job`. A job submits one chunk at a time (the pipeline asks for the
next chunk only after the previous one is out), so a first-in, first-out queue of chunks already
serves jobs round-robin: a long text cannot hold the engine while short ones wait. With
``first_chunk_priority`` a job's first chunk goes ahead of the later chunks of jobs that already
have audio (first-come among first chunks), so a new client hears something soon even when the
engine is busy; at most ``max_active`` first chunks can ever be ahead of a later one.

With batching on, a worker that takes a short chunk also takes the other short chunks that are
queued, and waits up to ``window_ms`` for more while other jobs are in flight, then runs them all
through one ``engine.run`` call. Whether that raises throughput depends on the engine and the
hardware (``bench/serve_batching.py`` measures it), so it is a setting, off by default.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from itertools import count

from koel.backends.base import Engine, EngineRequest, EngineResult
from koel.serve.settings import BatchPolicy

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """The job was cancelled (client gone, or timed out) before its chunk ran."""


class SynthesisTimeout(Exception):
    """The job ran past its deadline."""


class SchedulerClosed(Exception):
    """The scheduler is shutting down and takes no new work."""


@dataclass
class Job:
    """One client request's claim on the engine: a deadline and a cancel flag."""

    id: int
    deadline: float
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: int = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class _Item:
    job: Job
    request: EngineRequest
    first: bool = False
    future: Future[EngineResult] = field(default_factory=Future)


@dataclass
class SchedulerStats:
    """Counters since start: engine calls, chunks run, and how many of them shared a call."""

    calls: int = 0
    chunks: int = 0
    batched_chunks: int = 0
    largest_batch: int = 0
    failures: int = 0


class Scheduler:
    """Runs chunk requests from many jobs through one engine on ``workers`` threads.

    ``after_call`` runs in a worker after each engine call; ``on_idle`` runs once a worker has had
    nothing to do for ``idle_after`` seconds after a busy spell (once per spell, not in a loop).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        policy: BatchPolicy | None = None,
        workers: int = 1,
        first_chunk_priority: bool = True,
        after_call: Callable[[], object] | None = None,
        on_idle: Callable[[], object] | None = None,
        idle_after: float = 1.0,
    ) -> None:
        self.engine = engine
        self.after_call = after_call
        self.on_idle = on_idle
        self.idle_after = idle_after
        self.policy = policy or BatchPolicy()
        self.workers = workers
        self.first_chunk_priority = first_chunk_priority
        self.stats = SchedulerStats()
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._started = False
        self._open_jobs = 0
        self._ids = count(1)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker threads (once; a stopped scheduler stays stopped)."""
        with self._cond:
            if self._started:
                return
            self._started = True
            for i in range(self.workers):
                thread = threading.Thread(target=self._work, name=f"koel-engine-{i}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Take no new work, let the workers finish what is queued, then join them."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            for item in self._queue:
                item.future.set_exception(SchedulerClosed("the server is shutting down"))
            self._queue.clear()
            self._threads = [t for t in self._threads if t.is_alive()]

    # -- jobs -------------------------------------------------------------------------------------

    @property
    def open_jobs(self) -> int:
        return self._open_jobs

    @property
    def queued(self) -> int:
        return len(self._queue)

    def open_job(self, timeout: float) -> Job:
        with self._cond:
            if self._closed:
                raise SchedulerClosed("the server is shutting down")
            self._open_jobs += 1
            return Job(next(self._ids), time.monotonic() + timeout)

    def close_job(self, job: Job) -> None:
        """Forget a job: its queued chunks are dropped (a running chunk finishes)."""
        job.cancel()
        with self._cond:
            self._open_jobs -= 1
            self._drop_cancelled_locked()

    def submit(self, job: Job, requests: list[EngineRequest]) -> list[Future[EngineResult]]:
        items = [_Item(job, r, first=job.submitted == 0 and i == 0) for i, r in enumerate(requests)]
        with self._cond:
            if self._closed:
                raise SchedulerClosed("the server is shutting down")
            job.submitted += len(items)
            for item in items:
                if item.first and self.first_chunk_priority:
                    # after the other first chunks, ahead of every later chunk
                    at = next(
                        (i for i, queued in enumerate(self._queue) if not queued.first), len(self._queue)
                    )
                    self._queue.insert(at, item)
                else:
                    self._queue.append(item)
            self._cond.notify_all()
        return [i.future for i in items]

    def run(self, job: Job, requests: list[EngineRequest]) -> list[EngineResult]:
        """Submit and wait (from a request thread) until done, cancelled or past the deadline."""
        if job.cancelled.is_set():
            raise JobCancelled(f"job {job.id} was cancelled")
        futures = self.submit(job, requests)
        results = []
        for future in futures:
            try:
                results.append(future.result(timeout=max(0.0, job.remaining())))
            except FutureTimeout:
                job.cancel()
                raise SynthesisTimeout(f"job {job.id} ran past its deadline") from None
        return results

    # -- workers ----------------------------------------------------------------------------------

    def _drop_cancelled_locked(self) -> None:
        kept: deque[_Item] = deque()
        for item in self._queue:
            if item.job.cancelled.is_set():
                item.future.set_exception(JobCancelled(f"job {item.job.id} was cancelled"))
            else:
                kept.append(item)
        self._queue = kept

    def _short(self, item: _Item) -> bool:
        return len(item.request.ids) <= self.policy.max_tokens

    def _take_locked(self) -> list[_Item]:
        """Pop the next chunk, and with batching the queued short chunks that can join it.

        The queue must hold at least one chunk of a job that is not cancelled.
        """
        head = self._queue.popleft()
        batch = [head]
        policy = self.policy
        if not (policy.enabled and policy.max_batch > 1 and self._short(head)):
            return batch
        deadline = time.monotonic() + policy.window_ms / 1000.0
        while True:
            for item in [i for i in self._queue if self._short(i) and not i.job.cancelled.is_set()]:
                if len(batch) >= policy.max_batch:
                    break
                self._queue.remove(item)
                batch.append(item)
            jobs_waited_for = self._open_jobs - len({i.job.id for i in batch})
            remaining = deadline - time.monotonic()
            if len(batch) >= policy.max_batch or jobs_waited_for <= 0 or remaining <= 0 or self._closed:
                return batch
            self._cond.wait(remaining)

    def _next_batch(self, idle_timeout: float | None) -> list[_Item] | None:
        """The next batch to run; None once closed and drained; [] after ``idle_timeout`` s idle."""
        deadline = None if idle_timeout is None else time.monotonic() + idle_timeout
        with self._cond:
            while True:
                self._drop_cancelled_locked()  # a timed-out job leaves its chunk behind
                if self._queue:
                    return self._take_locked()
                if self._closed:
                    return None
                if deadline is None:
                    self._cond.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)

    def _work(self) -> None:
        busy = False  # ran an engine call since the last idle hook
        while True:
            idle_timeout = self.idle_after if busy and self.on_idle is not None else None
            batch = self._next_batch(idle_timeout)
            if batch is None:
                return
            if not batch:
                busy = False
                self._hook(self.on_idle)
                continue
            busy = True
            self._execute(batch)
            self._hook(self.after_call)

    @staticmethod
    def _hook(hook: Callable[[], object] | None) -> None:
        if hook is None:
            return
        try:
            hook()
        except Exception:
            log.exception("a scheduler hook failed")

    def _execute(self, batch: list[_Item]) -> None:
        try:
            results = self.engine.run([i.request for i in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"engine returned {len(results)} results for {len(batch)} requests")
        except Exception as exc:
            if len(batch) > 1:  # one bad chunk must not fail its neighbours: run them alone
                log.warning(
                    "batched engine call failed (%s); running its %d chunks one by one", exc, len(batch)
                )
                for item in batch:
                    self._execute([item])
                return
            log.exception("engine call failed for job %d", batch[0].job.id)
            self.stats.failures += 1
            batch[0].future.set_exception(exc)
            return
        self.stats.calls += 1
        self.stats.chunks += len(batch)
        if len(batch) > 1:
            self.stats.batched_chunks += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for item, result in zip(batch, results, strict=True):
            item.future.set_result(result)


class JobEngine:
    """An :class:`Engine` for one job: the pipeline calls ``run`` and the scheduler does the work."""

    def __init__(self, scheduler: Scheduler, job: Job) -> None:
        self.scheduler = scheduler
        self.job = job
        self.name = f"{scheduler.engine.name} (scheduled)"

    def run(self, requests: list[EngineRequest]) -> list[EngineResult]:
        return self.scheduler.run(self.job, requests)

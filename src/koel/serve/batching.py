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

A chunk can also be streamed (:meth:`Scheduler.stream`, on engines with a ``stream`` method): the
worker runs it alone and hands each piece of audio to the job's thread as soon as it is made, so
a client hears the first time tile of a chunk rather than waiting for the whole chunk.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import numpy as np

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
    """A chunk to run through ``engine.run``, or with ``call`` set, work run alone in a worker:
    ``call(engine)``'s return value is the future's result."""

    job: Job
    request: EngineRequest
    first: bool = False
    future: Future[Any] = field(default_factory=Future)
    call: Callable[[Any], object] | None = None
    chunk: bool = True  # one of the job's chunks (a call that prepares them is not)


@dataclass
class SchedulerStats:
    """Counters since start: engine calls, chunks run, and how many of them shared a call."""

    calls: int = 0
    chunks: int = 0
    batched_chunks: int = 0
    largest_batch: int = 0
    failures: int = 0
    whole_streams: int = 0  # streamed chunks made without their early-piece options (others waited)


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
                self._enqueue_locked(item)
            self._cond.notify_all()
        return [i.future for i in items]

    def _enqueue_locked(self, item: _Item) -> None:
        if item.first and self.first_chunk_priority:
            # after the other first chunks, ahead of every later chunk
            at = next((i for i, queued in enumerate(self._queue) if not queued.first), len(self._queue))
            self._queue.insert(at, item)
        else:
            self._queue.append(item)

    def run(self, job: Job, requests: list[EngineRequest]) -> list[EngineResult]:
        """Submit and wait (from a request thread) until done, cancelled or past the deadline."""
        if job.cancelled.is_set():
            raise JobCancelled(f"job {job.id} was cancelled")
        return [_wait(job, future) for future in self.submit(job, requests)]

    def call(self, job: Job, request: EngineRequest, fn: Callable[[Any], object]) -> Any:
        """Run ``fn(engine)`` in a worker (alone, in the queue's order; before a job's first chunk it
        has that chunk's priority) and wait for its result like :meth:`run`. Work that prepares a
        job's chunks, such as a voice's tile prior: it does not count as one of them."""
        if job.cancelled.is_set():
            raise JobCancelled(f"job {job.id} was cancelled")
        return _wait(job, self._submit_call(job, request, fn, counted=False))

    def stream(
        self, job: Job, request: EngineRequest, **options: object
    ) -> tuple[np.ndarray, Iterator[np.ndarray]]:
        """``engine.stream(request, **options)`` run in a worker: (durations, audio pieces), each
        piece handed over as soon as the worker has made it.

        The worker holds the engine until the chunk is done, as :meth:`run` does; a cancelled job
        (client gone, deadline passed) stops it after the piece in progress. Early pieces cost
        compute (koel's time tiles each recompute some context: a 3 s sentence took 1.6x its
        untiled time), so ``options`` apply only while nothing else waits for the engine; with
        other work queued the worker calls ``engine.stream(request)`` alone (its default pieces).
        Reading past the job's deadline raises :class:`SynthesisTimeout`; a failure in the engine
        surfaces in the reader, after the pieces made before it.
        """
        if job.cancelled.is_set():
            raise JobCancelled(f"job {job.id} was cancelled")
        handoff: queue.Queue[tuple[str, object]] = queue.Queue()

        def produce(engine: Any) -> None:
            if options and self._others_waiting():  # throughput first: no tiles, no extra compute
                self.stats.whole_streams += 1
                durations, pieces = engine.stream(request)
            else:
                durations, pieces = engine.stream(request, **options)
            handoff.put(("durations", durations))
            try:
                for audio in pieces:
                    handoff.put(("audio", audio))
                    if job.cancelled.is_set():  # the reader must not take a cut chunk for a whole one
                        raise JobCancelled(f"job {job.id} was cancelled")
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()

        future = self._submit_call(job, request, produce, counted=True)
        future.add_done_callback(lambda f: handoff.put(("end", f)))

        def take() -> tuple[str, object]:
            try:
                return handoff.get(timeout=max(0.0, job.remaining()))
            except queue.Empty:
                job.cancel()
                raise SynthesisTimeout(f"job {job.id} ran past its deadline") from None

        def end(done: object) -> None:  # the work is over: re-raise its failure, if any
            assert isinstance(done, Future)
            done.result()

        kind, value = take()
        if kind == "end":
            end(value)
            raise RuntimeError("the engine's stream ended without durations")

        def pieces() -> Iterator[np.ndarray]:
            while True:
                kind, value = take()
                if kind == "end":
                    end(value)
                    return
                yield np.asarray(value)

        return np.asarray(value), pieces()

    def _others_waiting(self) -> bool:
        """Whether chunks of jobs that are not cancelled are queued (called from a worker)."""
        with self._cond:
            return any(not item.job.cancelled.is_set() for item in self._queue)

    def _submit_call(
        self, job: Job, request: EngineRequest, fn: Callable[[Any], object], counted: bool
    ) -> Future[Any]:
        """Queue ``fn`` as one item; ``counted``: it is one of the job's chunks (work done before
        the first chunk, such as a tile prior, keeps the first chunk's priority)."""
        item = _Item(job, request, first=job.submitted == 0, call=fn, chunk=counted)
        with self._cond:
            if self._closed:
                raise SchedulerClosed("the server is shutting down")
            job.submitted += int(counted)
            self._enqueue_locked(item)
            self._cond.notify_all()
        return item.future

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
        """Whether ``item`` may share an engine call (calls and streams always run alone)."""
        return item.call is None and len(item.request.ids) <= self.policy.max_tokens

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
        if batch[0].call is not None:
            self._execute_call(batch[0])
            return
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

    def _execute_call(self, item: _Item) -> None:
        assert item.call is not None
        try:
            result = item.call(self.engine)
        except Exception as exc:
            if not isinstance(exc, JobCancelled):
                log.exception("engine work failed for job %d", item.job.id)
                self.stats.failures += 1
            item.future.set_exception(exc)
            return
        self.stats.calls += 1
        self.stats.chunks += int(item.chunk)
        item.future.set_result(result)


def _wait(job: Job, future: Future[Any]) -> Any:
    """``future``'s result, waited for until ``job``'s deadline (then the job is cancelled)."""
    try:
        return future.result(timeout=max(0.0, job.remaining()))
    except FutureTimeout:
        job.cancel()
        raise SynthesisTimeout(f"job {job.id} ran past its deadline") from None


class JobEngine:
    """An :class:`Engine` for one job: the pipeline calls ``run`` and the scheduler does the work.

    Where the scheduler's engine streams (``stream`` and ``tile_prior``, as koel's ``fast`` engine
    does), so does this one, through :meth:`Scheduler.stream` and :meth:`Scheduler.call`; with
    ``streaming=False`` (or another engine) those attributes are None, and
    :meth:`koel.pipeline.Pipeline.pieces` makes each chunk whole.
    """

    def __init__(self, scheduler: Scheduler, job: Job, *, streaming: bool = True) -> None:
        self.scheduler = scheduler
        self.job = job
        self.name = f"{scheduler.engine.name} (scheduled)"
        engine = scheduler.engine
        can = streaming and callable(getattr(engine, "stream", None))
        self.stream: Callable[..., tuple[np.ndarray, Iterator[np.ndarray]]] | None = (
            self._stream if can else None
        )
        self.tile_prior: Callable[[EngineRequest], object] | None = (
            self._tile_prior if can and callable(getattr(engine, "tile_prior", None)) else None
        )

    def run(self, requests: list[EngineRequest]) -> list[EngineResult]:
        return self.scheduler.run(self.job, requests)

    def _stream(self, request: EngineRequest, **options: object) -> tuple[np.ndarray, Iterator[np.ndarray]]:
        return self.scheduler.stream(self.job, request, **options)

    def _tile_prior(self, request: EngineRequest) -> object:
        return self.scheduler.call(self.job, request, lambda engine: engine.tile_prior(request))

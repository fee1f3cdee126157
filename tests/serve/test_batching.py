"""The scheduler: fair order, micro-batching, failure isolation, cancellation and deadlines."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from koel.backends.base import EngineRequest
from koel.serve.batching import JobCancelled, Scheduler, SchedulerClosed, SynthesisTimeout
from koel.serve.settings import BatchPolicy

STYLE = np.zeros(256, dtype=np.float32)


def _request(n_tokens: int, marker: int = 43) -> EngineRequest:
    return EngineRequest(ids=(0, *([marker] * n_tokens), 0), style=STYLE)


@pytest.fixture()
def make_scheduler(fake_engine):
    made: list[Scheduler] = []

    def make(policy: BatchPolicy | None = None, engine=None) -> Scheduler:
        scheduler = Scheduler(engine or fake_engine, policy=policy)
        scheduler.start()
        made.append(scheduler)
        return scheduler

    yield make
    for s in made:
        s.stop(timeout=5)


def _run_jobs(
    scheduler: Scheduler, jobs: dict[str, list[EngineRequest]], stagger: float = 0.0
) -> dict[str, float]:
    """Run each job's chunks one after another in its own thread; return each job's finish time."""
    finished: dict[str, float] = {}
    errors: list[BaseException] = []

    def worker(name: str, requests: list[EngineRequest]) -> None:
        job = scheduler.open_job(timeout=30)
        try:
            for request in requests:
                [result] = scheduler.run(job, [request])
                assert len(result.audio) == 600 * int(result.durations.sum())
            finished[name] = time.monotonic()
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)
        finally:
            scheduler.close_job(job)

    threads = []
    for name, requests in jobs.items():
        threads.append(threading.Thread(target=worker, args=(name, requests)))
        threads[-1].start()
        time.sleep(stagger)
    for t in threads:
        t.join(30)
    assert not errors, errors
    return finished


def test_short_jobs_are_not_stuck_behind_a_long_one(make_scheduler, fake_engine):
    fake_engine.delay = 0.05
    scheduler = make_scheduler()
    jobs = {"long": [_request(50)] * 12, **{f"short{i}": [_request(10)] for i in range(3)}}
    finished = _run_jobs(scheduler, jobs, stagger=0.01)
    for i in range(3):  # each short job waits for at most a couple of the long job's chunks
        assert finished[f"short{i}"] < finished["long"] - 0.3


@pytest.mark.parametrize("priority", [True, False])
def test_first_chunks_go_ahead_of_later_chunks(fake_engine, priority):
    fake_engine.delay = 0.2
    scheduler = Scheduler(fake_engine, first_chunk_priority=priority)
    scheduler.start()
    try:
        blocker, a, b = (scheduler.open_job(timeout=10) for _ in range(3))
        futures = scheduler.submit(blocker, [_request(3, marker=43)])
        time.sleep(0.05)  # the blocker is running; the rest queue up behind it
        futures += scheduler.submit(a, [_request(3, marker=44)])  # a's first chunk
        futures += scheduler.submit(a, [_request(3, marker=45)])  # a's second chunk
        futures += scheduler.submit(b, [_request(3, marker=46)])  # b's first chunk
        for f in futures:
            f.result(10)
    finally:
        scheduler.stop(timeout=5)
    assert fake_engine.seen == ([43, 44, 46, 45] if priority else [43, 44, 45, 46])


def test_batching_groups_concurrent_short_requests(make_scheduler, fake_engine):
    fake_engine.delay = 0.05
    scheduler = make_scheduler(BatchPolicy(enabled=True, window_ms=20, max_batch=4, max_tokens=64))
    _run_jobs(scheduler, {f"j{i}": [_request(10 + i)] * 3 for i in range(8)})
    assert max(fake_engine.calls) > 1
    assert max(fake_engine.calls) <= 4
    assert sum(fake_engine.calls) == 24
    assert scheduler.stats.batched_chunks > 0 and scheduler.stats.largest_batch == max(fake_engine.calls)


def test_long_requests_are_never_batched(make_scheduler, fake_engine):
    fake_engine.delay = 0.02
    scheduler = make_scheduler(BatchPolicy(enabled=True, window_ms=20, max_batch=4, max_tokens=64))
    _run_jobs(scheduler, {f"j{i}": [_request(100)] * 2 for i in range(4)})
    assert fake_engine.calls == [1] * 8


def test_without_batching_every_call_has_one_request(make_scheduler, fake_engine):
    fake_engine.delay = 0.02
    scheduler = make_scheduler(BatchPolicy(enabled=False))
    _run_jobs(scheduler, {f"j{i}": [_request(10)] * 2 for i in range(6)})
    assert fake_engine.calls == [1] * 12


def test_a_lone_request_does_not_wait_for_the_batch_window(make_scheduler, fake_engine):
    scheduler = make_scheduler(BatchPolicy(enabled=True, window_ms=2000, max_batch=8))
    job = scheduler.open_job(timeout=10)
    start = time.monotonic()
    scheduler.run(job, [_request(5)])
    assert time.monotonic() - start < 1.0
    scheduler.close_job(job)


def test_one_failing_request_does_not_fail_its_batch_neighbours(make_scheduler, fake_engine):
    fake_engine.fail_on = {99}
    scheduler = make_scheduler(BatchPolicy(enabled=True, window_ms=50, max_batch=4))
    jobs = [scheduler.open_job(timeout=10) for _ in range(3)]
    futures = scheduler.submit(jobs[0], [_request(5)]) + scheduler.submit(jobs[1], [_request(5, marker=99)])
    futures += scheduler.submit(jobs[2], [_request(6)])
    assert len(futures[0].result(5).audio) > 0
    with pytest.raises(RuntimeError, match="fake engine failure"):
        futures[1].result(5)
    assert len(futures[2].result(5).audio) > 0
    assert scheduler.stats.failures == 1


def test_cancelled_jobs_lose_their_queued_chunks(make_scheduler, fake_engine):
    fake_engine.delay = 0.2
    scheduler = make_scheduler()
    busy, victim = scheduler.open_job(timeout=10), scheduler.open_job(timeout=10)
    running = scheduler.submit(busy, [_request(5)])
    time.sleep(0.05)
    queued = scheduler.submit(victim, [_request(5), _request(5)])
    scheduler.close_job(victim)
    for future in queued:
        with pytest.raises(JobCancelled):
            future.result(5)
    running[0].result(5)
    assert sum(fake_engine.calls) == 1
    assert scheduler.open_jobs == 1
    with pytest.raises(JobCancelled):
        scheduler.run(victim, [_request(5)])


def test_deadline(make_scheduler, fake_engine):
    fake_engine.delay = 0.5
    scheduler = make_scheduler()
    job = scheduler.open_job(timeout=0.1)
    with pytest.raises(SynthesisTimeout):
        scheduler.run(job, [_request(5)])
    assert job.cancelled.is_set()


def test_stop_finishes_queued_work_then_refuses_more(make_scheduler, fake_engine):
    fake_engine.delay = 0.05
    scheduler = make_scheduler()
    job = scheduler.open_job(timeout=10)
    futures = scheduler.submit(job, [_request(5)] * 4)
    scheduler.stop(timeout=5)
    assert all(len(f.result(0).audio) > 0 for f in futures)
    with pytest.raises(SchedulerClosed):
        scheduler.open_job(timeout=1)
    with pytest.raises(SchedulerClosed):
        scheduler.submit(job, [_request(5)])


def test_policy_validation():
    with pytest.raises(ValueError):
        BatchPolicy(max_batch=0)
    with pytest.raises(ValueError):
        BatchPolicy(window_ms=-1)


def test_after_call_hook_runs(fake_engine):
    idle = threading.Event()
    scheduler = Scheduler(fake_engine, after_call=idle.set)
    scheduler.start()
    try:
        job = scheduler.open_job(timeout=10)
        scheduler.run(job, [_request(5)])
        assert idle.wait(5)
    finally:
        scheduler.stop(timeout=5)


def test_idle_hook_runs_once_per_busy_spell(fake_engine):
    idle: list[float] = []
    scheduler = Scheduler(fake_engine, on_idle=lambda: idle.append(time.monotonic()), idle_after=0.2)
    scheduler.start()
    try:
        time.sleep(0.5)
        assert idle == []  # never busy yet: nothing to clean up after
        for spell in (1, 2):
            job = scheduler.open_job(timeout=10)
            done = time.monotonic()
            scheduler.run(job, [_request(5)])
            scheduler.close_job(job)
            deadline = time.monotonic() + 5
            while len(idle) < spell and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(idle) == spell and idle[-1] - done >= 0.2
            time.sleep(0.5)
            assert len(idle) == spell  # once per spell, not every idle_after seconds
    finally:
        scheduler.stop(timeout=5)


def test_trimmer_is_rate_limited(monkeypatch):
    from koel import memory

    calls = []
    monkeypatch.setattr(memory, "trim", lambda: calls.append(1) or True)
    trimmer = memory.Trimmer(interval=0.3)
    for _ in range(5):
        trimmer()
    assert calls == []
    time.sleep(0.35)
    for _ in range(5):
        trimmer()
    assert calls == [1]


def test_malloc_tuning_and_trim_on_glibc():
    import platform

    from koel import memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc tuning is glibc-only")
    assert isinstance(memory.trim(), bool)
    # mallopt changes the whole process: try it in a child, not in the test runner
    code = "from koel.memory import tune_malloc; raise SystemExit(0 if tune_malloc() else 1)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_a_job_that_times_out_in_the_queue_does_not_stop_the_worker(make_scheduler, fake_engine):
    fake_engine.delay = 0.4
    scheduler = make_scheduler()
    busy = scheduler.open_job(timeout=10)
    running = scheduler.submit(busy, [_request(5)])
    time.sleep(0.05)
    late = scheduler.open_job(timeout=0.1)
    with pytest.raises(SynthesisTimeout):
        scheduler.run(late, [_request(5)])  # its chunk stays queued, cancelled, behind the busy one
    running[0].result(5)
    fresh = scheduler.open_job(timeout=10)
    assert len(scheduler.run(fresh, [_request(5)])[0].audio) > 0
    assert fake_engine.calls == [1, 1]

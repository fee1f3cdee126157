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


# -- streamed chunks and engine calls ---------------------------------------------------------------


@pytest.fixture()
def streaming_engine(kit):
    return kit.FakeStreamingEngine(piece_delay=0.1)


def test_a_streamed_chunk_arrives_piece_by_piece_from_the_worker(make_scheduler, streaming_engine):
    scheduler = make_scheduler(engine=streaming_engine)
    job = scheduler.open_job(timeout=10)
    request = _request(20)
    durations, pieces = scheduler.stream(job, request, first_frames=4, growth=2.0)
    arrived = []
    audio = []
    for piece in pieces:
        arrived.append(time.monotonic())
        audio.append(piece)
    [whole] = streaming_engine.run([request])
    np.testing.assert_array_equal(np.concatenate(audio), whole.audio)
    np.testing.assert_array_equal(durations, whole.durations)
    assert [len(p) for p in audio[:2]] == [4 * 600, 8 * 600]
    # each piece is handed over when made, not when the chunk is done
    assert len(arrived) >= 3 and arrived[-1] - arrived[0] >= 0.1 * (len(arrived) - 1) - 0.05
    [record] = streaming_engine.streams
    assert record["thread"].startswith("koel-engine-") and record["made"] == len(audio)


def test_a_failure_mid_stream_reaches_the_reader_after_the_pieces_before_it(make_scheduler, streaming_engine):
    streaming_engine.fail_after = 2
    scheduler = make_scheduler(engine=streaming_engine)
    job = scheduler.open_job(timeout=10)
    _, pieces = scheduler.stream(job, _request(20), first_frames=4)
    got = [next(pieces), next(pieces)]
    with pytest.raises(RuntimeError, match="fake stream failure"):
        next(pieces)
    assert all(len(p) == 4 * 600 for p in got)
    # the worker lives on
    other = scheduler.open_job(timeout=10)
    assert len(scheduler.run(other, [_request(5)])[0].audio) > 0
    assert scheduler.stats.failures == 1


def test_closing_a_streaming_job_stops_its_worker_after_the_piece_in_progress(
    make_scheduler, streaming_engine
):
    scheduler = make_scheduler(engine=streaming_engine)
    job = scheduler.open_job(timeout=10)
    _, pieces = scheduler.stream(job, _request(40), first_frames=2)  # 80 frames: 40 pieces, 4 s
    next(pieces)
    scheduler.close_job(job)
    other = scheduler.open_job(timeout=10)
    started = time.monotonic()
    assert len(scheduler.run(other, [_request(5)])[0].audio) > 0
    assert time.monotonic() - started < 1.0  # not behind the rest of the cancelled stream
    assert streaming_engine.streams[0]["made"] <= 4
    with pytest.raises(JobCancelled):
        list(pieces)


def test_a_stream_read_past_the_deadline_times_out(make_scheduler, streaming_engine):
    streaming_engine.piece_delay = 0.5
    scheduler = make_scheduler(engine=streaming_engine)
    job = scheduler.open_job(timeout=0.3)
    with pytest.raises(SynthesisTimeout):
        _, pieces = scheduler.stream(job, _request(20), first_frames=4)
        list(pieces)
    assert job.cancelled.is_set()


def test_streams_and_calls_run_alone_even_with_batching(make_scheduler, streaming_engine):
    streaming_engine.delay = 0.1
    scheduler = make_scheduler(BatchPolicy(enabled=True, window_ms=200, max_batch=8), engine=streaming_engine)
    jobs = [scheduler.open_job(timeout=10) for _ in range(3)]
    futures = scheduler.submit(jobs[0], [_request(5)])
    time.sleep(0.02)
    results = {}

    def streamer() -> None:
        _, pieces = scheduler.stream(jobs[1], _request(5, marker=44), first_frames=2)
        results["stream"] = np.concatenate(list(pieces))

    def caller() -> None:
        results["call"] = scheduler.call(jobs[2], _request(5, marker=45), lambda e: e.tile_prior(_request(5)))

    threads = [threading.Thread(target=streamer), threading.Thread(target=caller)]
    for t in threads:
        t.start()
    futures += scheduler.submit(jobs[0], [_request(5)])
    for t in threads:
        t.join(10)
    for f in futures:
        f.result(5)
    assert results["call"][0] == "prior" and len(results["stream"]) > 0
    # the stream's run call holds only its own request
    assert 1 in streaming_engine.calls and streaming_engine.priors[0].startswith("koel-engine-")


def test_a_tile_prior_call_keeps_the_first_chunk_priority(kit):
    engine = kit.FakeStreamingEngine(delay=0.2)
    scheduler = Scheduler(engine, first_chunk_priority=True)
    scheduler.start()
    try:
        old, new = scheduler.open_job(timeout=10), scheduler.open_job(timeout=10)
        scheduler.run(old, [_request(5, marker=43)])  # old has had its first chunk
        scheduler.call(new, _request(5), lambda e: e.tile_prior(_request(5)))  # new's preparation
        running = scheduler.submit(old, [_request(5, marker=43)])  # runs now
        time.sleep(0.05)
        later = scheduler.submit(old, [_request(5, marker=44)])  # waits
        _, pieces = scheduler.stream(new, _request(5, marker=45), first_frames=2)  # new's first chunk
        list(pieces)
        for f in running + later:
            f.result(5)
        assert engine.seen.index(45) < engine.seen.index(44)
        assert engine.priors and new.submitted == 1
    finally:
        scheduler.stop(timeout=5)


def test_a_stream_drops_its_early_piece_options_while_others_wait(make_scheduler, streaming_engine):
    scheduler = make_scheduler(engine=streaming_engine)
    alone = scheduler.open_job(timeout=10)
    _, pieces = scheduler.stream(alone, _request(20), first_frames=4)
    assert len(list(pieces)) > 1 and streaming_engine.streams[-1]["first_frames"] == 4

    streaming_engine.delay = 0.3
    busy, loaded = scheduler.open_job(timeout=10), scheduler.open_job(timeout=10)
    running = scheduler.submit(busy, [_request(5)])
    time.sleep(0.05)
    got = {}

    def read() -> None:
        _, pieces = scheduler.stream(loaded, _request(20), first_frames=4)
        got["pieces"] = len(list(pieces))

    thread = threading.Thread(target=read)
    thread.start()
    time.sleep(0.05)
    queued = scheduler.submit(busy, [_request(5)])  # behind the stream (a first chunk goes first)
    thread.join(10)
    for f in running + queued:
        f.result(5)
    assert got["pieces"] == 1 and streaming_engine.streams[-1]["first_frames"] is None
    assert scheduler.stats.whole_streams == 1

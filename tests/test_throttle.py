"""The push policy: rate-limited flushes with forced and tail flushes, and bounded series."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from modx_widgets.events import Checkpoint, Error, Eval, Log, Message, Progress, Status
from modx_widgets.ui.throttle import Throttle, downsample


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _log(step: int) -> Log:
    return Log(step=step, epoch=step / 100, loss=1.0 / (step + 1))


# -- throttle -------------------------------------------------------------------------------


def test_ten_thousand_events_in_one_second_make_at_most_six_flushes():
    clock = FakeClock()
    batches: list[list] = []
    throttle = Throttle(batches.append, interval=0.2, clock=clock, tail_flush=False)
    for step in range(10_000):
        throttle.push(_log(step))
        clock.now += 1.0 / 10_000
    throttle.flush()
    # 1 s at one flush per 0.2 s: the first event, then one per elapsed interval, then the tail
    assert 5 <= len(batches) <= 7
    delivered = [e.step for batch in batches for e in batch]
    assert delivered == list(range(10_000))


@pytest.mark.parametrize(
    "forced",
    [
        Eval(step=2, epoch=0.1, eval_loss=0.5),
        Checkpoint(step=2, path="/tmp/checkpoint-2"),
        Status(state="Completed"),
        Error(message="boom", hint="try less"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_eval_checkpoint_status_and_error_flush_immediately(forced):
    clock = FakeClock()
    batches: list[list] = []
    throttle = Throttle(batches.append, interval=0.2, clock=clock, tail_flush=False)
    throttle.push(_log(0))  # first event: nothing flushed yet, so it is due
    buffered = _log(1)
    throttle.push(buffered)  # same instant: buffered
    assert len(batches) == 1 and throttle.pending == 1
    throttle.push(forced)  # still the same instant, but forced
    assert len(batches) == 2
    assert batches[1] == [buffered, forced]
    assert throttle.pending == 0


def test_ordinary_events_wait_for_the_interval():
    clock = FakeClock()
    batches: list[list] = []
    throttle = Throttle(batches.append, interval=0.2, clock=clock, tail_flush=False)
    throttle.push(_log(0))
    for kind in (_log(1), Progress(step=1, max_steps=10, epoch=0.1, elapsed_s=1.0), Message("info", "hi")):
        throttle.push(kind)
    assert len(batches) == 1 and throttle.pending == 3
    clock.now += 0.2
    throttle.push(_log(2))
    assert len(batches) == 2 and len(batches[1]) == 4


def test_tail_timer_flushes_when_events_stop_arriving():
    batches: list[list] = []
    throttle = Throttle(batches.append, interval=0.05)
    throttle.push(_log(0))
    throttle.push(_log(1))  # buffered: nothing else will come
    deadline = time.monotonic() + 2.0
    while throttle.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [e.step for b in batches for e in b] == [0, 1]
    throttle.close()


def test_without_tail_flush_buffered_events_wait_for_an_explicit_flush():
    clock = FakeClock()
    batches: list[list] = []
    throttle = Throttle(batches.append, interval=0.05, clock=clock, tail_flush=False)
    throttle.push(_log(0))
    throttle.push(_log(1))
    time.sleep(0.1)
    assert throttle.pending == 1
    throttle.flush()
    assert [e.step for b in batches for e in b] == [0, 1]


def test_event_pushed_while_another_thread_flushes_is_delivered_without_overlap():
    entered, release = threading.Event(), threading.Event()
    active, overlaps, seen = [0], [0], []

    def slow_sink(batch):
        active[0] += 1
        overlaps[0] = max(overlaps[0], active[0])
        seen.extend(batch)
        if not entered.is_set():
            entered.set()
            release.wait(2.0)
        active[0] -= 1

    throttle = Throttle(slow_sink, interval=0.0, tail_flush=False)
    worker = threading.Thread(target=throttle.push, args=(_log(0),))
    worker.start()
    assert entered.wait(2.0)
    started = time.monotonic()
    throttle.push(Status(state="Completed"))  # must not wait for the slow sink
    assert time.monotonic() - started < 0.5
    release.set()
    worker.join(2.0)
    assert [type(e) for e in seen] == [Log, Status]
    assert overlaps[0] == 1


def test_closing_during_a_flush_on_another_thread_still_delivers_the_last_events():
    entered, release = threading.Event(), threading.Event()
    seen = []

    def slow_sink(batch):
        seen.extend(batch)
        if not entered.is_set():
            entered.set()
            release.wait(2.0)

    throttle = Throttle(slow_sink, interval=10.0, tail_flush=False)
    worker = threading.Thread(target=throttle.push, args=(_log(0),))
    worker.start()
    assert entered.wait(2.0)
    throttle.push(_log(1))  # not due: buffered while the worker is inside the sink
    throttle.close()  # must not wait for the worker, and must not drop step 1
    release.set()
    worker.join(2.0)
    assert [e.step for e in seen] == [0, 1]


def test_a_failing_sink_does_not_raise_into_the_training_thread():
    calls = []

    def broken(batch):
        calls.append(batch)
        raise RuntimeError("view exploded")

    throttle = Throttle(broken, interval=0.0, tail_flush=False)
    throttle.push(_log(0))
    throttle.push(Status(state="Completed"))
    assert len(calls) == 2


def test_pause_buffers_until_resume_and_close_drops_later_events():
    batches: list[list] = []
    throttle = Throttle(batches.append, interval=0.0, tail_flush=False)
    throttle.pause()
    throttle.push(Status(state="Running"))
    assert batches == [] and throttle.pending == 1
    throttle.resume()
    assert len(batches) == 1
    throttle.close()
    throttle.push(Status(state="Completed"))
    assert len(batches) == 1 and throttle.pending == 0


def test_negative_interval_is_refused():
    with pytest.raises(ValueError, match="interval"):
        Throttle(lambda b: None, interval=-1)


# -- downsampling ----------------------------------------------------------------------------


def _series(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.arange(1, n + 1, dtype=float)
    y = 3.0 * np.exp(-x / max(n / 4, 1)) + rng.normal(0, 0.05, n)
    return x, y


def test_short_series_pass_through_unchanged():
    x, y = _series(700)
    dx, dy = downsample(x, y, max_points=1000, keep_last=200)
    assert np.array_equal(dx, x) and np.array_equal(dy, y)


@pytest.mark.parametrize("n", [1001, 1500, 4096, 100_000, 123_457])
def test_downsampled_series_never_exceeds_max_points(n):
    x, y = _series(n)
    dx, dy = downsample(x, y, max_points=1000, keep_last=200)
    assert len(dx) == len(dy) <= 1000
    assert np.all(np.diff(dx) > 0), "points stay in step order"


@pytest.mark.parametrize("n", [1001, 100_000])
def test_the_newest_points_are_kept_exactly(n):
    x, y = _series(n)
    dx, dy = downsample(x, y, max_points=1000, keep_last=200)
    assert np.array_equal(dx[-200:], x[-200:])
    assert np.array_equal(dy[-200:], y[-200:])


def test_spikes_and_extremes_of_old_points_survive():
    x, y = _series(100_000, seed=1)
    y[12_345] = 50.0  # a loss spike long ago
    y[67_890] = -5.0
    dx, dy = downsample(x, y, max_points=1000, keep_last=200)
    assert 50.0 in dy and x[12_345] in dx
    assert -5.0 in dy and x[67_890] in dx


def test_old_buckets_do_not_move_as_new_points_arrive():
    x, y = _series(60_000, seed=2)
    a = downsample(x[:50_000], y[:50_000], max_points=1000, keep_last=200)
    b = downsample(x[:50_010], y[:50_010], max_points=1000, keep_last=200)
    old = a[0] < 40_000
    assert old.sum() > 100
    assert np.array_equal(a[0][old], b[0][b[0] < 40_000])
    assert np.array_equal(a[1][old], b[1][b[0] < 40_000])


def test_bad_downsample_arguments_are_explained():
    with pytest.raises(ValueError, match="same length"):
        downsample([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="max_points"):
        downsample([1.0] * 10, [1.0] * 10, max_points=100, keep_last=99)

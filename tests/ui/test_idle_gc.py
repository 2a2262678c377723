"""idle_gc.IdleCollector: full collections only once the server is idle, or at the latest MAX_WAIT_S apart."""

from __future__ import annotations

import gc

from explorer.serve import idle_gc
from explorer.serve.idle_gc import IDLE_S, MAX_WAIT_S, MIN_GAP_S, IdleCollector


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(pending: bool = True) -> tuple[IdleCollector, Clock, list[float]]:
    clock, runs = Clock(), []
    collector = IdleCollector(clock=clock, collect=lambda: runs.append(clock.now), pending=lambda: pending)
    return collector, clock, runs


def test_no_full_collection_while_messages_keep_arriving_then_one_once_idle():
    collector, clock, runs = make()
    clock.now += MIN_GAP_S  # the server has run a while
    for _ in range(10):  # a student clicking every 0.3 s
        clock.now += 0.3
        collector.message_arrived()
        assert not collector.tick()
    clock.now += IDLE_S
    assert collector.tick() and runs == [clock.now]
    clock.now += IDLE_S
    collector.message_arrived()
    assert not collector.tick()  # busy again


def test_a_server_that_never_pauses_still_collects_every_max_wait():
    collector, clock, runs = make()
    start = clock.now
    while clock.now - start < 3 * MAX_WAIT_S:
        clock.now += 0.25
        collector.message_arrived()
        collector.tick()
    assert len(runs) == 3 and all(b - a >= MAX_WAIT_S for a, b in zip([start, *runs], runs, strict=False))


def test_an_idle_server_busy_in_a_thread_is_collected_at_most_every_min_gap():
    collector, clock, runs = make()  # no message arrives, but a worker thread keeps promoting objects
    start = clock.now
    while clock.now - start < 5 * MIN_GAP_S:
        clock.now += 0.5
        collector.tick()
    assert len(runs) == 5 and all(b - a >= MIN_GAP_S for a, b in zip([start, *runs], runs, strict=False))


def test_nothing_to_collect_nothing_run():
    collector, clock, runs = make(pending=False)
    clock.now += 10 * MAX_WAIT_S
    assert not collector.tick() and runs == []


def test_take_over_freezes_and_turns_the_automatic_full_collection_off():
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        idle_gc.take_over_full_collections()
        assert gc.get_threshold()[:2] == threshold[:2] and gc.get_threshold()[2] == idle_gc.NEVER
        assert gc.get_freeze_count() > frozen
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()

"""idle_gc.IdleCollector: full collections only once the server is idle, or at the latest MAX_WAIT_S apart; each
walks only what is newer than the last one, and everything again after a session was destroyed (at an idle moment;
while busy, once several wait), or THOROUGH_S after the last such walk, idle or not."""

from __future__ import annotations

import gc
import weakref

from explorer.serve import idle_gc
from explorer.serve.idle_gc import (
    IDLE_S,
    MAX_WAIT_S,
    MIN_GAP_S,
    THOROUGH_BUSY_PAGES,
    THOROUGH_BUSY_S,
    THOROUGH_S,
    IdleCollector,
)


class Page:
    """A served document, as the collector sees it: Bokeh sets its session_context to None when it is destroyed."""

    session_context = "open"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(pending: bool = True) -> tuple[IdleCollector, Clock, list[float]]:
    clock, runs = Clock(), []
    collector = IdleCollector(clock=clock, collect=lambda: runs.append(clock.now), pending=lambda: pending,
                              freeze=lambda: None, thaw=lambda: None)
    return collector, clock, runs


def busy(collector: IdleCollector, clock: Clock, seconds: float) -> list[str]:
    """A student clicking every 0.25 s for `seconds`: the collections the ticks ran."""
    ran, end = [], clock.now + seconds
    while clock.now < end:
        clock.now += 0.25
        collector.message_arrived()
        ran.append(collector.tick())
    return [r for r in ran if r]


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
    assert busy(collector, clock, 3 * MAX_WAIT_S) == ["recent"] * 3
    assert len(runs) == 3 and all(b - a >= MAX_WAIT_S for a, b in zip([start, *runs], runs, strict=False))


def test_collections_walk_only_what_is_new_except_after_a_session_ended_or_when_idle_after_thorough_s():
    clock, calls = Clock(), []
    collector = IdleCollector(clock=clock, collect=lambda: calls.append("collect"), pending=lambda: True,
                              freeze=lambda: calls.append("freeze"), thaw=lambda: calls.append("thaw"))
    assert busy(collector, clock, MAX_WAIT_S) == ["recent"]
    assert calls == ["collect", "freeze"]  # the survivors frozen: the next walk skips them
    clock.now += MIN_GAP_S
    assert collector.tick() == "recent"  # idle, but the last thorough walk is recent
    calls.clear()
    page = Page()
    collector.watch(page)
    page.session_context = None  # its page's cycles may be frozen: only a thaw lets the collector find them
    clock.now += MIN_GAP_S
    assert collector.tick() == "thorough"  # at the next idle moment
    assert calls == ["thaw", "collect", "freeze"]
    calls.clear()
    assert busy(collector, clock, MAX_WAIT_S) == ["recent"]  # the session's end was seen to once
    assert busy(collector, clock, THOROUGH_S / 2) == ["recent"] * int(THOROUGH_S / 2 // MAX_WAIT_S)
    calls.clear()
    clock.now += THOROUGH_S / 2  # no message since: idle, THOROUGH_S after the last thorough walk
    assert collector.tick() == "thorough" and calls == ["thaw", "collect", "freeze"]


def test_a_server_that_never_pauses_walks_everything_every_thorough_s():
    """Cycles a live session leaves among its frozen objects (a figure replaced) wait THOROUGH_S at most, even in a
    class that never pauses and where no session ends."""
    clock, walks = Clock(), []
    collector = IdleCollector(clock=clock, collect=lambda: None, pending=lambda: True, freeze=lambda: None,
                              thaw=lambda: walks.append(clock.now))
    start = clock.now
    ran = busy(collector, clock, 3 * THOROUGH_S + MAX_WAIT_S)
    assert ran.count("thorough") == 3 and len(ran) == int((3 * THOROUGH_S + MAX_WAIT_S) // MAX_WAIT_S)
    assert all(THOROUGH_S <= b - a < THOROUGH_S + MAX_WAIT_S for a, b in zip([start, *walks], walks, strict=False))


def destroyed(collector: IdleCollector, count: int) -> list[Page]:
    """`count` watched pages whose sessions were destroyed (kept alive: the collector holds them weakly)."""
    pages = [Page() for _ in range(count)]
    for page in pages:
        collector.watch(page)
        page.session_context = None
    return pages


def test_a_busy_server_walks_everything_once_several_pages_wait_and_at_most_every_thorough_busy_s():
    clock, walks = Clock(), []
    collector = IdleCollector(clock=clock, collect=lambda: None, pending=lambda: True, freeze=lambda: None,
                              thaw=lambda: walks.append(clock.now))
    start = clock.now
    left = destroyed(collector, THOROUGH_BUSY_PAGES - 1)
    assert busy(collector, clock, 3 * THOROUGH_BUSY_S) == ["recent"] * int(3 * THOROUGH_BUSY_S // MAX_WAIT_S)
    assert walks == [] and collector.pages_waiting == THOROUGH_BUSY_PAGES - 1  # too few pages to walk everything
    for _ in range(3):  # a class that never pauses, reloading pages all the time
        left += destroyed(collector, THOROUGH_BUSY_PAGES)
        ran = busy(collector, clock, THOROUGH_BUSY_S)
        assert ran.count("thorough") == 1 and set(ran) == {"recent", "thorough"}
    assert len(walks) == 3 and all(b - a >= THOROUGH_BUSY_S for a, b in zip([start, *walks], walks, strict=False))
    assert collector.pages_waiting == 0


def test_a_destroyed_session_s_page_waits_thorough_s_at_most_on_a_server_that_never_pauses():
    clock, walks = Clock(), []
    collector = IdleCollector(clock=clock, collect=lambda: None, pending=lambda: True, freeze=lambda: None,
                              thaw=lambda: walks.append(clock.now))
    left = destroyed(collector, 1)
    ran = busy(collector, clock, THOROUGH_S + MAX_WAIT_S)
    assert len(left) == 1 and ran.count("thorough") == 1 and THOROUGH_S <= walks[0] - 1000.0 < THOROUGH_S + MAX_WAIT_S


def test_a_destroyed_session_is_collected_even_when_nothing_was_promoted():
    collector, clock, runs = make(pending=False)
    clock.now += MIN_GAP_S + IDLE_S
    page = Page()
    collector.watch(page)
    assert collector.tick() is None
    page.session_context = None
    assert collector.tick() == "thorough" and collector.sessions_destroyed == 1
    clock.now += MIN_GAP_S
    assert collector.tick() is None and collector.sessions_destroyed == 1  # each destroyed session counts once


def test_a_frozen_cycle_survives_a_recent_collection_and_is_freed_by_a_thorough_one():
    class Node:
        pass

    clock = Clock()
    threshold = gc.get_threshold()
    try:
        collector = IdleCollector(clock=clock)
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        clock.now += MAX_WAIT_S
        collector.message_arrived()
        assert collector.tick() == "recent" and gone() is not None  # alive then: frozen with the survivors
        del a, b  # now a cycle no one refers to, among the frozen objects
        clock.now += MAX_WAIT_S
        collector.message_arrived()
        gc.collect()  # any collection that does not thaw (Panel's after a document is destroyed, a recent one)
        assert gone() is not None
        page = Page()
        collector.watch(page)
        page.session_context = None
        clock.now += IDLE_S
        assert collector.tick() == "thorough" and gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


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

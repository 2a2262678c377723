"""Full garbage collections while the server is idle, not in the middle of a student's click.

CPython runs a full (generation 2) collection whenever the objects that survived the young
collections have grown by a quarter since the last one. A served explorer holds about 360,000
tracked objects with one session open (Bokeh and param objects, traces, the loaded models), and a
full collection walks all of them: 126-138 ms with one session, more with every session, started
by allocation counts at any moment. Measured: two in 30 input changes, each one as long as the
whole input change it lands in (docs/performance.md).

`IdleCollector` turns the automatic full collections off (the young generations still collect as
usual, and free the cycles an interaction leaves behind) and runs the full one itself: once no
websocket message has arrived for `IDLE_S`, or at the latest `MAX_WAIT_S` after the last one, so
that a classroom that never pauses still frees what it leaves; and never sooner than `MIN_GAP_S`
after the last one: a session's worker thread (the pruning lesson's timings) allocates while no
message arrives, and a full collection every tick would hold the interpreter lock most of the time.

What a full collection walks is kept short. Every object that survives one is frozen
(`gc.freeze`): the open sessions' pages, models and lessons live on, and the next collection walks
only what is newer. A walk over everything holds the server's loop, and every student's message
waiting behind it, for long: 0.5-3 s at N = 15 on this project's machine (benchmarks/classroom.py),
each session with every lesson open adding about 130,000 objects. Frozen objects are still freed as
soon as nothing refers to them; only a cycle among them waits for a thorough collection, which
thaws everything first (`gc.unfreeze`) and walks it all:

- after a session was destroyed: its page is such a cycle (Bokeh's models and their document refer
  to each other). Panel runs `gc.collect()` when a session ends, and so does Bokeh for a document
  with session-destroyed callbacks (the lessons' slow work adds one); with the survivors frozen
  these walk only what is new and no longer free the page: this collector does, at the next idle
  moment. A walk over everything takes as long whatever it frees (2-8 s at N = 15-30 on this
  project's machine, every session's lessons built), so a busy server waits until
  `THOROUGH_BUSY_PAGES` pages wait for it (each 20-50 MB), and walks at most every `THOROUGH_BUSY_S`
  (a class of 30 on two cores reloads a page every few seconds); a page waits `THOROUGH_S` at most;
- at least every `THOROUGH_S`, idle or not: cycles a live session leaves among its frozen objects
  (a figure replaced) wait no longer. A class never pauses for long: thirty students send a message
  every few hundredths of a second, and six minutes of it left 26,694 such objects, which one walk
  over everything (1.3 s, benchmarks/class_server.py) freed.

A recent walk takes as long as what was made since the last one: in a busy class, every lesson each
student opened. `MAX_WAIT_S` keeps each one short: at N = 15, 60 s of lessons built took 0.6-1 s to
walk, each a wait for every student's message.
"""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bokeh.document import Document

IDLE_S = 1.0          # no message for this long: the server is idle
MIN_GAP_S = 10.0      # the shortest time between two full collections
MAX_WAIT_S = 15.0     # the longest a full collection waits for an idle moment
THOROUGH_BUSY_PAGES = 3  # while busy, destroyed sessions' pages wait for a thorough walk until this many wait
THOROUGH_BUSY_S = 60.0  # and a busy server walks everything at most this often
THOROUGH_S = 600.0    # the longest a cycle among frozen objects waits
CHECK_S = 0.5         # how often the server asks (a tornado PeriodicCallback)
NEVER = 1_000_000_000  # a generation-2 threshold that the count of young collections never reaches


class IdleCollector:
    """Decides when to run the full collection; `tick()` is called every CHECK_S on the server's loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, collect: Callable[[], object] = gc.collect,
                 pending: Callable[[], bool] = lambda: gc.get_count()[2] > 0,
                 freeze: Callable[[], None] = gc.freeze, thaw: Callable[[], None] = gc.unfreeze):
        self._clock, self._collect, self._pending = clock, collect, pending
        self._freeze, self._thaw = freeze, thaw
        self.last_message = self.last_full = self.last_thorough = clock()
        self._pages: weakref.WeakSet = weakref.WeakSet()  # the served documents not yet seen destroyed
        self.pages_waiting = 0  # sessions destroyed since the last thorough collection
        self.sessions_destroyed = 0

    def message_arrived(self) -> None:
        self.last_message = self._clock()

    def watch(self, page: Document) -> None:
        """Note when this served document's session is destroyed (its `session_context` is then None). Checked at
        each tick, not by `on_session_destroyed`: Bokeh runs a full collection itself when a destroyed document had
        such a callback."""
        self._pages.add(page)

    def _see_destroyed(self) -> None:
        destroyed = [page for page in self._pages if page.session_context is None]
        for page in destroyed:
            self._pages.discard(page)
        self.sessions_destroyed += len(destroyed)
        self.pages_waiting += len(destroyed)

    def tick(self) -> str | None:
        """Collect when young collections have promoted objects since the last full one (or a session was
        destroyed), the last full one is MIN_GAP_S old, and either the server is idle or the last full one is
        MAX_WAIT_S old. Which collection it ran: "thorough" (everything thawed and walked, see `_walk_everything`),
        "recent" (only what is newer than the last one), or None."""
        self._see_destroyed()
        now = self._clock()
        since_full = now - self.last_full
        idle = now - self.last_message >= IDLE_S
        if (not self._pending() and not self.pages_waiting) or since_full < MIN_GAP_S or (
                not idle and since_full < MAX_WAIT_S):
            return None
        thorough = self._walk_everything(idle, now - self.last_thorough)
        if thorough:
            self._thaw()
            self.pages_waiting = 0
        self._collect()
        self._freeze()
        self.last_full = self._clock()
        if thorough:
            self.last_thorough = self.last_full
        return "thorough" if thorough else "recent"

    def _walk_everything(self, idle: bool, since_thorough: float) -> bool:
        """THOROUGH_S after the last thorough walk, idle or not. Besides, idle: when a destroyed session's page
        waits; busy: when THOROUGH_BUSY_PAGES pages wait and the last thorough walk is THOROUGH_BUSY_S old."""
        if since_thorough >= THOROUGH_S:
            return True
        if idle:
            return bool(self.pages_waiting)
        return self.pages_waiting >= THOROUGH_BUSY_PAGES and since_thorough >= THOROUGH_BUSY_S


def take_over_full_collections() -> None:
    """Freeze what is alive now and stop the automatic full collections (see the module's docstring)."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NEVER)

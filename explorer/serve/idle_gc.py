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
that a classroom that never pauses still frees closed sessions; and never sooner than `MIN_GAP_S`
after the last one: a session's worker thread (the pruning lesson's timings) allocates while no
message arrives, and a full collection every tick would hold the interpreter lock most of the time.
Objects alive when it starts (modules, classes) are frozen first (`gc.freeze`): they live as long
as the server and are never walked again.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

IDLE_S = 1.0          # no message for this long: the server is idle
MIN_GAP_S = 10.0      # the shortest time between two full collections
MAX_WAIT_S = 60.0     # the longest a full collection waits for an idle moment
CHECK_S = 0.5         # how often the server asks (a tornado PeriodicCallback)
NEVER = 1_000_000_000  # a generation-2 threshold that the count of young collections never reaches


class IdleCollector:
    """Decides when to run the full collection; `tick()` is called every CHECK_S on the server's loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, collect: Callable[[], object] = gc.collect,
                 pending: Callable[[], bool] = lambda: gc.get_count()[2] > 0):
        self._clock, self._collect, self._pending = clock, collect, pending
        self.last_message = self.last_full = clock()

    def message_arrived(self) -> None:
        self.last_message = self._clock()

    def tick(self) -> bool:
        """Collect when young collections have promoted objects since the last full one, the last full one
        is MIN_GAP_S old, and either the server is idle or the last full one is MAX_WAIT_S old. Whether it
        collected."""
        now = self._clock()
        since_full = now - self.last_full
        if not self._pending() or since_full < MIN_GAP_S or (now - self.last_message < IDLE_S
                                                             and since_full < MAX_WAIT_S):
            return False
        self._collect()
        self.last_full = self._clock()
        return True


def take_over_full_collections() -> None:
    """Freeze what is alive now and stop the automatic full collections (see the module's docstring)."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NEVER)

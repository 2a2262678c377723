"""Work off the event loop, shared by every session of the process: the pruning and quantization lessons measure
accuracies (a pass over a test set) on daemon threads, at background priority, a few at a time; a view's quick
answers (the next picture after a click) run on daemon threads at the server's own priority.

- `EVALUATIONS.take(urgent)`: at most EVALUATIONS_AT_ONCE evaluations run at once over all sessions, and a
  student's own request (urgent: the accuracy at the slider's setting) goes before any waiting sweep step; a
  sweep takes one turn per evaluation, so requests get in between.
- `submit(work, name)`: run `work` on a daemon thread; its Future says when it ended (and holds its error).
- `exiting()`: true once the interpreter exits; a sweep stops after its current evaluation. At exit the running
  threads get WORKER_EXIT_WAIT_S to finish: a thread still inside torch while the process exits aborts it
  ("terminate called without an active exception", exit status 134).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager

log = logging.getLogger(__name__)

EVALUATIONS_AT_ONCE = 2  # on this project's 2-core machines: a third would only slow the interactive repaints
BACKGROUND_NICE = 10     # scheduling priority of the measuring threads (Linux; 0 is normal, 19 the lowest)
WORKER_EXIT_WAIT_S = 30  # at exit, how long each running evaluation may take to finish


class Slots:
    """At most `n` holders at once; an urgent taker goes before every waiting non-urgent one."""

    def __init__(self, n: int):
        self._free, self._urgent = n, 0
        self._changed = threading.Condition()

    @contextmanager
    def take(self, urgent: bool) -> Iterator[None]:
        with self._changed:
            self._urgent += urgent
            while self._free == 0 or (not urgent and self._urgent):
                self._changed.wait()
            self._free -= 1
            self._urgent -= urgent
        try:
            yield
        finally:
            with self._changed:
                self._free += 1
                self._changed.notify_all()


EVALUATIONS = Slots(EVALUATIONS_AT_ONCE)
_workers: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_exiting = threading.Event()
_workers_joined_at_exit = threading.Event()


def request_turn():
    """A turn for a student's own request."""
    return EVALUATIONS.take(urgent=True)


def sweep_turn():
    """A turn for one evaluation of a sweep."""
    return EVALUATIONS.take(urgent=False)


def exiting() -> bool:
    return _exiting.is_set()


def _finish_workers() -> None:
    _exiting.set()
    for worker in list(_workers):
        worker.join(timeout=WORKER_EXIT_WAIT_S)


def submit(work: Callable[[], object], name: str, background: bool = True) -> Future:
    """Run `work` on a daemon thread named `name`, at background priority (an evaluation, a sweep) or, for work a
    student is waiting to see (`background=False`), at the server's own; its Future says when it ended."""
    future: Future = Future()

    def run() -> None:
        if background and sys.platform == "linux":
            # Linux threads have their own nice value, inherited by the threads they start (torch's OpenMP
            # team): evaluations then yield the CPU to the interactive repaints of every session.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
        try:
            future.set_result(work())
        except Exception as e:  # a worker thread has no one to raise to: log it, and keep it for .result()
            log.exception("%s worker failed", name)
            future.set_exception(e)

    worker = threading.Thread(target=run, daemon=True, name=name)
    if not _workers_joined_at_exit.is_set():  # once, with the first worker (not at import)
        _workers_joined_at_exit.set()
        atexit.register(_finish_workers)
    _workers.add(worker)
    worker.start()
    return future

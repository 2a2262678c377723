"""A view's slow work: computed off the event loop, shown on it, and only the newest answer.

One `SlowWork` per strand of a view's slow work (the batch's prediction, an accuracy measurement). A change asks
`request(key, compute, show)`: in a served page, `compute()` runs on a worker thread (explorer/session/background.py)
while the server goes on answering every student, and `show(result)` runs back in the session's document (Bokeh's
`add_next_tick_callback`, the documented way to touch a document from another thread), inside one_update(). An
answer whose key is no longer the newest request is dropped: the student moved on. When the session ends, pending
answers are dropped too. A failure goes to `on_error` (the view says so), never into the log alone.

Outside a served page (a notebook cell, a test) there is no event loop to keep free: compute and show run at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from functools import partial
from typing import Any

import panel as pn
from bokeh.document import Document
from bokeh.io import curdoc as bokeh_curdoc

from explorer.session import background
from explorer.session.state import one_update

log = logging.getLogger(__name__)


def served_document() -> Document | None:
    """The served document whose callback is running, or None outside a server.

    Bokeh's own current document first: Bokeh sets it around every callback it runs for a document (a browser's
    change, a next-tick callback), under that document's lock. Panel's `pn.state.curdoc` is a context variable that an
    asyncio callback inherits from wherever it was scheduled, so under load it can name another student's document;
    an answer sent there would change this page's models under the other page's lock."""
    for doc in (bokeh_curdoc(), pn.state.curdoc):
        if doc is not None and doc.session_context is not None:
            return doc
    return None


class SlowWork:
    """The newest of a view's requests for one kind of slow work (see the module's docstring)."""

    def __init__(self, name: str, on_error: Callable[[Exception], None] | None = None, background: bool = False,
                 document: Document | None = None):
        """`background`: a measurement (an evaluation over a test set, a sweep) that yields the CPU to every
        session's interactive work; otherwise the answer a student waits for, at the server's own priority (at
        background priority it waited behind the browsers and sweeps: +11-14 ms per convolution follow-up).
        `document`: the view's session's served document, where known (the state's); else the served document of the
        first request's callback. Taken from a callback, it once named another student's document under a class's
        load (30 students: Bokeh's "_pending_writes should be non-None" as an answer changed this page's models
        under the other page's lock)."""
        self.name = name
        self.background = background
        self._on_error = on_error
        self._lock = threading.Lock()
        self._newest: Hashable = None
        self._pending = 0  # requests made and not yet shown or dropped
        self._ended = False
        self.job: Future | None = None   # the newest request's worker (served pages); tests wait on it
        self._watching = False  # whether the end of the document's session cancels this strand
        self._doc: Document | None = document  # the served document of the view's session, once known

    @property
    def busy(self) -> bool:
        """True while an answer is on its way."""
        return self._pending > 0

    def request(self, key: Hashable, compute: Callable[[], Any], show: Callable[[Any], None]) -> None:
        """Compute for `key`, off the event loop when served, and show the result if `key` is still the newest."""
        with self._lock:
            self._newest, self._pending = key, self._pending + 1
        if not self._watching:
            # A view belongs to one session: its strand keeps the first served document it saw. Asked again from a
            # worker thread or a callback of another session's, the current document would be someone else's.
            self._doc = self._doc or served_document()
            if self._doc is not None:
                self._watching = True
                self._doc.on_session_destroyed(lambda _context: self.cancel())
        doc = self._doc
        if doc is None:
            self._answer(key, show, self._outcome(compute))
            return
        self.job = background.submit(lambda: self._work(doc, key, compute, show), self.name, self.background)

    def cancel(self) -> None:
        """Drop every answer still on its way (the session ended)."""
        with self._lock:
            self._ended, self._newest = True, None

    def _outcome(self, compute: Callable[[], Any]) -> tuple[Any, Exception | None]:
        try:
            return compute(), None
        except Exception as e:  # shown to the student by on_error, on the document's thread
            log.exception("slow work %r failed", self.name)
            return None, e

    def _work(self, doc: Document, key: Hashable, compute: Callable[[], Any], show) -> None:
        if not self._current(key):  # a newer request came before this one's worker started: nothing to compute
            self._settle()
            return
        outcome = self._outcome(compute)
        if self._current(key) and not doc.session_context.destroyed:
            doc.add_next_tick_callback(partial(self._answer, key, show, outcome))
        else:
            self._settle()

    def _answer(self, key: Hashable, show, outcome: tuple[Any, Exception | None]) -> None:
        try:
            if not self._current(key):
                return
            result, error = outcome
            with one_update():
                if error is None:
                    show(result)
                elif self._on_error is not None:
                    self._on_error(error)
        finally:
            self._settle()

    def _current(self, key: Hashable) -> bool:
        with self._lock:
            return not self._ended and key == self._newest

    def _settle(self) -> None:
        with self._lock:
            self._pending -= 1

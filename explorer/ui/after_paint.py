"""What the control shows first, the lesson next: work that can wait runs once the page has painted.

An input change updates the prediction and the overview, which answer the student's click, and the
open lesson, which follows along. Sent together, the page painted nothing until the lesson's figures
were laid out too (about 30 ms more on the CNN, 60 ms with the normalization lesson; docs/performance.md).
Now each interaction's own message carries a ticket; the page answers with it one animation frame
after it has applied that message, and only then does the server run the waiting work (the open
lesson's `follows` methods, a lesson switch, the sidebar's picture of what the model sees: its PNG
and its decoding in the page cost MobileNetV2's input change about 10 ms) and send it as a second
message. A lesson's own controls are its own answer: they do not wait (see `follows` in
explorer/session/state.py).

Waiting work is keyed, so a burst of interactions (a student clicking through the gallery) computes
the lesson once, for the newest state, when the page has caught up: an answer to an older ticket
runs nothing. Outside a served page (a notebook, a test) nothing waits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

import panel as pn
from bokeh.models import ColumnDataSource, CustomJS, Spacer

log = logging.getLogger(__name__)

# In the page, when a new ticket arrives: one frame later (the message has been applied and painted), send it back.
ANSWER = "requestAnimationFrame(() => setTimeout(() => { painted.data = {ticket: ticket.data.ticket.slice()}; }, 0));"


class AfterPaint(pn.viewable.Viewer):
    """One per page: `run(key, work)` now, or after the next paint when the page is served.

    The ticket and its answer are data sources, held by an empty spacer in the page: a changed widget
    (a Div's text) would make BokehJS lay out the whole page again (36 ms here), a data source does not."""

    def __init__(self, **params):
        super().__init__(**params)
        self._ticket = ColumnDataSource(data={"ticket": [0]}, name="explorer-ticket")
        self._painted = ColumnDataSource(data={"ticket": [0]}, name="explorer-painted")
        self._ticket.js_on_change("data", CustomJS(args=dict(ticket=self._ticket, painted=self._painted),
                                                   code=ANSWER))
        self._painted.on_change("data", self._on_painted)
        self._waiting: dict[Hashable, Callable[[], None]] = {}
        self._issued = 0
        self._running = False
        self.live = False  # True once a served page has loaded: before that no one answers
        pn.state.onload(self._go_live)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.pane.Bokeh(Spacer(width=0, height=0, tags=[self._ticket]), width=0, height=0, margin=0)

    def _go_live(self) -> None:
        self.live = pn.state.curdoc is not None and pn.state.curdoc.session_context is not None

    def run(self, key: Hashable, work: Callable[[], None]) -> None:
        """Run `work` after the page has painted this interaction's message (at once when not served, or when
        called from waiting work); a second call with the same key before then replaces the first."""
        if not self.live or self._running:
            work()
            return
        if not self._waiting:
            self._issued += 1
            self._ticket.data = {"ticket": [self._issued]}  # goes to the page with this interaction's message
        self._waiting[key] = work

    def _on_painted(self, _attr: str, _old: dict, new: dict) -> None:
        if list(new.get("ticket", [])) != [self._issued] or not self._waiting:
            return  # an older ticket: newer work is waiting for its own answer
        work, self._waiting = list(self._waiting.values()), {}
        self._running = True
        try:
            with pn.io.hold():  # one message; not one_update(): waiting work may build a lesson (new models)
                for item in work:
                    try:
                        item()
                    except Exception:  # one view's failure must not keep the others from following
                        log.exception("a view failed to follow the state")
        finally:
            self._running = False

"""Controls that both the server and the student set, kept in step between the page and the server.

Bokeh keeps a property in step by sending each side's changes to the other; each side keeps the last value it
applied. A value the student picks while the server's older value is on its way crosses it on the wire: the page
applies the server's value after the student's pick, and the server, which took the pick, has nothing new to send
(Bokeh says as much in ServerSession._document_patched). The page then shows a lesson tab, a layer or a channel other
than the one the server explains. In a class this happens: a layer click opens its lesson and sets the lessons'
layer menus once the page has painted the click's answer, which takes seconds when thirty pages share a machine.

A control marked with `keep_in_step` is watched in each served document (`watch_crossings`): once the student has
stopped changing it for QUIET_S, the server sends the value it holds once more. That message comes after any that
crossed the student's changes, so the page ends on the server's value; where nothing crossed, the page already
shows that value and nothing changes. Waiting for the student to stop sends one value for a quick series of changes
(a channel stepped with the arrow keys), the last, rather than one per change, which would step the page back
through them. The server's own changes are not watched: Panel writes them to the page past the document's
callbacks, and they need nothing more.

For menus, tabs and number inputs; not for a slider, whose drag is a long series of changes.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TypeVar
from weakref import ref

import panel as pn
from bokeh.document import Document
from bokeh.document.events import DocumentChangedEvent, ModelChangedEvent
from bokeh.model import Model

Widget = TypeVar("Widget", bound=pn.viewable.Viewable)

IN_STEP_TAG = "explorer-in-step="  # + the property kept in step, among the tags of the control's Bokeh model
QUIET_S = 0.3  # the student has stopped changing a control; also after Panel's own 50 ms wait on a page's change


def keep_in_step(widget: Widget, name: str = "value") -> Widget:
    """Mark `widget`'s `name` (a parameter of the widget and a property of its Bokeh model, such as a Select's
    `value` or a Tabs' `active`) as set by both the server and the student. Returns the widget."""
    widget.tags = [*widget.tags, IN_STEP_TAG + name]
    return widget


def watch_crossings(doc: Document) -> None:
    """Keep the marked controls of a served document in step (once per document)."""
    doc.on_change(_Crossings(doc))


class _Crossings:
    """One served document's watcher of the page's changes to marked controls."""

    def __init__(self, doc: Document):
        self._doc = ref(doc)  # the document keeps its callbacks: no cycle through this one
        self._last_change: dict[tuple[str, str], float] = {}  # (model id, property) -> the page's last change, while
        # its value is due to be sent again

    def __call__(self, event: DocumentChangedEvent) -> None:
        # the page's changes come with its session as setter; the server's own, made by Bokeh calls, with none
        if (not isinstance(event, ModelChangedEvent) or event.setter is None
                or IN_STEP_TAG + event.attr not in event.model.tags):
            return
        key = (event.model.id, event.attr)
        due = key in self._last_change
        self._last_change[key] = time.monotonic()
        if not due:
            self._send_later(event.model, event.attr, QUIET_S)

    def _send_later(self, model: Model, name: str, seconds: float) -> None:
        doc = self._doc()
        if doc is not None:
            doc.add_timeout_callback(partial(self._send_again, model, name), round(seconds * 1000))

    def _send_again(self, model: Model, name: str) -> None:
        key = (model.id, name)
        wait = self._last_change[key] + QUIET_S - time.monotonic()
        if wait > 0:  # changed again meanwhile
            self._send_later(model, name, wait)
            return
        del self._last_change[key]
        doc = self._doc()
        if doc is not None and model.document is doc:
            # on the document's own queue of changes, as any change the server makes
            doc.callbacks.trigger_on_change(ModelChangedEvent(doc, model, name, getattr(model, name)))

"""Record what a view sends to the page: attach it to a Bokeh document as a served session would.

Used by every update-path test (ISSUE 10): an interaction must patch data and properties of
existing Bokeh models, never create new ones.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import panel as pn
from bokeh.document import Document
from bokeh.document.events import ColumnDataChangedEvent, ColumnsPatchedEvent, ColumnsStreamedEvent, ModelChangedEvent
from bokeh.model import Model
from bokeh.model.util import visit_value_and_its_immediate_references
from bokeh.models import Tabs
from panel.template.base import BaseTemplate

from explorer.session.later import InView
from explorer.session.tags import MODEL_TAG

PATCHES = (ModelChangedEvent, ColumnDataChangedEvent, ColumnsStreamedEvent, ColumnsPatchedEvent)
# References that are not part of what the page draws: tags (AfterPaint hides a source in a spacer's tags),
# callbacks' arguments, stylesheets
NOT_DRAWN = {"tags", "js_event_callbacks", "js_property_callbacks", "stylesheets"}


class Page:
    """A document holding one viewable, and the change events it receives. Its parts that join a served page when
    scrolled to (explorer/session/later.py) are placed at once, as for a student who has scrolled through it."""

    def __init__(self, viewable: pn.viewable.Viewable):
        self.doc = Document()
        root = pn.panel(viewable)
        root.server_doc(self.doc)
        for mark in [] if isinstance(root, BaseTemplate) else root.select(InView):  # a whole page builds lessons later
            mark.seen = True
        self.events: list = []
        self.doc.on_change(self.events.append)

    def model_named(self, name: str):
        return next(m for m in self.doc.models if getattr(m, "name", None) == name)

    def data(self, source_name: str) -> str:
        """A named Bokeh source's arrays, as text, to compare before and after."""
        return repr(self.model_named(source_name).data)

    def on_screen(self) -> Iterator[Model]:
        """The models the page draws: from the roots down, not below a model with visible=False, and in a Tabs only
        the open tab (as the browser shows them)."""
        seen: set[int] = set()

        def walk(model: Model) -> Iterator[Model]:
            if id(model) in seen or getattr(model, "visible", True) is False:
                return
            seen.add(id(model))
            yield model
            if isinstance(model, Tabs):
                children = [model.tabs[model.active].child] if model.tabs else []
            else:
                children = []
                for name in set(model.properties_with_refs()) - NOT_DRAWN:
                    visit_value_and_its_immediate_references(getattr(model, name), children.append)
            for child in children:
                yield from walk(child)

        for root in self.doc.roots:
            yield from walk(root)

    def model_tags(self) -> list[tuple[str, str]]:
        """(model name, what) of every `explorer-model=` tag on screen (explorer.session.tags.model_tag)."""
        return [(tag.removeprefix(MODEL_TAG), f"{type(m).__name__} {m.name or m.id}") for m in self.on_screen()
                for tag in m.tags if isinstance(tag, str) and tag.startswith(MODEL_TAG)]

    def act(self, action: Callable[[], object], allow_new: tuple[str, ...] = ()) -> list[str]:
        """Run `action`; return the kinds of Bokeh models it created (minus `allow_new`), after checking
        that every event it sent is a patch."""
        before = {m.id for m in self.doc.models}
        self.events.clear()
        action()
        # Changes that Panel dispatches itself (inside `unlocked`) bypass these callbacks; the others must
        # all be patches of existing models.
        others = [type(e).__name__ for e in self.events if not isinstance(e, PATCHES)]
        assert others == [], f"sent {others}"
        return [type(m).__name__ for m in self.doc.models if m.id not in before and type(m).__name__ not in allow_new]

    def check(self, name: str, action: Callable[[], object], shown: Callable[[], object], round_: int,
              differs: Callable[[object, object], bool] = operator.ne) -> None:
        """Run one interaction of round `round_` (0 or 1): it must change what `shown()` reads, send only
        patches, and create no Bokeh model; in round 0 Panel may attach a pane's shared stylesheets, the first
        time that pane's content changes."""
        before = shown()
        created = self.act(action)
        assert differs(shown(), before), f"{name} did not change what it shows"
        if round_ == 0:
            created = [kind for kind in created if kind != "ImportedStyleSheet"]
        assert created == [], f"round {round_}, {name}: created {created}"


class ServedContext:
    """As much of a served session's context as Bokeh's Document, Panel and SlowWork look at. A document holds its
    context weakly: keep this object as long as the document is used (`as_served(doc)` returns it)."""

    id = "a-served-session"
    destroyed = False
    request = SimpleNamespace(arguments={}, cookies={}, headers={})


def as_served(doc: Document) -> ServedContext:
    """Make `doc` a served session's document; its context, to keep."""
    context = ServedContext()
    doc._session_context = weakref.ref(context)
    return context

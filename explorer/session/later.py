"""A part of a lesson that joins the page when the student scrolls to it.

A lesson is long: its first screen is what a student sees on opening it, the rest only if they scroll. Every part
put on the page costs the server its Bokeh models, and the student's browser their layout and paint, whether or not
anyone looks at it; in a class on one machine the browsers' share is what the students wait for
(docs/performance.md, "A class's machine"). So a lesson wraps its parts below the first screen in `Later`: the page
gets a placeholder of about the part's height, and the part itself once the placeholder comes into view (scrolled to,
or brought into view by a tour step). Outside a served page (a notebook, a test) the part is
there at once.

Only placing the part waits: the lesson makes its figures in `__init__` and keeps their data current as it does for
every part, so a part arrives showing the session's current model and input.
"""

from __future__ import annotations

import panel as pn
import param
from panel.custom import JSComponent

from explorer.session.state import making_models, one_update
from explorer.session.work import served_document


class InView(JSComponent):
    """A placeholder that sets `seen` once it comes into view (then stops watching)."""

    seen = param.Boolean(default=False, doc="Set by the page once the placeholder has come into view.")
    text = param.String(default="", doc="What the placeholder says until the part arrives.")

    _esm = """
    export function render({ model }) {
      const mark = document.createElement("div")
      mark.className = "later-placeholder"
      mark.textContent = model.text
      const watcher = new IntersectionObserver((entries) => {
        if (entries.some((entry) => entry.isIntersecting)) {
          watcher.disconnect()
          model.seen = true
        }
      })  // the window, as clipped by the page's scrolling boxes (a margin here would not reach past them)
      watcher.observe(mark)
      model.on("remove", () => watcher.disconnect())
      return mark
    }
    """

    _stylesheets = ["""
    .later-placeholder { height: 100%; box-sizing: border-box; padding: 12px; color: #767676; font-size: 14px;
                         border: 1px dashed #ccc; border-radius: 4px; }
    """]


class Later(pn.viewable.Viewer):
    """`items` in a column, placed when the page shows the placeholder in view (at once when not served).
    `height` is about the part's height: the page's length, and so its scroll bar, stays about right until then."""

    placed = param.Boolean(default=False, constant=True, doc=(
        "The items are on the page (in the column, outside a server). Watchers run in the update that places "
        "them, before the items join the page: what they set arrives with the items, in the same message."))

    def __init__(self, *items, height: int = 400, **params):
        super().__init__(**params)
        self._items = items
        self._box = pn.Column(sizing_mode="stretch_width", margin=0)
        if served_document() is None:
            self._box.objects = list(items)
            with param.edit_constant(self):
                self.placed = True
            return
        mark = InView(text="Drawing this part…", height=height, sizing_mode="stretch_width", margin=(5, 10))
        mark.param.watch(self._seen, "seen")
        self._box.objects = [mark]

    def _seen(self, event: param.parameterized.Event) -> None:
        if event.new and not self.placed:
            with one_update(adding_views=True):
                with param.edit_constant(self):
                    self.placed = True  # the lesson brings the part's numbers up to date first
                with making_models():
                    self._box.objects = list(self._items)

    def __panel__(self) -> pn.viewable.Viewable:
        return self._box


def heading_then_later(section: list, height: int = 400) -> list:
    """A section given as [its heading, its items...]: the heading now (a tour step scrolls to it; the student sees
    what comes), the items in a `Later` of about `height`."""
    heading, *items = section
    return [heading, Later(*items, height=height)]


def compiled_at_load() -> InView:
    """An empty placeholder for the page as first sent, so that the page compiles InView's module while it loads.

    A lesson's placeholders arrive later, in a patch. A view waiting for its module to compile is made but not drawn,
    and so are its siblings: a change to a sibling widget arriving meanwhile fails in BokehJS (SelectView's
    _update_value finds no input element) and the rest of that message is lost (a shared link's batch size was not
    applied). With the module already compiled, the placeholders are drawn at once. Hidden: it never comes into view."""
    return InView(height=0, margin=0, visible=False)

"""Bokeh's walk over every model of the page, once per lesson built instead of once per layout it changes.

Each time a layout's children change, Bokeh recomputes the document's set of models by walking every model from
the roots: on a page with four lessons open (2,000 models) a walk took 100-200 ms, and building a lesson changed
two layouts (the lesson's box, then the tour's). Bokeh's `DocumentModelManager.freeze()` defers the walk to its
end; `one_update(adding_views=True)` (explorer/session/state.py) asks for it where this tuning is on.

Inside the update's hold, so that the walk ends first: it attaches the new models to the document, which applies
the document's theme to them, and only then does the hold send them to the page. (Panel's `hold(freeze=True)`
ends the other way round: the page got the new figures without the theme's 12-px tick labels.) Only for updates
that add views: Bokeh walks at the end of every freeze, also one that added nothing (a gallery click would pay a
walk it never needed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import panel as pn

_freezing = False  # set by the tuning (explorer/serve/tunings.py): on, and tested on the installed Panel and Bokeh


def once_per_update() -> None:
    global _freezing
    _freezing = True


@contextlib.contextmanager
def once(adding_views: bool) -> Iterator[None]:
    """One walk over the session's page at the end of the block, where tuned and the block adds views."""
    doc = pn.state.curdoc
    if not (adding_views and _freezing and doc is not None):
        yield
        return
    with doc.models.freeze():
        yield

"""Bokeh's walk over every model of the page, once per interaction instead of once per layout changed in it.

Each time a layout's children change, Bokeh recomputes the document's set of models by walking every model from
the roots: on a page with four lessons open (2,000 models) a walk took 100-200 ms, and opening a lesson changed
two layouts (the lesson's box, then the tour's). Panel's `hold(freeze=True)` (marked experimental in Panel 1.9)
defers the walk to the end of the hold; `one_update(adding_views=True)` (explorer/session/state.py) asks for it
where this tuning is on. Only there: Bokeh walks the page at the end of every frozen hold, also one that added
nothing (each gallery click would pay a walk, 100+ ms, that it never needed).
"""

from __future__ import annotations

_freezing = False  # set by the tuning (explorer/serve/tunings.py): on, and tested on the installed Panel and Bokeh


def once_per_update() -> None:
    global _freezing
    _freezing = True


def freezing() -> bool:
    """Whether one_update() holds Bokeh's recomputation of the page's models until its end."""
    return _freezing

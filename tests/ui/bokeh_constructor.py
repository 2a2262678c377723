"""Models made by a given `HasProps.__init__` inside a `with` block: Bokeh's own (`defaults.BOKEH_INIT`), whatever the
process's tunings installed, so that a comparison with Bokeh's reading does not depend on which tests ran before."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bokeh.core.has_props import HasProps

from explorer.serve import defaults


@contextmanager
def constructor(init: Callable[..., None] = defaults.BOKEH_INIT) -> Iterator[None]:
    saved, HasProps.__init__ = HasProps.__init__, init
    try:
        yield
    finally:
        HasProps.__init__ = saved

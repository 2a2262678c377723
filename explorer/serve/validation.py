"""Bokeh's validation of every value set, skipped while the explorer's own code updates a page.

Bokeh validates each value assigned to a model property. The explorer's updates assign values its own code made
(arrays, strings, numbers), and the checks took 15-25 % of an input change's server time. Validation is one switch
for the whole process (`bokeh.core.property.validation.validate`), saved and restored by each caller, so it is
turned off only on the thread that runs the server's event loop (the main thread): a worker thread overlapping an
update could otherwise restore it to "off" for good, and every figure made afterwards would keep raw values (a str
where a Title belongs). Bokeh also skips the conversions it does on assignment while validation is off, so models
are made with it on (`making_models()`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from bokeh.core.property.validation import validate

_skipping = False  # set by the tuning (explorer/serve/tunings.py): on, and tested on the installed Bokeh


def skip_in_updates() -> None:
    global _skipping
    _skipping = True


def _on_the_loop() -> bool:
    return _skipping and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def unvalidated() -> Iterator[None]:
    """Bokeh's validation off for the block, where the tuning is on and this is the event loop's thread."""
    if not _on_the_loop():
        yield
        return
    with validate(False):
        yield


@contextlib.contextmanager
def making_models() -> Iterator[None]:
    """Validation back on for the block (inside `unvalidated()`), so that Bokeh converts the values given to new
    models."""
    if not _on_the_loop():
        yield
        return
    with validate(True):
        yield

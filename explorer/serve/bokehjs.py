"""The BokehJS fixes (bokehjs_fixes.js beside this file), installed in each served page once its document is shown."""

from __future__ import annotations

import functools
import weakref
from pathlib import Path

import panel as pn
from bokeh.models import CustomJS

SCRIPT = Path(__file__).with_name("bokehjs_fixes.js")

_fixed_documents: weakref.WeakSet = weakref.WeakSet()


@functools.cache
def fixes() -> str:
    return SCRIPT.read_text(encoding="utf-8")


def fix_this_page() -> None:
    """Install the fixes in the browser when the current session's document is shown (once per document)."""
    doc = pn.state.curdoc
    if doc is None or doc in _fixed_documents:
        return
    doc.js_on_event("document_ready", CustomJS(code=fixes()))
    _fixed_documents.add(doc)

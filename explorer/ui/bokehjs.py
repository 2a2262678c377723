"""A fix for BokehJS 3.9 in the page: a renderer's position stylesheet is rewritten only when it changes.

Every renderer of a plot (glyphs, axes, grids, the title) rewrites its `<style>` element at every paint
(`RendererView.update_position` -> `InlineStyleSheet.replace` -> `el.textContent = css`), even when the
text is the same. Chromium re-parses the sheet and marks the styles dirty; the next scalar visual of
the paint reads a CSS variable (`getComputedStyle(el).getPropertyValue("--bk-text-color")`, ...) and
forces a style recalculation of the document. With the shell and a lesson in the page that was about
57 recalculations per input change, 1.5 ms each (docs/performance.md). Skipping a write of identical
text changes nothing else: the sheet already holds that text.
"""

from __future__ import annotations

from bokeh.document import Document
from bokeh.models import CustomJS

STYLESHEET_WRITE_ONCE = """
if (!window.__explorer_stylesheet_fix && window.Bokeh && Bokeh.require) {
  const {InlineStyleSheet} = Bokeh.require("core/dom");
  const update = InlineStyleSheet.prototype._update;
  InlineStyleSheet.prototype._update = function (css) {
    if (this.el.textContent !== css)
      update.call(this, css);
  };
  window.__explorer_stylesheet_fix = true;
}
"""


def fix_bokehjs(doc: Document | None) -> None:
    """Install the fix in the browser once `doc` is shown (a no-op without a document)."""
    if doc is not None:
        doc.js_on_event("document_ready", CustomJS(code=STYLESHEET_WRITE_ONCE))

"""Two fixes for BokehJS 3.9 in the page, both about style recalculations forced while plots paint.

1. A renderer's position stylesheet is rewritten only when it changes. Every renderer of a plot (glyphs,
   axes, grids, the title) rewrites its `<style>` element at every paint (`RendererView.update_position`
   -> `InlineStyleSheet.replace` -> `el.textContent = css`), even when the text is the same. Chromium
   re-parses the sheet and marks the styles dirty.
2. Plot visuals do not look for CSS variables. Every scalar visual (an axis's labels, a grid line, a
   legend's background) reads `getComputedStyle(el).getPropertyValue("--bk-text-color")` and the like
   before its own value, several times per paint; after any change to the page (a new text, a new
   size) the first such read forces a style recalculation of the whole document. Neither Bokeh's, Panel's
   nor the explorer's stylesheets define a `--bk-*` variable, so the answer is always "" (use the
   model's value); the fix gives that answer without asking.

With the shell and a lesson in the page, the first fix removed about 57 recalculations of 1.5 ms per
input change; the second another 15 ms per input change with the normalization lesson open
(docs/performance.md).
"""

from __future__ import annotations

from bokeh.document import Document
from bokeh.models import CustomJS

FIXES = """
if (!window.__explorer_bokehjs_fixed && window.Bokeh && Bokeh.require) {
  const {InlineStyleSheet} = Bokeh.require("core/dom");
  const update = InlineStyleSheet.prototype._update;
  InlineStyleSheet.prototype._update = function (css) {
    if (this.el.textContent !== css)
      update.call(this, css);
  };
  const {VisualProperties} = Bokeh.require("core/visuals/visual");
  VisualProperties.prototype._get_css_value = function (_name) {
    return "";
  };
  window.__explorer_bokehjs_fixed = true;
}
"""


def fix_bokehjs(doc: Document | None) -> None:
    """Install the fixes in the browser once `doc` is shown (a no-op without a document)."""
    if doc is not None:
        doc.js_on_event("document_ready", CustomJS(code=FIXES))

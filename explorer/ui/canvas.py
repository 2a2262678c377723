"""A drawing canvas for digits: white ink on black, like MNIST, for mouse, touch and pen.

The browser keeps the drawing and paints it (explorer/web/static/canvas.js, the same canvas as the static
site's); Python receives `strokes` (a list of strokes, each a list of [x, y] canvas pixels from the top-left
corner), throttled while a stroke is drawn (at most once per `throttle_ms`) and always when a stroke ends or
the canvas is cleared. `images.Strokes` rasterizes the same polylines, with the same round caps and line
width, for the model.
"""

from __future__ import annotations

import param
from panel.custom import JSComponent

from explorer.core import images
from explorer.web import site


class DrawingCanvas(JSComponent):
    """A square canvas with a Clear button; `strokes` is the drawing, in canvas pixels."""

    strokes = param.List(default=[], doc="Polylines, each a list of [x, y] canvas pixels.")
    canvas_width = param.Integer(default=280, bounds=(16, images.MAX_SIDE), constant=True, doc="px")
    canvas_height = param.Integer(default=280, bounds=(16, images.MAX_SIDE), constant=True, doc="px")
    line_width = param.Number(default=images.DEFAULT_LINE_WIDTH, bounds=(1, None), constant=True, doc="px")
    throttle_ms = param.Integer(default=100, bounds=(0, None), doc="Least time between updates during a stroke.")
    label = param.String(default="Drawing area: draw a digit with the mouse, a finger or a pen.",
                         doc="What a screen reader announces for the canvas.")

    _esm = site.STATIC / "canvas.js"  # shared with the static site; Panel sends its text with each component

    _stylesheets = ["""
    .drawing { display: flex; flex-direction: column; align-items: flex-start; gap: 6px; }
    .drawing canvas { touch-action: none; cursor: crosshair; border-radius: 4px; border: 1px solid #888; }
    .drawing .clear { font: inherit; padding: 4px 14px; border-radius: 4px; border: 1px solid #888;
                      background: var(--panel-surface-color, #fff); color: inherit; cursor: pointer; }
    .drawing .clear:focus-visible { outline: 2px solid #1f6feb; outline-offset: 2px; }
    """]

    def __init__(self, **params):
        params.setdefault("width", params.get("canvas_width", 280) + 4)
        params.setdefault("height", params.get("canvas_height", 280) + 40)
        super().__init__(**params)

    def to_strokes(self) -> images.Strokes | None:
        """The drawing for `images`, or None for an empty canvas; InputError if the data is invalid."""
        if not any(self.strokes):
            return None
        return images.Strokes(self.strokes, self.canvas_width, self.canvas_height, self.line_width)

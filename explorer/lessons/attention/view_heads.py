"""Section 2 of the attention lesson: where every head looks (a layers × heads grid), and the selected head large.

Sources "attention-grid-pictures", "attention-grid" (one overlay per layer and head, plus each layer's mean) and
"attention-map" (the enlarged map of the session's layer and channel). A click in the grid selects its layer and
head (the session's: the overview follows) and makes the patch under the pointer the query.
"""

from __future__ import annotations

import math

import numpy as np
import panel as pn
from bokeh.events import DoubleTap, Tap
from bokeh.models import ColorBar, ColumnDataSource, HoverTool, LinearColorMapper, Range1d
from bokeh.plotting import figure

from explorer.lessons import plots
from explorer.lessons.attention import math as am
from explorer.lessons.attention.view_figures import (
    CELL_MAX,
    OVERLAY_ALPHA,
    PHONE_WIDTH,
    PICTURE,
    QUERY_COLOUR,
    Changed,
    Select,
    Shown,
    bare,
    outer,
    pictured,
)
from explorer.session.tags import tag_results

MARGIN = (70, 24)  # left (row labels), top (column labels) of the grid, in px


class Heads:
    """Section 2: figures made once (in the constructor), sized per model by `resize`, data assigned by `draw`."""

    def __init__(self, changed: Changed, select: Select, picture_source: ColumnDataSource,
                 query_source: ColumnDataSource, picture_tapped):
        self._changed, self._select = changed, select
        self._analysis: am.Analysis | None = None  # what the grid shows, for its geometry and clicks
        self._hw = (1, 1)                           # the input's height and width (px)
        self.cell = CELL_MAX
        self.text = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
        self.big_text = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
        self._pictures = plots.source("image", "x", "y", "dw", "dh", name="attention-grid-pictures")
        self.grid_source = plots.source("image", "x", "y", "dw", "dh", "layer", "head", "max_text",
                                        "left", "right", "top", "bottom", name="attention-grid")
        self._labels = plots.source("x", "y", "text", "align")
        self._highlight = plots.source("left", "right", "top", "bottom")
        self._query = plots.source("left", "right", "top", "bottom")
        # No colour bar: thumbnails, each head on its own scale (hover: its largest weight); the enlarged head beside
        # them has one.
        fig = figure(width=200, height=200, x_range=Range1d(0, 1), y_range=plots.pixel_range(1), tools="",
                     toolbar_location=None, min_border=0, outline_line_color=None,
                     title="where the query looks")
        bare(fig)
        fig.quad(left="left", right="right", top="top", bottom="bottom", fill_color="#fde68a", line_color="#b45309",
                 line_width=2, source=self._highlight)
        fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=self._pictures)
        fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", global_alpha=OVERLAY_ALPHA,
                       source=self.grid_source)
        fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_color=QUERY_COLOUR,
                 line_width=1.5, source=self._query)
        fig.text(x="x", y="y", text="text", text_align="align", text_baseline="middle", text_font_size="12px",
                 text_color="#334155", source=self._labels)
        hit = fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_alpha=0,
                       source=self.grid_source)
        fig.add_tools(HoverTool(renderers=[hit], tooltips=[("layer", "@layer"), ("head", "@head"),
                                                           ("largest weight", "@max_text")]))
        fig.on_event(Tap, self._grid_tapped)
        fig.on_event(DoubleTap, self._grid_tapped)
        self.grid_fig = fig

        self._big_source = plots.source("image", "dw", "dh", name="attention-map")
        self._big_mapper = LinearColorMapper(palette=list(plots.SEQUENTIAL), low=0, high=1)
        fig = figure(**outer(PICTURE, PICTURE, colour_bar=True), x_range=Range1d(0, 1), y_range=plots.pixel_range(1),
                     tools="", toolbar_location=None, title="attention", x_axis_location="above")
        pictured(fig, "x (px)", "y (px)")
        fig.image_rgba(image="image", x=0, y=0, dw="dw", dh="dh", source=picture_source)
        image = fig.image(image="image", x=0, y=0, dw="dw", dh="dh", color_mapper=self._big_mapper,
                          global_alpha=OVERLAY_ALPHA, source=self._big_source)
        fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_color=QUERY_COLOUR,
                 line_width=3, source=query_source)
        fig.add_tools(HoverTool(renderers=[image], tooltips=[("attention weight", "@image{0.0000}")]))
        fig.add_layout(ColorBar(color_mapper=self._big_mapper, width=10, title="attention weight"), "right")
        fig.on_event(Tap, picture_tapped)
        fig.on_event(DoubleTap, picture_tapped)
        self.big_fig = fig

    def layout(self, controls: pn.viewable.Viewable) -> list:
        return [pn.pane.Markdown("#### 2. Where every head looks", margin=(0, 10),
                                 css_classes=["attention-part-2"]), self.text, controls,
                pn.Row(pn.pane.Bokeh(self.grid_fig),
                       pn.Column(pn.pane.Bokeh(self.big_fig), self.big_text, width=380), stylesheets=[plots.WRAPS])]

    def resize(self, inference, a: am.Analysis) -> None:
        """The grid's cells for a model's layers and heads."""
        self._analysis, self._hw = a, inference.view.shape[:2]
        layers, heads = a.maps.shape[:2]
        if not self._changed("grid-size", (layers, heads)):
            return
        # the whole grid fits a phone: a column per head and the mean, beside the row labels
        self.cell = max(40, min(CELL_MAX, (PHONE_WIDTH - MARGIN[0]) // (heads + 1)))
        width, height = MARGIN[0] + (heads + 1) * self.cell, MARGIN[1] + layers * self.cell
        self.grid_fig.width, self.grid_fig.height = width, height + 30
        self.grid_fig.x_range.end, self.grid_fig.y_range.start = width, height

    def cell_geometry(self, layer: int, col: int) -> tuple[float, float, float, float, float]:
        """(left, top, picture x, picture y, px per input pixel) of the grid cell of (layer, column)."""
        h, w = self._hw
        left, top = MARGIN[0] + col * self.cell, MARGIN[1] + layer * self.cell
        scale = (self.cell - 8) / max(h, w)
        return left, top, left + 4, top + 4, scale

    def draw(self, s: Shown) -> None:
        self._draw_grid(s)
        self._draw_big(s)

    def _draw_grid(self, s: Shown) -> None:
        a, inference = s.analysis, s.inference
        self._analysis, self._hw = a, inference.view.shape[:2]
        layers, heads = a.maps.shape[:2]
        h, w = self._hw
        if self._changed("grid-pictures", (inference, self.cell)):
            picture = plots.picture_to_rgba(inference.view)
            cells = [self.cell_geometry(ly, c) for ly in range(layers) for c in range(heads + 1)]
            self._pictures.data = dict(image=[picture] * len(cells), x=[g[2] for g in cells], y=[g[3] for g in cells],
                                       dw=[w * g[4] for g in cells], dh=[h * g[4] for g in cells])
            labels = ([(MARGIN[0] + (c + 0.5) * self.cell, MARGIN[1] / 2, f"head {c}" if c < heads else "mean",
                        "center") for c in range(heads + 1)]
                      + [(4, MARGIN[1] + (ly + 0.5) * self.cell, f"layer {ly}", "left") for ly in range(layers)])
            self._labels.data = dict(zip(("x", "y", "text", "align"), map(list, zip(*labels, strict=True)),
                                         strict=True))
            tag_results(s.model, self._pictures, self._labels)
        if self._changed("grid-maps", (inference, self.cell, s.query)):
            maps = am.maps_with_mean(a.maps, s.query, a.grid).numpy()  # (L, H + 1, rows, cols)
            cols: dict[str, list] = {k: [] for k in self.grid_source.data}
            for ly in range(layers):
                for c in range(heads + 1):
                    left, top, x, y, scale = self.cell_geometry(ly, c)
                    values = maps[ly, c]
                    row = dict(image=plots.to_rgba(values, signed=False), x=x, y=y, dw=w * scale, dh=h * scale,
                               layer=a.records[ly], head=str(c) if c < heads else "mean of all heads",
                               max_text=plots.format_value(values.max()), left=left, right=left + self.cell,
                               top=top, bottom=top + self.cell)
                    for k, v in row.items():
                        cols[k].append(v)
            self.grid_source.data = cols
            self._query.data = self._query_boxes(a, s.query)
            self.grid_fig.title.text = f"where {s.query_name} looks"  # short: the grid is a phone's width
            tag_results(s.model, self.grid_source, self._query, self.grid_fig)
        if self._changed("grid-highlight", (inference, self.cell, s.index, s.head)):
            left, top, *_ = self.cell_geometry(s.index, s.head)
            self._highlight.data = dict(left=[left + 1], right=[left + self.cell - 1], top=[top + 1],
                                        bottom=[top + self.cell - 1])
            tag_results(s.model, self._highlight)
        tag_results(s.model, self.text)
        self.text.object = (
            f"Each picture is one head of one layer: the weights {s.query_name} gives the {a.grid.n} patches "
            f"(row {s.query} of that head's attention matrix), drawn over your input, from dark purple (0) to "
            "yellow (that picture's largest weight). The last column averages the heads. Click a patch in any "
            "picture to make it the query; the highlighted picture is enlarged beside the grid and computed step by "
            "step below.")

    def _query_boxes(self, a: am.Analysis, query: int) -> dict[str, list]:
        """The query patch's outline in every picture of the grid (none for the class token)."""
        boxes: dict[str, list] = {k: [] for k in ("left", "right", "top", "bottom")}
        cell = a.grid.cell(query)
        if cell is None:
            return boxes
        r, c_ = cell
        layers, heads = a.maps.shape[:2]
        for ly in range(layers):
            for c in range(heads + 1):
                _, _, x, y, scale = self.cell_geometry(ly, c)
                p = a.grid.patch * scale
                for k, v in zip(boxes, (x + c_ * p, x + (c_ + 1) * p, y + r * p, y + (r + 1) * p), strict=True):
                    boxes[k].append(v)
        return boxes

    def _draw_big(self, s: Shown) -> None:
        a, inference = s.analysis, s.inference
        if not self._changed("big", (inference, s.index, s.head, s.query)):
            return
        h, w = inference.view.shape[:2]
        values = am.query_maps(a.maps, s.query, a.grid)[s.index, s.head].numpy()
        self._big_source.data = dict(image=[values.astype(np.float32)], dw=[w], dh=[h])
        self.big_fig.x_range.end, self.big_fig.y_range.start = w, h
        self._big_mapper.high = plots.max_abs(values)
        self.big_fig.title.text = f"{s.layer}, head {s.head}"
        tag_results(s.model, self._big_source, self.big_fig, self.big_text)
        weights = am.query_weights(a.maps, s.index, s.head, s.query, a.grid)
        extra = f", {plots.format_value(weights.to_prefix)} to the class token" \
            if a.grid.first and s.query >= a.grid.first else ""
        self.big_text.object = (
            f"Head {s.head} of {s.layer}: where {s.query_name} looks. Its weights over all "
            f"{a.maps.shape[-1]} tokens sum to 1; the largest patch weight is "
            f"{plots.format_value(weights.largest_patch)}, {plots.format_value(weights.on_itself)} stays on the "
            f"query itself{extra}.")

    def _grid_tapped(self, event: Tap | DoubleTap) -> None:
        a = self._analysis
        if event.x is None or event.y is None or a is None:
            return
        layers, heads = a.maps.shape[:2]
        col = math.floor((event.x - MARGIN[0]) / self.cell)
        layer = math.floor((event.y - MARGIN[1]) / self.cell)
        if not (0 <= layer < layers and 0 <= col <= heads):
            return
        _, _, x, y, scale = self.cell_geometry(layer, col)
        patch_px = a.grid.patch * scale
        row, column = math.floor((event.y - y) / patch_px), math.floor((event.x - x) / patch_px)
        choice: dict[str, object] = {"layer": a.records[layer]}
        if col < heads:
            choice["head"] = col
        if 0 <= row < a.grid.rows and 0 <= column < a.grid.cols:
            choice["query"] = a.grid.token(row, column)
        self._select(**choice)

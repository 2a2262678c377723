"""Section 1 of the attention lesson: the input cut into patches, the patch embedding, the positions' similarity.

Sources "attention-picture", "attention-embedding", "attention-positions" and "attention-query" (the query's
outline, also drawn over the enlarged map of view_heads.py). A click on a patch, in the picture or in the position
mosaic, makes it the query.
"""

from __future__ import annotations

import math

import panel as pn
from bokeh.events import DoubleTap, Tap
from bokeh.models import ColorBar, CustomJSHover, HoverTool, LinearColorMapper, Range1d
from bokeh.plotting import figure

from explorer.lessons import plots
from explorer.lessons.attention import math as am
from explorer.lessons.attention.view_figures import PICTURE, QUERY_COLOUR, Changed, Select, Shown, bare, outer, pictured
from explorer.session.tags import tag_results

EMPTY_BOX = dict(left=[], right=[], top=[], bottom=[])


class Patches:
    """Section 1: figures made once (in the constructor), data assigned by `draw`."""

    def __init__(self, changed: Changed, select: Select, cell_hover: CustomJSHover):
        self._changed, self._select = changed, select
        self._grid: am.PatchGrid | None = None  # the patch grid drawn, for the clicks
        self.text = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
        self.picture_source = plots.source("image", "dw", "dh", name="attention-picture")
        self._lines_source = plots.source("xs", "ys")
        self.query_source = plots.source("left", "right", "top", "bottom", name="attention-query")
        fig = figure(**outer(PICTURE, PICTURE), x_range=Range1d(0, 1), y_range=plots.pixel_range(1),
                     tools="", toolbar_location=None, title="your input, cut into patches (click one)",
                     x_axis_location="above")
        pictured(fig, "x (px)", "y (px)")
        fig.image_rgba(image="image", x=0, y=0, dw="dw", dh="dh", source=self.picture_source)
        fig.multi_line(xs="xs", ys="ys", line_color="#38bdf8", line_width=1, source=self._lines_source)
        fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_color=QUERY_COLOUR,
                 line_width=3, source=self.query_source)
        fig.on_event(Tap, self.picture_tapped)
        fig.on_event(DoubleTap, self.picture_tapped)
        self.picture_fig = fig

        self._embed_source = plots.source("image", "dw", "dh", name="attention-embedding")
        self._embed_row_source = plots.source("left", "right", "top", "bottom")
        self._embed_mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1)
        fig = figure(**outer(230, PICTURE, colour_bar=True), x_range=Range1d(0, 1), y_range=plots.pixel_range(1),
                     tools="", toolbar_location=None, title="patch embedding", x_axis_location="above")
        pictured(fig, "embedding feature", "patch (row by row)")
        image = fig.image(image="image", x=0, y=0, dw="dw", dh="dh", color_mapper=self._embed_mapper,
                          source=self._embed_source)
        fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_color=QUERY_COLOUR,
                 line_width=2, source=self._embed_row_source)
        fig.add_tools(HoverTool(renderers=[image], tooltips=[("patch", "$y{custom}"), ("feature", "$x{custom}"),
                                                             ("value", "@image{0.000}")],
                                formatters={"$x": cell_hover, "$y": cell_hover}))
        fig.add_layout(ColorBar(color_mapper=self._embed_mapper, width=10, title="value"), "right")
        self._embed_fig = fig

        self._pos_source = plots.source("image", "dw", "dh", name="attention-positions")
        self._pos_query_source = plots.source("left", "right", "top", "bottom")
        self._pos_mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1, nan_color="#00000000")
        fig = figure(**outer(PICTURE, PICTURE, axes=False, colour_bar=True), x_range=Range1d(0, 1),
                     y_range=plots.pixel_range(1), tools="", toolbar_location=None,
                     title="position embedding similarity")
        bare(fig)
        image = fig.image(image="image", x=0, y=0, dw="dw", dh="dh", color_mapper=self._pos_mapper,
                          source=self._pos_source)
        fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_color=QUERY_COLOUR,
                 line_width=2, source=self._pos_query_source)
        fig.add_tools(HoverTool(renderers=[image], tooltips=[("cosine similarity", "@image{0.00}")]))
        fig.add_layout(ColorBar(color_mapper=self._pos_mapper, width=10), "right")
        fig.on_event(Tap, self._positions_tapped)
        fig.on_event(DoubleTap, self._positions_tapped)
        self._pos_fig = fig

    def layout(self) -> list:
        return [pn.pane.Markdown("#### 1. Patches, patch embedding and positions", margin=(0, 10),
                                 css_classes=["attention-part-1"]), self.text,
                pn.Row(pn.pane.Bokeh(self.picture_fig), pn.pane.Bokeh(self._embed_fig), pn.pane.Bokeh(self._pos_fig),
                       stylesheets=[plots.WRAPS])]  # one under the other on a phone

    def draw(self, s: Shown) -> None:
        inference, grid = s.inference, s.analysis.grid
        h, w = inference.view.shape[:2]
        self._grid = grid
        if self._changed("picture", (inference,)):
            self.picture_source.data = dict(image=[plots.picture_to_rgba(inference.view)], dw=[w], dh=[h])
            self.picture_fig.x_range.end, self.picture_fig.y_range.start = w, h
            xs = [[c * grid.patch] * 2 for c in range(1, grid.cols)] + [[0, w]] * (grid.rows - 1)
            ys = [[0, h]] * (grid.cols - 1) + [[r * grid.patch] * 2 for r in range(1, grid.rows)]
            self._lines_source.data = dict(xs=xs, ys=ys)
            self._draw_embedding_and_positions(s.analysis)
            tag_results(s.model, self.picture_source, self._lines_source, self.picture_fig, self._embed_source,
                        self._embed_fig, self._pos_source, self._pos_fig)
        if not self._changed("query-patches", (inference, s.query)):
            return
        cell = grid.cell(s.query)
        tag_results(s.model, self.query_source, self._embed_row_source, self._pos_query_source, self.text)
        if cell is None:
            for source in (self.query_source, self._embed_row_source, self._pos_query_source):
                source.data = EMPTY_BOX
        else:
            r, c = cell
            self.query_source.data = dict(left=[c * grid.patch], right=[(c + 1) * grid.patch],
                                          top=[r * grid.patch], bottom=[(r + 1) * grid.patch])
            i = r * grid.cols + c
            self._embed_row_source.data = dict(left=[0], right=[self._embed_fig.x_range.end], top=[i], bottom=[i + 1])
            side = grid.cols + 1
            self._pos_query_source.data = dict(left=[c * side], right=[c * side + grid.cols],
                                               top=[r * (grid.rows + 1)], bottom=[r * (grid.rows + 1) + grid.rows])
        self.text.object = _text(s, cell)

    def _draw_embedding_and_positions(self, a: am.Analysis) -> None:
        if a.embedding is not None:
            name, embedding = a.embedding
            values = embedding.float().numpy()
            self._embed_source.data = dict(image=[values], dw=[values.shape[1]], dh=[values.shape[0]])
            self._embed_fig.x_range.end, self._embed_fig.y_range.start = values.shape[1], values.shape[0]
            self._embed_mapper.low, self._embed_mapper.high = plots.colour_range(True, plots.max_abs(values))
            self._embed_fig.title.text = f"patch embedding ({name})"  # its y axis says: one row per patch
        else:
            self._embed_source.data = dict(image=[], dw=[], dh=[])
            self._embed_fig.title.text = "patch embedding: no convolution makes the patches"
        if a.positions is not None:
            mosaic = am.position_mosaic(a.positions, a.grid).numpy()
            self._pos_source.data = dict(image=[mosaic], dw=[mosaic.shape[1]], dh=[mosaic.shape[0]])
            self._pos_fig.x_range.end, self._pos_fig.y_range.start = mosaic.shape[1], mosaic.shape[0]
            self._pos_fig.title.text = "position similarity (cosine; one square per patch)"
        else:
            self._pos_source.data = dict(image=[], dw=[], dh=[])
            self._pos_fig.title.text = "no learned position embedding found"

    def picture_tapped(self, event: Tap | DoubleTap) -> None:
        """A click on the input picture (here, or under the enlarged map): its patch becomes the query."""
        if event.x is not None and event.y is not None and self._grid is not None:
            self._select_patch(math.floor(event.y / self._grid.patch), math.floor(event.x / self._grid.patch))

    def _positions_tapped(self, event: Tap | DoubleTap) -> None:
        if event.x is not None and event.y is not None and self._grid is not None:
            grid = self._grid
            self._select_patch(math.floor(event.y / (grid.rows + 1)), math.floor(event.x / (grid.cols + 1)))

    def _select_patch(self, row: int, col: int) -> None:
        if 0 <= row < self._grid.rows and 0 <= col < self._grid.cols:
            self._select(query=self._grid.token(row, col))


def _text(s: Shown, cell: tuple[int, int] | None) -> str:
    a, grid = s.analysis, s.analysis.grid
    h, w = s.inference.view.shape[:2]
    tokens = a.maps.shape[-1]
    cls = "one class token in front, " if grid.first == 1 else f"{grid.first} extra tokens in front, " \
        if grid.first else ""
    dim = a.embedding[1].shape[1] if a.embedding is not None else None
    embed = f" Each patch becomes a vector of {dim} numbers (middle)." if dim else ""
    where = ("The query is the class token, which has no patch: click a patch to pick one." if cell is None else
             f"The query is the patch at row {cell[0]}, column {cell[1]} (red): its square on the right shows "
             "the cosine similarity of its position vector to every patch's (1 = same direction).")
    return (f"The {w}×{h} px input is cut into {grid.rows}×{grid.cols} patches of {grid.patch:g}×{grid.patch:g} px: "
            f"{cls}{tokens} tokens in all.{embed} {where}")

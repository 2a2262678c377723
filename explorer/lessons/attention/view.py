"""The attention lesson: patches, where every head looks, one head step by step, rollout and attention distance.

Every number comes from explorer/lessons/attention/math.py on the session's traced input; the step-by-step
probabilities at temperature 1 are the model's own (the view says how far they are from the traced ones).

Performance (a new Bokeh model costs far more to send and lay out than new data in one already on the
page; docs/performance.md): every Bokeh figure and source is built once, when the first model with attention is
analysed (`_build_content`: on a CNN the lesson is one message, not some 700 Bokeh models); a change of a
control only replaces sources' data and a few properties, inside one `one_update()`, and each part is
redrawn only when what it shows changed (`_changed`). A model whose attention cannot be read hides the
figures and says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import panel as pn
import param
from bokeh.events import DoubleTap, Tap
from bokeh.models import ColorBar, ColumnDataSource, CustomJSHover, HoverTool, LinearColorMapper, Range1d
from bokeh.plotting import figure

from explorer.errors import InputError
from explorer.lessons import plots
from explorer.lessons.attention import math as am
from explorer.session.narrative import Narrative, Step
from explorer.session.state import Inference, SessionView, follows, making_models, one_update
from explorer.session.tags import tag_results

PICTURE = 240        # side of the input picture with its patch grid (px)
CELL_MAX = 86        # side of one cell of the layer × head grid (px), smaller for models with many heads
STEP_SIDE = 150      # the largest side of one matrix of the step-by-step view (px)
OVERLAY_ALPHA = 0.72  # attention drawn over the picture: the digit stays visible underneath
QUERY_COLOUR = "#e11d48"
CELL_CODE = "return Math.floor(value).toString()"  # a hover formatter: the cell under the pointer, not rounded


@dataclass(frozen=True)
class Matrix:
    key: str
    title: str        # {T}, {D}, {d} are filled in with the sizes
    signed: bool
    columns: str      # x axis label


STEPS = (
    Matrix("x", "1. x: the block's input ({T}×{D})", True, "feature"),
    Matrix("normed", "2. LayerNorm(x)", True, "feature"),
    Matrix("q", "3. Q = LN(x)·W_Q ({T}×{d})", True, "feature of the head"),
    Matrix("k", "4. K = LN(x)·W_K", True, "feature of the head"),
    Matrix("v", "5. V = LN(x)·W_V", True, "feature of the head"),
    Matrix("scores", "6. Q·Kᵀ ({T}×{T})", True, "key token"),
    Matrix("scaled", "7. ÷ √d ÷ τ", True, "key token"),
    Matrix("probs", "8. softmax of each row: P", False, "key token"),
    Matrix("out", "9. out = P·V ({T}×{d})", True, "feature of the head"),
)
QUERY_ROWS = ("q", "scores", "scaled", "probs", "out")  # matrices whose row q belongs to the query token alone

INTRO = (
    "### Attention: how a vision transformer looks at your image\n"
    "A ViT cuts the image into square **patches**, turns each into a vector (a *token*), adds a learned "
    "**position** vector, and puts a **class token** in front. In every layer each token asks every other token "
    "how relevant it is (**attention**), in several **heads** at once, and takes a weighted mix of their values. "
    "The class token's final vector decides the class. " + plots.COLOUR_LEGEND)


def _outer(frame_width: int, frame_height: int, axes: bool = True, colour_bar: bool = False) -> dict[str, int]:
    """Outer width and height around a plot area of about frame_width × frame_height px.

    Outer sizes rather than Bokeh's frame_width/frame_height: inside a Panel pane, a figure sized by its frame
    is cut off at the bottom by about its title's height (seen in Chromium with Panel 1.9.4, Bokeh 3.9.2).
    """
    return dict(width=frame_width + (58 if axes else 12) + (72 if colour_bar else 0),
                height=frame_height + (70 if axes else 34))


def _source(*columns: str, name: str | None = None) -> ColumnDataSource:
    return ColumnDataSource(data={c: [] for c in columns}, name=name)


def _bare(fig) -> None:
    fig.axis.visible = False
    fig.grid.visible = False
    fig.title.text_font_size = "13px"


class AttentionLesson(SessionView):
    """Patches, attention per layer and head, one head step by step, rollout and attention distance."""

    layer = param.Selector(default=None, objects=[], allow_None=True, doc="Attention layer (trace record name).")
    head = param.Integer(default=0, bounds=(0, None), doc="Head of the layer (the state's channel).")
    query = param.Selector(default=0, objects={"class token": 0}, doc="Token whose attention is shown.")
    temperature = param.Number(default=1.0, bounds=(0.1, 5.0), step=0.05,
                               doc="Softmax temperature τ of the step-by-step head; 1 is the model's own.")
    head_fusion = param.Selector(default="mean", objects=list(am.HEAD_FUSIONS), doc="How rollout fuses the heads.")
    discard_ratio = param.Number(default=0.0, bounds=(0.0, 0.95), step=0.05,
                                 doc="Share of the weakest attention weights rollout drops in each layer.")

    def __init__(self, model: str | None = None, **params):
        super().__init__(model=model, **params)
        self._shown: dict[str, object] = {}
        self._analysis: am.Analysis | None = None
        self._analysed: Inference | None = None
        self._following = False  # True while the lesson copies the state's layer/channel (nothing to publish)
        self._message = pn.pane.Alert("", alert_type="warning", visible=False, sizing_mode="stretch_width",
                                      css_classes=["attention-message"])
        self._texts = {k: pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
                       for k in ("patches", "grid", "big", "step", "rollout", "distance")}
        self._narrative = Narrative(self._tour(), self, title="Guided tour: attention")
        self._widgets = dict(
            layer=pn.widgets.Select.from_param(self.param.layer, name="Layer", width=170),
            head=pn.widgets.IntSlider.from_param(self.param.head, name="Head", width=170),
            query=pn.widgets.Select.from_param(self.param.query, name="Query token", width=190),
            temperature=pn.widgets.FloatSlider.from_param(self.param.temperature, name="Temperature τ", width=220),
            head_fusion=pn.widgets.RadioButtonGroup.from_param(self.param.head_fusion, name="Head fusion"),
            discard_ratio=pn.widgets.FloatSlider.from_param(self.param.discard_ratio, name="Discard ratio", width=220,
                                                            format="0%"),
        )
        # The sections' figures are made, and join the page, once a model with attention is analysed: on a CNN the
        # lesson is its message alone, and opening it there costs a student's server no 700 Bokeh models.
        self._content: pn.Column | None = None
        self._page = pn.Column(pn.pane.Markdown(INTRO, sizing_mode="stretch_width", margin=(0, 10)), self._message,
                               sizing_mode="stretch_width")
        self._update()

    # --- layout ---

    def _build_content(self) -> None:
        """The sections, once."""
        if self._content is not None:
            return
        with making_models():
            self._cell_hover = CustomJSHover(code=CELL_CODE)  # one per lesson: a Bokeh model belongs to one document
            self._build_patches()
            self._build_grid()
            self._build_big()
            self._build_steps()
            self._build_rollout()
            self._build_distance()
            self._content = self._layout()
            self._page.append(self._content)

    def _layout(self) -> pn.Column:
        w, t = self._widgets, self._texts
        section = dict(sizing_mode="stretch_width", margin=(10, 0))
        return pn.Column(
            self._narrative,
            pn.pane.Markdown("#### 1. Patches, patch embedding and positions", margin=(0, 10)), t["patches"],
            pn.Row(pn.pane.Bokeh(self._patch_fig), pn.pane.Bokeh(self._embed_fig), pn.pane.Bokeh(self._pos_fig)),
            pn.pane.Markdown("#### 2. Where every head looks", margin=(0, 10)), t["grid"],
            pn.Row(w["layer"], w["head"], w["query"]),
            pn.Row(pn.pane.Bokeh(self._grid_fig), pn.Column(pn.pane.Bokeh(self._big_fig), t["big"], width=380)),
            pn.pane.Markdown("#### 3. One head, step by step", margin=(0, 10)), t["step"],
            w["temperature"],
            pn.Row(*(pn.pane.Bokeh(self._step_figs[m.key]) for m in STEPS[:2])),
            pn.Row(*(pn.pane.Bokeh(self._step_figs[m.key]) for m in STEPS[2:5])),
            pn.Row(*(pn.pane.Bokeh(self._step_figs[m.key]) for m in STEPS[5:])),
            pn.pane.Bokeh(self._row_fig),
            pn.pane.Markdown("#### 4. Attention rollout", margin=(0, 10)), t["rollout"],
            pn.Row(pn.Column(pn.pane.Markdown("Head fusion", margin=(0, 10)), w["head_fusion"]), w["discard_ratio"]),
            pn.pane.Bokeh(self._rollout_fig),
            pn.pane.Markdown("#### 5. Attention distance: local and global heads", margin=(0, 10)), t["distance"],
            pn.pane.Bokeh(self._distance_fig),
            **section)

    def __panel__(self) -> pn.viewable.Viewable:
        return self._page

    def _tour(self) -> tuple[Step, ...]:
        first = lambda lesson: lesson.param.layer.objects[0] if lesson.param.layer.objects else None  # noqa: E731
        last = lambda lesson: lesson.param.layer.objects[-1] if lesson.param.layer.objects else None  # noqa: E731
        return (
            Step("Your image as a sequence of patches",
                 "Section 1: the grid cuts the image into patches; each row of the middle picture is one patch's "
                 "embedding. On the right, each small square belongs to one patch and shows how similar its learned "
                 "position vector is to every other patch's: nearby patches have similar positions, although the "
                 "model was never told the image is 2-D.",
                 {"query": 0, "layer": first, "head": 0, "temperature": 1.0}),
            Step("Where the class token looks",
                 "Section 2: each small picture is one head of one layer, the class token's attention over the "
                 "patches, drawn over your digit (bright = much attention). Heads of one layer look at different "
                 "places; the last column averages them. Deeper layers usually gather from the strokes.",
                 {"query": 0, "layer": last, "head": 0}),
            Step("Any patch can ask",
                 "Click a patch (in any picture of section 1 or 2) to see where *that* token looks instead of the "
                 "class token. Here the query is the patch with the most ink: many heads look at its neighbours.",
                 {"query": lambda lesson: lesson.inkiest_patch(), "layer": first}),
            Step("One head, step by step",
                 "Section 3 computes one head from the block's input: LayerNorm, then the query, key and value "
                 "matrices, the dot products Q·Kᵀ, the division by √d, the softmax of each row and finally P·V. "
                 "Hover any cell for its value: these are the model's own numbers.",
                 {"layer": first, "head": 0, "temperature": 1.0, "query": 0}),
            Step("Temperature: sharp and flat attention",
                 "A temperature below 1 divides the scores by a small number before the softmax: the largest score "
                 "takes almost everything (sharp attention). Above 1 the weights flatten towards equal. Drag τ and "
                 "watch the bars and matrix 8; τ = 1 is what the model really does.",
                 {"temperature": 0.3}),
            Step("Rollout: following attention through all layers",
                 "Section 4: each layer mixes tokens, and the residual connection keeps a copy of each token. "
                 "Rollout multiplies the layers' attention (plus that identity) to estimate which patches reach the "
                 "class token in the end, compared with the last layer alone. Try max fusion and a discard ratio.",
                 {"temperature": 1.0, "query": 0, "head_fusion": "mean", "discard_ratio": 0.0}),
            Step("Local and global heads",
                 "Section 5: for every head, the average distance between a patch and the patches it attends to. "
                 "Small values are local heads (like a convolution), large ones global; the dashed line is a head "
                 "that looks everywhere equally. ViTs mix both already in early layers.",
                 {"layer": first, "head_fusion": "mean"}),
        )

    # --- the state and the lesson's own selection ---

    def inkiest_patch(self) -> int:
        """The patch token whose pixels hold the most ink (the brightest mean), a good query to start from."""
        a = self._analysis
        if a is None:
            return 0
        picture = self.state.inference.view
        grey = picture if picture.ndim == 2 else picture.mean(axis=2)
        return a.grid.token(*am.brightest_cell(grey, a.grid))

    @follows("state.layer", "state.channel")
    def _follow_state(self) -> None:
        a = self._analysis
        if a is None:
            return
        layer = _attention_record_for(self.state.layer, a.records)
        self._following = True
        try:
            self.param.update(layer=layer or self.layer, head=min(self.state.channel, a.maps.shape[1] - 1))
        finally:
            self._following = False

    @param.depends("layer", "head", watch=True)
    def _publish(self) -> None:
        """The lesson's layer and head are the session's layer and channel (the overview follows)."""
        if not self._following and self.layer is not None:
            self.state.param.update(layer=self.layer, channel=self.head)

    def select_patch(self, row: int, col: int) -> None:
        grid = self._analysis.grid
        if 0 <= row < grid.rows and 0 <= col < grid.cols:
            self.query = grid.token(row, col)

    # --- updates: data only, inside hold() ---

    @follows("state.inference", "layer", "head", "query", "temperature", "head_fusion", "discard_ratio")
    def _update(self) -> None:
        inference = self.state.inference
        if inference is not self._analysed:
            self._analysed = inference
            try:
                analysis = am.analyse(inference.model.module, inference.trace, inference.view.shape[:2])
            except InputError as e:
                self._cannot_show(inference, str(e))
                return
            self._build_content()
            with one_update():
                self._adopt(analysis)
        if self._analysis is None:
            return
        with one_update():
            self._draw_patches()
            self._draw_grid()
            self._draw_big()
            self._draw_step()
            self._draw_rollout()
            self._draw_distance()

    def _cannot_show(self, inference: Inference, why: str) -> None:
        """Say why this model's attention cannot be shown, in place of the sections."""
        self._analysis = None
        with one_update():
            self._message.param.update(object=f"**{inference.model.name}**: {why}", visible=True,
                                       tags=plots.model_tag(inference.model.name))
            if self._content is not None:
                self._content.visible = False

    def _adopt(self, analysis: am.Analysis) -> None:
        """Show a new analysis: the lesson's choices (layers, heads, queries) and figure sizes for its model."""
        self._analysis = analysis
        self._message.visible = False
        self._content.visible = True
        heads, grid = analysis.maps.shape[1], analysis.grid
        queries = ({"class token": 0} if grid.first else {}) | {
            f"patch (row {r}, column {c})": grid.token(r, c) for r in range(grid.rows) for c in range(grid.cols)}
        layer = _attention_record_for(self.state.layer, analysis.records) or analysis.records[0]
        # following, from the new choices on: a menu whose value is not among them takes its first entry,
        # which is not the student's choice to publish (it undid a click on a layer made during the first load)
        self._following = True
        try:  # the watchers of these params call _update again: it draws what the new choices show
            self.param.query.objects = queries
            self.param.layer.objects = list(analysis.records)
            self.param.head.bounds = (0, heads - 1)
            self._widgets["head"].end = heads - 1
            self._resize(analysis)
            self.param.update(layer=layer, head=min(self.state.channel, heads - 1),
                              query=self.query if self.query in queries.values() else next(iter(queries.values())))
        finally:
            self._following = False

    def _changed(self, part: str, key: tuple) -> bool:
        if self._shown.get(part) == key:
            return False
        self._shown[part] = key
        return True

    def _query_name(self) -> str:
        cell = self._analysis.grid.cell(self.query)
        return "the class token" if cell is None else f"the patch at row {cell[0]}, column {cell[1]}"

    def _layer_index(self) -> int:
        return self._analysis.records.index(self.layer)

    # --- 1. patches ---

    def _build_patches(self) -> None:
        self._picture_source = _source("image", "dw", "dh", name="attention-picture")
        self._lines_source = _source("xs", "ys")
        self._query_source = _source("left", "right", "top", "bottom", name="attention-query")
        fig = figure(**_outer(PICTURE, PICTURE), x_range=Range1d(0, 1), y_range=plots.pixel_range(1),
                     tools="", toolbar_location=None, title="your input, cut into patches (click one)",
                     x_axis_location="above")
        fig.title.text_font_size = "13px"
        fig.grid.visible = False
        fig.xaxis.axis_label, fig.yaxis.axis_label = "x (px)", "y (px)"
        fig.image_rgba(image="image", x=0, y=0, dw="dw", dh="dh", source=self._picture_source)
        fig.multi_line(xs="xs", ys="ys", line_color="#38bdf8", line_width=1, source=self._lines_source)
        fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_color=QUERY_COLOUR,
                 line_width=3, source=self._query_source)
        fig.on_event(Tap, self._picture_tapped)
        fig.on_event(DoubleTap, self._picture_tapped)
        self._patch_fig = fig

        self._embed_source = _source("image", "dw", "dh", name="attention-embedding")
        self._embed_row_source = _source("left", "right", "top", "bottom")
        self._embed_mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1)
        fig = figure(**_outer(260, PICTURE, colour_bar=True), x_range=Range1d(0, 1), y_range=plots.pixel_range(1),
                     tools="", toolbar_location=None, title="patch embedding", x_axis_location="above")
        fig.title.text_font_size = "13px"
        fig.grid.visible = False
        fig.xaxis.axis_label, fig.yaxis.axis_label = "embedding feature", "patch (row by row)"
        image = fig.image(image="image", x=0, y=0, dw="dw", dh="dh", color_mapper=self._embed_mapper,
                          source=self._embed_source)
        fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_color=QUERY_COLOUR,
                 line_width=2, source=self._embed_row_source)
        fig.add_tools(HoverTool(renderers=[image], tooltips=[("patch", "$y{custom}"), ("feature", "$x{custom}"),
                                                             ("value", "@image{0.000}")],
                                formatters={"$x": self._cell_hover, "$y": self._cell_hover}))
        fig.add_layout(ColorBar(color_mapper=self._embed_mapper, width=10, title="value"), "right")
        self._embed_fig = fig

        self._pos_source = _source("image", "dw", "dh", name="attention-positions")
        self._pos_query_source = _source("left", "right", "top", "bottom")
        self._pos_mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1, nan_color="#00000000")
        fig = figure(**_outer(PICTURE, PICTURE, axes=False, colour_bar=True), x_range=Range1d(0, 1),
                     y_range=plots.pixel_range(1), tools="", toolbar_location=None,
                     title="position embedding similarity")
        _bare(fig)
        image = fig.image(image="image", x=0, y=0, dw="dw", dh="dh", color_mapper=self._pos_mapper,
                          source=self._pos_source)
        fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_color=QUERY_COLOUR,
                 line_width=2, source=self._pos_query_source)
        fig.add_tools(HoverTool(renderers=[image], tooltips=[("cosine similarity", "@image{0.00}")]))
        fig.add_layout(ColorBar(color_mapper=self._pos_mapper, width=10), "right")
        fig.on_event(Tap, self._positions_tapped)
        fig.on_event(DoubleTap, self._positions_tapped)
        self._pos_fig = fig

    def _draw_patches(self) -> None:
        a, inference = self._analysis, self.state.inference
        grid = a.grid
        h, w = inference.view.shape[:2]
        if self._changed("picture", (inference,)):
            self._picture_source.data = dict(image=[plots.picture_to_rgba(inference.view)], dw=[w], dh=[h])
            self._patch_fig.x_range.end, self._patch_fig.y_range.start = w, h
            xs = [[c * grid.patch] * 2 for c in range(1, grid.cols)] + [[0, w]] * (grid.rows - 1)
            ys = [[0, h]] * (grid.cols - 1) + [[r * grid.patch] * 2 for r in range(1, grid.rows)]
            self._lines_source.data = dict(xs=xs, ys=ys)
            self._draw_embedding_and_positions()
            tag_results(inference.model.name, self._picture_source, self._lines_source, self._patch_fig,
                        self._embed_source, self._embed_fig, self._pos_source, self._pos_fig)
        if not self._changed("query-patches", (inference, self.query)):
            return
        cell = grid.cell(self.query)
        empty = dict(left=[], right=[], top=[], bottom=[])
        tag_results(inference.model.name, self._query_source, self._embed_row_source, self._pos_query_source,
                    self._texts["patches"])
        if cell is None:
            for source in (self._query_source, self._embed_row_source, self._pos_query_source):
                source.data = empty
        else:
            r, c = cell
            self._query_source.data = dict(left=[c * grid.patch], right=[(c + 1) * grid.patch],
                                           top=[r * grid.patch], bottom=[(r + 1) * grid.patch])
            i = r * grid.cols + c
            d = self._embed_fig.x_range.end
            self._embed_row_source.data = dict(left=[0], right=[d], top=[i], bottom=[i + 1])
            side = grid.cols + 1
            self._pos_query_source.data = dict(left=[c * side], right=[c * side + grid.cols],
                                               top=[r * (grid.rows + 1)], bottom=[r * (grid.rows + 1) + grid.rows])
        self._texts["patches"].object = self._patches_text(cell)

    def _draw_embedding_and_positions(self) -> None:
        a = self._analysis
        grid = a.grid
        if a.embedding is not None:
            name, embedding = a.embedding
            values = embedding.float().numpy()
            self._embed_source.data = dict(image=[values], dw=[values.shape[1]], dh=[values.shape[0]])
            self._embed_fig.x_range.end, self._embed_fig.y_range.start = values.shape[1], values.shape[0]
            self._embed_mapper.low, self._embed_mapper.high = plots.colour_range(True, plots.max_abs(values))
            self._embed_fig.title.text = f"patch embedding ({name}): one row per patch"
        else:
            self._embed_source.data = dict(image=[], dw=[], dh=[])
            self._embed_fig.title.text = "patch embedding: no convolution makes the patches"
        if a.positions is not None:
            mosaic = _mosaic(a.positions.float().numpy().reshape(grid.rows, grid.cols, grid.rows, grid.cols))
            self._pos_source.data = dict(image=[mosaic], dw=[mosaic.shape[1]], dh=[mosaic.shape[0]])
            self._pos_fig.x_range.end, self._pos_fig.y_range.start = mosaic.shape[1], mosaic.shape[0]
            self._pos_fig.title.text = "position similarity (cosine; one square per patch)"
        else:
            self._pos_source.data = dict(image=[], dw=[], dh=[])
            self._pos_fig.title.text = "no learned position embedding found"

    def _patches_text(self, cell: tuple[int, int] | None) -> str:
        a, grid = self._analysis, self._analysis.grid
        h, w = self.state.inference.view.shape[:2]
        tokens = a.maps.shape[-1]
        cls = "one class token in front, " if grid.first == 1 else f"{grid.first} extra tokens in front, " \
            if grid.first else ""
        dim = a.embedding[1].shape[1] if a.embedding is not None else None
        embed = f" Each patch becomes a vector of {dim} numbers (middle)." if dim else ""
        where = ("The query is the class token, which has no patch: click a patch to pick one." if cell is None else
                 f"The query is the patch at row {cell[0]}, column {cell[1]} (red): its square on the right shows "
                 "the cosine similarity of its position vector to every patch's (1 = same direction).")
        return (f"The {w}×{h} px input is cut into {grid.rows}×{grid.cols} patches of "
                f"{grid.patch:g}×{grid.patch:g} px: "
                f"{cls}{tokens} tokens in all.{embed} {where}")

    # --- 2. the layer × head grid ---

    def _build_grid(self) -> None:
        self._grid_pictures = _source("image", "x", "y", "dw", "dh", name="attention-grid-pictures")
        self._grid_source = _source("image", "x", "y", "dw", "dh", "layer", "head", "max_text",
                                    "left", "right", "top", "bottom", name="attention-grid")
        self._grid_labels = _source("x", "y", "text", "align")
        self._grid_highlight = _source("left", "right", "top", "bottom")
        self._grid_query = _source("left", "right", "top", "bottom")
        fig = figure(width=200, height=200, x_range=Range1d(0, 1), y_range=plots.pixel_range(1), tools="",
                     toolbar_location=None, min_border=0, outline_line_color=None,
                     title="where the query looks: layers × heads (click a patch)")
        _bare(fig)
        fig.quad(left="left", right="right", top="top", bottom="bottom", fill_color="#fde68a", line_color="#b45309",
                 line_width=2, source=self._grid_highlight)
        fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=self._grid_pictures)
        fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", global_alpha=OVERLAY_ALPHA,
                       source=self._grid_source)
        fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_color=QUERY_COLOUR,
                 line_width=1.5, source=self._grid_query)
        fig.text(x="x", y="y", text="text", text_align="align", text_baseline="middle", text_font_size="11px",
                 text_color="#334155", source=self._grid_labels)
        hit = fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_alpha=0,
                       source=self._grid_source)
        fig.add_tools(HoverTool(renderers=[hit], tooltips=[("layer", "@layer"), ("head", "@head"),
                                                           ("largest weight", "@max_text")]))
        fig.on_event(Tap, self._grid_tapped)
        fig.on_event(DoubleTap, self._grid_tapped)
        self._grid_fig = fig
        self._cell = CELL_MAX
        self._margin = (70, 24)  # left (row labels), top (column labels) in px

    def _resize(self, a: am.Analysis) -> None:
        """Figure sizes that depend on the model: the grid's cells, the step matrices."""
        layers, heads = a.maps.shape[:2]
        tokens, d_model = a.maps.shape[-1], self._step_shape()
        if not self._changed("size", (layers, heads, tokens, d_model)):
            return
        self._cell = max(40, min(CELL_MAX, 600 // (heads + 1)))
        left, top = self._margin
        width, height = left + (heads + 1) * self._cell, top + layers * self._cell
        self._grid_fig.width, self._grid_fig.height = width, height + 30
        self._grid_fig.x_range.end, self._grid_fig.y_range.start = width, height
        d = d_model // heads
        px = min(10.0, max(2.0, STEP_SIDE / tokens))
        for m in STEPS:
            cols = {"feature": d_model, "feature of the head": d, "key token": tokens}[m.columns]
            fig = self._step_figs[m.key]
            fig.update(**_outer(int(min(2.2 * STEP_SIDE, max(40, cols * px))), int(tokens * px)))
            fig.x_range.end, fig.y_range.start = cols, tokens
            fig.title.text = m.title.format(T=tokens, D=d_model, d=d)
        self._row_fig.x_range.end = tokens - 0.5

    def _step_shape(self) -> int:
        """D, the width of the residual stream, from the first attention layer's input."""
        return int(self.state.inference.trace[self._analysis.records[0]].output.shape[-1])

    def _cell_geometry(self, layer: int, col: int) -> tuple[float, float, float, float, float]:
        """(left, top, picture x, picture y, px per input pixel) of the grid cell of (layer, column)."""
        h, w = self.state.inference.view.shape[:2]
        left, top = self._margin[0] + col * self._cell, self._margin[1] + layer * self._cell
        scale = (self._cell - 8) / max(h, w)
        return left, top, left + 4, top + 4, scale

    def _draw_grid(self) -> None:
        a, inference = self._analysis, self.state.inference
        layers, heads = a.maps.shape[:2]
        h, w = inference.view.shape[:2]
        layer = self._layer_index()
        if self._changed("grid-pictures", (inference, self._cell)):
            picture = plots.picture_to_rgba(inference.view)
            cells = [self._cell_geometry(ly, c) for ly in range(layers) for c in range(heads + 1)]
            self._grid_pictures.data = dict(image=[picture] * len(cells), x=[g[2] for g in cells],
                                            y=[g[3] for g in cells], dw=[w * g[4] for g in cells],
                                            dh=[h * g[4] for g in cells])
            labels = ([(self._margin[0] + (c + 0.5) * self._cell, self._margin[1] / 2,
                        f"head {c}" if c < heads else "mean", "center") for c in range(heads + 1)]
                      + [(4, self._margin[1] + (ly + 0.5) * self._cell, f"layer {ly}", "left") for ly in range(layers)])
            self._grid_labels.data = dict(zip(("x", "y", "text", "align"), map(list, zip(*labels, strict=True)),
                                              strict=True))
            tag_results(inference.model.name, self._grid_pictures, self._grid_labels)
        if self._changed("grid-maps", (inference, self._cell, self.query)):
            per_head = am.query_maps(a.maps, self.query, a.grid)  # (L, H, rows, cols)
            maps = np.concatenate([per_head.numpy(), per_head.mean(dim=1, keepdim=True).numpy()], axis=1)
            cols: dict[str, list] = {k: [] for k in self._grid_source.data}
            for ly in range(layers):
                for c in range(heads + 1):
                    left, top, x, y, scale = self._cell_geometry(ly, c)
                    values = maps[ly, c]
                    row = dict(image=plots.to_rgba(values, signed=False), x=x, y=y, dw=w * scale, dh=h * scale,
                               layer=a.records[ly], head=str(c) if c < heads else "mean of all heads",
                               max_text=plots.format_value(values.max()), left=left, right=left + self._cell,
                               top=top, bottom=top + self._cell)
                    for k, v in row.items():
                        cols[k].append(v)
            self._grid_source.data = cols
            cell = a.grid.cell(self.query)
            quads: dict[str, list] = {k: [] for k in ("left", "right", "top", "bottom")}
            if cell is not None:
                r, c_ = cell
                for ly in range(layers):
                    for c in range(heads + 1):
                        _, _, x, y, scale = self._cell_geometry(ly, c)
                        p = a.grid.patch * scale
                        for k, v in zip(quads, (x + c_ * p, x + (c_ + 1) * p, y + r * p, y + (r + 1) * p), strict=True):
                            quads[k].append(v)
            self._grid_query.data = quads
            self._grid_fig.title.text = f"where {self._query_name()} looks: layers × heads (click a patch)"
            tag_results(inference.model.name, self._grid_source, self._grid_query, self._grid_fig)
        if self._changed("grid-highlight", (inference, self._cell, layer, self.head)):
            left, top, *_ = self._cell_geometry(layer, self.head)
            self._grid_highlight.data = dict(left=[left + 1], right=[left + self._cell - 1], top=[top + 1],
                                             bottom=[top + self._cell - 1])
            tag_results(inference.model.name, self._grid_highlight)
        tag_results(inference.model.name, self._texts["grid"])
        self._texts["grid"].object = (
            f"Each picture is one head of one layer: the weights {self._query_name()} gives the {a.grid.n} patches "
            f"(row {self.query} of that head's attention matrix), drawn over your input, from dark purple (0) to "
            "yellow (that picture's largest weight). The last column averages the heads. Click a patch in any "
            "picture to make it the query; the highlighted picture is enlarged on the right and computed step by "
            "step below.")

    def _picture_tapped(self, event: Tap | DoubleTap) -> None:
        if event.x is not None and event.y is not None and self._analysis is not None:
            patch = self._analysis.grid.patch
            self.select_patch(math.floor(event.y / patch), math.floor(event.x / patch))

    def _positions_tapped(self, event: Tap | DoubleTap) -> None:
        if event.x is not None and event.y is not None and self._analysis is not None:
            grid = self._analysis.grid
            self.select_patch(math.floor(event.y / (grid.rows + 1)), math.floor(event.x / (grid.cols + 1)))

    def _grid_tapped(self, event: Tap | DoubleTap) -> None:
        a = self._analysis
        if event.x is None or event.y is None or a is None:
            return
        layers, heads = a.maps.shape[:2]
        col = math.floor((event.x - self._margin[0]) / self._cell)
        layer = math.floor((event.y - self._margin[1]) / self._cell)
        if not (0 <= layer < layers and 0 <= col <= heads):
            return
        _, _, x, y, scale = self._cell_geometry(layer, col)
        patch_px = a.grid.patch * scale
        row, column = math.floor((event.y - y) / patch_px), math.floor((event.x - x) / patch_px)
        update: dict[str, object] = {"layer": a.records[layer]}
        if col < heads:
            update["head"] = col
        if 0 <= row < a.grid.rows and 0 <= column < a.grid.cols:
            update["query"] = a.grid.token(row, column)
        self.param.update(**update)

    # --- the selected head, large ---

    def _build_big(self) -> None:
        self._big_source = _source("image", "dw", "dh", name="attention-map")
        self._big_mapper = LinearColorMapper(palette=list(plots.SEQUENTIAL), low=0, high=1)
        fig = figure(**_outer(PICTURE, PICTURE, colour_bar=True), x_range=Range1d(0, 1), y_range=plots.pixel_range(1),
                     tools="", toolbar_location=None, title="attention", x_axis_location="above")
        fig.title.text_font_size = "13px"
        fig.grid.visible = False
        fig.xaxis.axis_label, fig.yaxis.axis_label = "x (px)", "y (px)"
        fig.image_rgba(image="image", x=0, y=0, dw="dw", dh="dh", source=self._picture_source)
        image = fig.image(image="image", x=0, y=0, dw="dw", dh="dh", color_mapper=self._big_mapper,
                          global_alpha=OVERLAY_ALPHA, source=self._big_source)
        fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_color=QUERY_COLOUR,
                 line_width=3, source=self._query_source)
        fig.add_tools(HoverTool(renderers=[image], tooltips=[("attention weight", "@image{0.0000}")]))
        fig.add_layout(ColorBar(color_mapper=self._big_mapper, width=10, title="attention weight"), "right")
        fig.on_event(Tap, self._picture_tapped)
        fig.on_event(DoubleTap, self._picture_tapped)
        self._big_fig = fig

    def _draw_big(self) -> None:
        a, inference = self._analysis, self.state.inference
        layer = self._layer_index()
        if not self._changed("big", (inference, layer, self.head, self.query)):
            return
        h, w = inference.view.shape[:2]
        values = am.query_maps(a.maps, self.query, a.grid)[layer, self.head].numpy()
        self._big_source.data = dict(image=[values.astype(np.float32)], dw=[w], dh=[h])
        self._big_fig.x_range.end, self._big_fig.y_range.start = w, h
        self._big_mapper.high = plots.max_abs(values)
        self._big_fig.title.text = f"{self.layer}, head {self.head}"
        tag_results(inference.model.name, self._big_source, self._big_fig, self._texts["big"])
        to_tokens = a.maps[layer, self.head, self.query]
        own = float(to_tokens[self.query])
        extra = f", {plots.format_value(float(to_tokens[:a.grid.first].sum()))} to the class token" \
            if a.grid.first and self.query >= a.grid.first else ""
        self._texts["big"].object = (
            f"Head {self.head} of {self.layer}: where {self._query_name()} looks. Its weights over all "
            f"{a.maps.shape[-1]} tokens sum to 1; the largest patch weight is {plots.format_value(values.max())}, "
            f"{plots.format_value(own)} stays on the query itself{extra}.")

    # --- 3. one head, step by step ---

    def _build_steps(self) -> None:
        self._step_sources: dict[str, ColumnDataSource] = {}
        self._step_mappers: dict[str, LinearColorMapper] = {}
        self._step_figs: dict[str, figure] = {}
        self._step_row = _source("left", "right", "top", "bottom", name="attention-step-row")
        for m in STEPS:
            source = _source("image", "dw", "dh", name=f"attention-step-{m.key}")
            mapper = LinearColorMapper(palette=list(plots.palette(m.signed)), low=-1 if m.signed else 0, high=1)
            fig = figure(**_outer(120, 120), x_range=Range1d(0, 1), y_range=plots.pixel_range(1),
                         tools="", toolbar_location=None, title=m.title, x_axis_location="above", min_border=4)
            fig.title.text_font_size = "12px"
            fig.grid.visible = False
            fig.xaxis.axis_label, fig.yaxis.axis_label = m.columns, "token"
            fig.axis.axis_label_text_font_size = "10px"
            fig.axis.major_label_text_font_size = "9px"
            image = fig.image(image="image", x=0, y=0, dw="dw", dh="dh", color_mapper=mapper, source=source)
            if m.key in QUERY_ROWS:
                fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_color=QUERY_COLOUR,
                         line_width=1.5, source=self._step_row)
            tooltips = [("token (row)", "$y{custom}"), (m.columns, "$x{custom}"), ("value", "@image{0.0000}")]
            fig.add_tools(HoverTool(renderers=[image], tooltips=tooltips,
                                    formatters={"$x": self._cell_hover, "$y": self._cell_hover}))
            self._step_sources[m.key], self._step_mappers[m.key], self._step_figs[m.key] = source, mapper, fig

        self._row_source = _source("token", "label", "probs", "own", name="attention-softmax-row")
        fig = figure(height=220, width=560, x_range=Range1d(-0.5, 1), y_range=Range1d(0, 1.05), tools="",
                     toolbar_location=None, title="the query's row of P")
        fig.title.text_font_size = "13px"
        fig.xaxis.axis_label, fig.yaxis.axis_label = "key token (0 = class token)", "attention weight"
        fig.xgrid.visible = False
        bars = fig.vbar(x="token", top="probs", width=0.8, fill_color=plots.SEQUENTIAL[90], line_color=None,
                        source=self._row_source, legend_label="at temperature τ")
        fig.scatter(x="token", y="own", size=7, marker="circle", fill_color="white", line_color="#1e293b",
                    source=self._row_source, legend_label="τ = 1 (the model's own)")
        fig.add_tools(HoverTool(renderers=[bars], tooltips=[("key token", "@label"), ("weight at τ", "@probs{0.0000}"),
                                                            ("weight at τ = 1", "@own{0.0000}")]))
        fig.legend.location = "top_right"
        fig.legend.label_text_font_size = "10px"
        self._row_fig = fig

    def _draw_step(self) -> None:
        a, inference = self._analysis, self.state.inference
        layer = self._layer_index()
        key = (inference, layer, self.head, self.temperature)
        if self._changed("own-step", key[:3]):  # the head at τ = 1; a temperature change reuses its Q, K, V
            block, x = am.block_and_input(inference.model.module, inference.trace, self.layer)
            self._own_step = am.head_step(block, x, self.head)
            self._gap = am.largest_difference(self._own_step.probs, a.maps[layer, self.head])
        if self._changed("step", key):
            step = self._step = am.with_temperature(self._own_step, self.temperature)
            for m in STEPS:
                values = getattr(step, m.key).float().numpy()
                self._step_sources[m.key].data = dict(image=[values], dw=[values.shape[1]], dh=[values.shape[0]])
                low, high = plots.colour_range(m.signed, plots.max_abs(values))
                self._step_mappers[m.key].update(low=low, high=high)
            tag_results(inference.model.name, *self._step_sources.values(), *self._step_figs.values())
        if not self._changed("step-row", key + (self.query,)):
            return
        step, q, tokens = self._step, self.query, a.maps.shape[-1]
        own = a.maps[layer, self.head, q]
        self._step_row.data = dict(left=[0], right=[10_000], top=[q], bottom=[q + 1])
        labels = [("class" if i < a.grid.first else str(i)) for i in range(tokens)]
        self._row_source.data = dict(token=list(range(tokens)), label=labels, probs=step.probs[q].tolist(),
                                     own=own.tolist())
        self._row_fig.title.text = f"row {q} of P ({self._query_name()}): how its attention is split over the tokens"
        tag_results(inference.model.name, self._step_row, self._row_source, self._row_fig, self._texts["step"])
        d = step.q.shape[1]
        self._texts["step"].object = (
            f"Head {self.head} of {self.layer}, computed from the block's input x: d = {d} features per head, so the "
            f"scores are divided by √{d} = {plots.format_value(math.sqrt(d))}, then by the temperature τ = "
            f"{self.temperature:g}. Each row of P is a softmax and sums to 1; the red outline follows the query's "
            f"row (token {q}) from Q to the output. At τ = 1 these probabilities are the model's own: they differ "
            f"from the traced ones by at most {self._gap:.1e}. Hover any cell for its value. Matrices are coloured "
            "to their own largest |value| (blue negative, white 0, red positive); P from 0 (dark purple) to its "
            "largest weight (yellow).")

    # --- 4. rollout ---

    def _build_rollout(self) -> None:
        self._rollout_pictures = _source("image", "x", "y", "dw", "dh")
        self._rollout_source = _source("image", "x", "y", "dw", "dh", "what", "max_text", "left", "right", "top",
                                       "bottom", name="attention-rollout")
        self._rollout_labels = _source("x", "text")
        side = PICTURE
        fig = figure(width=2 * side + 40, height=side + 60, x_range=Range1d(0, 2 * side + 40),
                     y_range=plots.pixel_range(side + 30), tools="", toolbar_location=None, min_border=0,
                     outline_line_color=None, title="rollout")
        _bare(fig)
        fig.text(x="x", y=12, text="text", text_align="center", text_baseline="middle", text_font_size="12px",
                 text_color="#334155", source=self._rollout_labels)
        fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=self._rollout_pictures)
        fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", global_alpha=OVERLAY_ALPHA,
                       source=self._rollout_source)
        hit = fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_alpha=0,
                       source=self._rollout_source)
        fig.add_tools(HoverTool(renderers=[hit], tooltips=[("map", "@what"), ("largest weight", "@max_text")]))
        self._rollout_fig = fig

    def _draw_rollout(self) -> None:
        a, inference = self._analysis, self.state.inference
        if not self._changed("rollout", (inference, self.query, self.head_fusion, self.discard_ratio)):
            return
        grid, q = a.grid, self.query
        rolled = am.rollout(a.maps, self.head_fusion, self.discard_ratio)  # (T, T)
        patches = slice(grid.first, grid.first + grid.n)
        maps = (rolled[q, patches].reshape(grid.rows, grid.cols).numpy(),
                a.maps[-1, :, q, patches].mean(dim=0).reshape(grid.rows, grid.cols).numpy())
        whats = (f"rollout over {len(a.records)} layers, heads fused by {self.head_fusion}, "
                 f"{self.discard_ratio:.0%} discarded", f"last layer only ({a.records[-1]}), mean of the heads")
        h, w = inference.view.shape[:2]
        scale = (PICTURE - 10) / max(h, w)
        xs = (5, PICTURE + 35)
        if self._changed("rollout-pictures", (inference,)):
            self._rollout_pictures.data = dict(image=[plots.picture_to_rgba(inference.view)] * 2, x=list(xs),
                                               y=[25, 25], dw=[w * scale] * 2, dh=[h * scale] * 2)
            self._rollout_labels.data = dict(x=[x + w * scale / 2 for x in xs],
                                             text=["rollout: all layers", "last layer alone"])
            tag_results(inference.model.name, self._rollout_pictures, self._rollout_labels)
        self._rollout_source.data = dict(
            image=[plots.to_rgba(m, signed=False) for m in maps], x=list(xs), y=[25, 25], dw=[w * scale] * 2,
            dh=[h * scale] * 2, what=list(whats), max_text=[plots.format_value(m.max()) for m in maps],
            left=list(xs), right=[x + w * scale for x in xs], top=[25, 25], bottom=[25 + h * scale] * 2)
        self._rollout_fig.title.text = f"what reaches {self._query_name()}"
        tag_results(inference.model.name, self._rollout_source, self._rollout_fig, self._texts["rollout"])
        to_query = float(rolled[q, :grid.first].sum()) if grid.first else 0.0
        self._texts["rollout"].object = (
            f"Left: attention rollout for {self._query_name()}, {whats[0]}. Each layer's heads are fused into one "
            "matrix, the identity is added for the residual connection (a token keeps itself), each row is "
            "rescaled to sum to 1, and the layers are multiplied from first to last. Right: the last layer's "
            f"attention alone. Both are coloured from 0 to their own largest value. The patches receive "
            f"{plots.format_value(float(rolled[q, patches].sum()))} of the rollout"
            + (f", the class token {plots.format_value(to_query)}." if grid.first else "."))

    # --- 5. attention distance ---

    def _build_distance(self) -> None:
        self._distance_source = _source("x", "distance", "layer", "head", "label", "text", name="attention-distance")
        self._distance_mean = _source("x", "distance")
        self._distance_selected = _source("x", "distance")
        fig = figure(width=560, height=300, x_range=Range1d(-0.5, 1), y_range=Range1d(0, 1), tools="",
                     toolbar_location=None, title="mean attention distance of every head")
        fig.title.text_font_size = "13px"
        fig.xaxis.axis_label, fig.yaxis.axis_label = "layer", "mean attention distance (px)"
        fig.xaxis.ticker.min_interval = 1
        fig.xaxis.minor_tick_line_color = None
        fig.line(x="x", y="distance", line_color="#94a3b8", line_width=2, source=self._distance_mean,
                 legend_label="mean over heads")
        points = fig.scatter(x="x", y="distance", size=11, fill_color=plots.SEQUENTIAL[60], line_color="white",
                             source=self._distance_source, legend_label="one head")
        fig.text(x="x", y="distance", text="text", text_align="center", text_baseline="middle", text_font_size="8px",
                 text_color="white", source=self._distance_source)
        fig.scatter(x="x", y="distance", size=17, fill_alpha=0, line_color=QUERY_COLOUR, line_width=2,
                    source=self._distance_selected, legend_label="selected head")
        self._uniform_line = fig.line(x=[-0.5, 100], y=[0, 0], line_dash="dashed", line_color="#475569",
                                      legend_label="attention spread equally")
        fig.add_tools(HoverTool(renderers=[points], tooltips=[("layer", "@layer"), ("head", "@head"),
                                                              ("distance", "@label")]))
        fig.legend.location = "bottom_right"
        fig.legend.label_text_font_size = "10px"
        self._distance_fig = fig

    def _draw_distance(self) -> None:
        a, inference = self._analysis, self.state.inference
        layers, heads = a.maps.shape[:2]
        spread = 0.5 / max(heads, 1)  # heads of one layer side by side around the layer's tick
        offsets = [(h - (heads - 1) / 2) * spread for h in range(heads)]
        if self._changed("distance", (inference,)):
            dist = a.distance_px.numpy()
            self._distance_source.data = dict(
                x=[ly + offsets[h] for ly in range(layers) for h in range(heads)],
                distance=dist.flatten().tolist(), layer=[a.records[ly] for ly in range(layers) for _ in range(heads)],
                head=[h for _ in range(layers) for h in range(heads)],
                label=[f"{v:.1f} px" for v in dist.flatten()],
                text=[str(h) for _ in range(layers) for h in range(heads)])
            self._distance_mean.data = dict(x=list(range(layers)), distance=dist.mean(axis=1).tolist())
            top = max(float(dist.max()), a.uniform_distance_px) * 1.15
            self._distance_fig.x_range.end = layers - 0.5
            self._distance_fig.y_range.end = top
            self._uniform_line.data_source.data = dict(x=[-0.5, layers - 0.5], y=[a.uniform_distance_px] * 2)
            tag_results(inference.model.name, self._distance_source, self._distance_mean,
                        self._uniform_line.data_source, self._distance_fig, self._texts["distance"])
            local = np.unravel_index(dist.argmin(), dist.shape)
            wide = np.unravel_index(dist.argmax(), dist.shape)
            self._texts["distance"].object = (
                f"For every head (a dot, numbered by head), the distance from a query patch to the patches it "
                f"attends to, weighted by attention and averaged over the {a.grid.n} query patches (patch centres "
                f"are {a.grid.patch:g} px apart; the class token has no position and is left out). The most local "
                f"head is head {local[1]} of layer {local[0]} ({dist[local]:.1f} px), the most global head "
                f"{wide[1]} of layer {wide[0]} ({dist[wide]:.1f} px); a head spreading its attention equally would "
                f"score {a.uniform_distance_px:.1f} px (dashed).")
        layer = self._layer_index()
        if self._changed("distance-selected", (inference, layer, self.head)):
            self._distance_selected.data = dict(x=[layer + offsets[self.head]],
                                                distance=[float(a.distance_px[layer, self.head])])
            tag_results(inference.model.name, self._distance_selected)


def _attention_record_for(layer: str, records: tuple[str, ...]) -> str | None:
    """The attention record the state's layer names, or the one of its block ('blocks.2.mlp.0' -> 'blocks.2.attn')."""
    if layer in records:
        return layer
    for record in records:
        block = record.rpartition(".")[0]
        if block and layer.startswith(block + "."):
            return record
    return None


def _mosaic(blocks: np.ndarray) -> np.ndarray:
    """(R, C, r, c) small maps -> one (R·(r+1) - 1, C·(c+1) - 1) picture, NaN (transparent) between the maps."""
    rows, cols, r, c = blocks.shape
    out = np.full((rows * (r + 1) - 1, cols * (c + 1) - 1), np.nan, dtype=np.float32)
    for i in range(rows):
        for j in range(cols):
            out[i * (r + 1):i * (r + 1) + r, j * (c + 1):j * (c + 1) + c] = blocks[i, j]
    return out

"""Receptive field: click a unit of a layer's output; see which input pixels it can see and which it uses.

Left, the chosen channel of the layer's output for the current input (click a unit). Middle, the input
with the unit's theoretical receptive field as a rectangle (receptive.theoretical_field, the part on
the image). Right, the effective receptive field Σ_c |∂ unit / ∂ x_c|
(receptive.effective_receptive_field) with the same rectangle. Below, the receptive-field size of every
conv and pooling layer against depth, the current layer marked (click a point to pick that layer).

Performance (a new Bokeh model costs far more to send and lay out than new data in one already on the
page; docs/performance.md): the four Bokeh figures are built once; every change replaces the
data of named ColumnDataSources ("convolution-rf-*") inside one `one_update()`.
"""

from __future__ import annotations

import math

import panel as pn
import param
from bokeh.events import DoubleTap, Tap
from bokeh.models import ColorBar, HoverTool, LinearColorMapper, Range1d, Span
from bokeh.plotting import figure

from explorer.errors import InputError
from explorer.lessons import plots
from explorer.lessons.convolution import receptive
from explorer.session.in_step import keep_in_step
from explorer.session.layer_lesson import OneLayerLesson
from explorer.session.narrative import Step
from explorer.session.state import follows, one_update
from explorer.session.tags import tag_results

FRAME = 240          # side of the three pictures (px): the three fit beside the sidebar at 1440 px, one on a phone
BOX_COLOUR = "#d97706"
MARK_COLOUR = "#dc2626"


def _picture_figure(title: str, x_label: str, y_label: str) -> figure:
    fig = figure(frame_width=FRAME, frame_height=FRAME, **plots.NATURAL_SIZE, x_range=Range1d(0, 1),
                 y_range=plots.pixel_range(1),
                 tools="", toolbar_location=None, title=title, x_axis_location="above")
    fig.title.text_font_size = "13px"
    fig.grid.visible = False
    fig.xaxis.axis_label, fig.yaxis.axis_label = x_label, y_label
    return fig


class ReceptiveFieldPanel(OneLayerLesson):
    """Which input pixels one unit of a conv or pooling layer depends on, in theory and in fact."""

    row = param.Integer(default=0, bounds=(0, None), doc="Row of the unit on the layer's output map.")
    column = param.Integer(default=0, bounds=(0, None), doc="Column of the unit on the layer's output map.")

    tour_title = "Receptive fields, step by step"

    def __init__(self, model: str | None = None, **params):
        super().__init__(model=model, **params)
        self._fields: tuple[receptive.LayerField, ...] = ()
        self._build_figures()
        self._summary = pn.pane.Markdown("", sizing_mode="stretch_width", css_classes=["rf-summary"])
        self.channel = 0  # the channel shown: the session's, within this layer's channels
        self.channel_input = keep_in_step(pn.widgets.IntInput(label="Channel", start=0, value=0, width=100))
        self.channel_input.param.watch(self._channel_picked, "value")
        self._row_input = pn.widgets.IntInput.from_param(self.param.row, name="Unit row", width=100)
        self._column_input = pn.widgets.IntInput.from_param(self.param.column, name="Unit column", width=100)
        self._follow_state()
        self._layout = pn.Column(
            pn.Row(self.layer_menu, self.channel_input, self._row_input, self._column_input,
                   stylesheets=[plots.WRAPS]),
            self.errors,
            pn.Row(pn.pane.Bokeh(self._map_fig), pn.pane.Bokeh(self._input_fig), pn.pane.Bokeh(self._erf_fig),
                   css_classes=["rf-figures"], stylesheets=[plots.WRAPS]),
            self._summary,
            pn.pane.Bokeh(self._depth_fig),
            sizing_mode="stretch_width",
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    def steps(self) -> tuple[Step, ...]:
        return narrative_steps()

    # --- following the session ---

    @follows("state.inference")
    def _follow_state(self) -> None:
        inference = self.state.inference
        try:
            self._fields = receptive.receptive_fields(inference.model, tuple(inference.x.shape[1:]))
        except InputError as e:
            self._fields = ()
            self._show_error(str(e))
        names = [f.name for f in self._fields]
        with one_update():
            keep = self._choose_layer(names)  # a new input keeps the layer and unit
            if self.layer is None:
                self._show_nothing()
                return
            self._show_input()
            self._show_depth()
            if keep:
                self._show_map()
                self._show_unit()
            else:
                self._show_layer()

    def select_unit(self, row: int, column: int) -> None:
        self.param.update(row=row, column=column)

    def _map_tapped(self, event: Tap | DoubleTap) -> None:
        f = self._field()
        if f is None or event.x is None or event.y is None:
            return
        row, column = math.floor(event.y), math.floor(event.x)
        if 0 <= row < f.output_hw[0] and 0 <= column < f.output_hw[1]:
            self.select_unit(row, column)

    def _depth_tapped(self, event: Tap | DoubleTap) -> None:
        if event.x is None or not self._fields:
            return
        depth = min(max(round(event.x), 1), len(self._fields))
        self.state.layer = self._fields[depth - 1].name

    # --- updates: data only, inside hold() ---

    def _show_layer(self) -> None:
        f = self._field()
        if f is None:
            return
        # The centre unit of a new layer: the one whose field is most inside the image. Row and column get no upper
        # bound: the browser would clamp the old unit to a smaller map's end and send that back after the centre
        # set here. A unit off the map gets the InputError's message.
        with one_update():
            self._show_channel()
            self.param.update(row=f.output_hw[0] // 2, column=f.output_hw[1] // 2)
            self._show_map()  # when the update above changed nothing, its watcher did not draw
            self._show_unit()

    def _show_channel(self) -> None:
        """The session's channel, within the shown layer's channels (the state keeps what the student chose)."""
        channels = self.state.inference.trace[self.layer].output.shape[1]
        self.channel = min(self.state.channel, channels - 1)
        self.channel_input.param.update(end=channels - 1, value=self.channel)

    def _channel_picked(self, event) -> None:
        if event.new is not None and event.new != self.channel:
            self.state.channel = event.new

    @follows("state.channel")
    def _follow_channel(self) -> None:
        if self._field() is not None and self._model is self.state.inference.model:
            with one_update():
                self._show_channel()
                self._show_map()
                self._show_unit()

    @param.depends("row", "column", watch=True)
    def _unit_changed(self) -> None:
        with one_update():
            self._show_map()
            self._show_unit()

    def _field(self) -> receptive.LayerField | None:
        return next((f for f in self._fields if f.name == self.layer), None)

    def _show_error(self, message: str) -> None:
        if message:
            self.show_error(message)
        else:
            self.clear_error()

    def _model_name(self) -> str:
        return self.state.inference.model.name

    def _show_nothing(self) -> None:
        model = self._model_name()
        with one_update():
            self._show_input()
            for source in (self._map_source, self._mark_source, self._box_source, self._erf_source,
                           self._depth_source, self._current_source):
                source.data = {k: [] for k in source.data}
            self._summary.object = (f"**{model}** has no convolution or pooling layer whose units see a "
                                    "bounded patch of the input.")
            tag_results(model, self._map_source, self._mark_source, self._box_source, self._erf_source,
                        self._depth_source, self._current_source, self._map_fig, self._erf_fig, self._depth_fig,
                        self._summary)

    def _show_input(self) -> None:
        view = self.state.inference.view
        h, w = view.shape[:2]
        self._input_source.data = dict(image=[plots.picture_to_rgba(view)], dw=[w], dh=[h])
        self._input_fig.x_range.end, self._input_fig.y_range.start = w, h
        tag_results(self._model_name(), self._input_source, self._input_fig)

    def _show_depth(self) -> None:
        side = self.state.inference.x.shape[-1]
        self._depth_source.data = dict(
            depth=[f.depth for f in self._fields], size=[f.size[0] for f in self._fields],
            name=[f.name for f in self._fields], kind=[f.kind for f in self._fields],
            jump=[f.jump[0] for f in self._fields])
        self._image_span.location = side
        self._depth_fig.x_range.end = len(self._fields) + 0.5
        self._depth_fig.y_range.end = max([side] + [f.size[0] for f in self._fields]) * 1.08
        tag_results(self._model_name(), self._depth_source, self._depth_fig)

    def _show_map(self) -> None:
        f = self._field()
        if f is None or not self.changed("map", (self.state.inference, f, self.channel, self.row, self.column)):
            return
        values = self.state.inference.trace[f.name].output[0, self.channel].float().numpy()
        h, w = values.shape
        signed = bool(values.min() < 0)
        self._map_source.data = dict(image=[plots.to_rgba(values, signed)], dw=[w], dh=[h])
        plots.set_colour_scale(self._map_bar, signed, plots.max_abs(values))
        self._map_fig.x_range.end, self._map_fig.y_range.start = w, h
        self._map_fig.title.text = f"{f.name}, channel {self.channel}: click a unit"
        self._mark_source.data = dict(left=[self.column], right=[self.column + 1], top=[self.row],
                                      bottom=[self.row + 1])
        self._current_source.data = dict(depth=[f.depth], size=[f.size[0]], name=[f.name], kind=[f.kind],
                                         jump=[f.jump[0]])
        tag_results(self._model_name(), self._map_source, self._mark_source, self._map_fig, self._current_source)

    def _show_unit(self) -> None:
        f = self._field()
        inference, fields = self.state.inference, self._fields
        channel, row, column = self.channel, self.row, self.column
        key = (inference, f, channel, row, column)
        if f is None or not self.changed("unit", key):
            return

        def derive() -> tuple | InputError:
            """The unit's fields: its gradient is a backward pass, slow on MobileNetV2 (off the event loop)."""
            try:
                box = receptive.theoretical_field(fields, f.name, row, column)
                heat = receptive.effective_receptive_field(inference.model, inference.x, f.name, channel, row, column)
            except InputError as e:  # a unit off the map: said as text
                return e
            return box, heat, receptive.effective_side(heat, box), plots.max_abs(heat.numpy())

        self.slow("unit").request(key, derive, lambda result: self._show_fields(f, row, column, result))

    def _show_fields(self, f: receptive.LayerField, row: int, column: int, result: tuple | InputError) -> None:
        inference = self.state.inference
        tag_results(inference.model.name, self._box_source, self._erf_source, self._erf_fig, self._summary)
        if isinstance(result, InputError):  # no field to draw: nothing of the unit before stays
            self._show_error(str(result))
            for source in (self._box_source, self._erf_source):
                source.data = {k: [] for k in source.data}
            self._summary.object = ""
            return
        self._show_error("")
        box, heat, half, limit = result
        height, width = inference.view.shape[:2]
        on_image = box.clipped(height, width)
        self._box_source.data = dict(left=[on_image.left], right=[on_image.right], top=[on_image.top],
                                     bottom=[on_image.bottom])
        self._erf_source.data = dict(image=[plots.to_rgba(heat.numpy(), signed=False, limit=limit)], dw=[width],
                                     dh=[height])
        self._erf_mapper.high = limit
        left, top, side = zoom(on_image, height, width)
        self._erf_fig.x_range.update(start=left, end=left + side)
        self._erf_fig.y_range.update(start=top + side, end=top)  # pointing down, as image rows do
        self._summary.object = (
            f"Unit (row {row}, column {column}) of **{f.name}** ({f.module_type}, depth {f.depth}, "
            f"output map {f.output_hw[0]}×{f.output_hw[1]}) can see input rows {box.top}…{box.bottom - 1} and "
            f"columns {box.left}…{box.right - 1}: a **{box.height}×{box.width} px** theoretical receptive field"
            + ("" if on_image == box else f", of which {on_image.height}×{on_image.width} px lie on the image (the "
               "rest is padding)")
            + f". Neighbouring units are **{f.jump[0]} px** apart on the input (the product of the strides so far). "
            + (f"Effective field: half of the gradient comes from the central **{half}×{half} px**."
               if half else "Effective field: the gradient is zero everywhere (a ReLU on the way is off for this "
               "input; try another unit).")
            + self._note())

    def _note(self) -> str:
        if self.state.inference.trace.of_kind("attention"):
            return (" In a ViT only the patch embedding has a receptive field: the attention layers after it let "
                    "every token look at every patch, so their units see the whole image.")
        return ""

    # --- figures, built once ---

    def _build_figures(self) -> None:
        self._map_source = plots.source("image", "dw", "dh", name="convolution-rf-map")
        self._mark_source = plots.source("left", "right", "top", "bottom", name="convolution-rf-unit")
        self._map_fig = _picture_figure("layer output: click a unit", "column (unit)", "row (unit)")
        self._map_fig.image_rgba(image="image", x=0, y=0, dw="dw", dh="dh", source=self._map_source)
        self._map_bar = plots.colour_bar(LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1),
                                         "output value")
        self._map_fig.add_layout(self._map_bar, "right")
        self._map_fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0,
                           line_color=MARK_COLOUR, line_width=2.5, source=self._mark_source)
        self._map_fig.on_event(Tap, self._map_tapped)
        self._map_fig.on_event(DoubleTap, self._map_tapped)  # two quick clicks are two units, not a zoom

        self._input_source = plots.source("image", "dw", "dh", name="convolution-rf-input")
        self._box_source = plots.source("left", "right", "top", "bottom", name="convolution-rf-box")
        self._input_fig = _picture_figure("theoretical field on the input", "x (px)", "y (px)")
        self._input_fig.image_rgba(image="image", x=0, y=0, dw="dw", dh="dh", source=self._input_source)

        self._erf_source = plots.source("image", "dw", "dh", name="convolution-rf-erf")
        self._erf_mapper = LinearColorMapper(palette=list(plots.SEQUENTIAL), low=0, high=1)
        self._erf_fig = _picture_figure("effective field Σ|∂unit/∂pixel|,\nzoomed to the rectangle", "x (px)",
                                        "y (px)")
        self._erf_fig.image_rgba(image="image", x=0, y=0, dw="dw", dh="dh", source=self._erf_source)
        self._erf_fig.add_layout(ColorBar(color_mapper=self._erf_mapper, title="|gradient|", width=10), "right")
        for fig in (self._input_fig, self._erf_fig):
            fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_color=BOX_COLOUR,
                     line_width=2.5, source=self._box_source)

        self._depth_source = plots.source("depth", "size", "name", "kind", "jump", name="convolution-rf-depth")
        self._current_source = plots.source("depth", "size", "name", "kind", "jump", name="convolution-rf-current")
        fig = figure(height=230, sizing_mode="stretch_width", x_range=Range1d(0.5, 1.5), y_range=Range1d(0, 1),
                     tools="", toolbar_location=None,
                     # each line fits the frame on a phone: a wider title spills out of its figure
                     title="receptive-field size against depth (dashed:\nthe input's side; click a point to pick "
                           "that layer)")
        fig.title.text_font_size = "13px"
        fig.xaxis.axis_label = "depth (conv and pooling layers run so far)"
        fig.yaxis.axis_label = "receptive field side (px)"
        fig.line(x="depth", y="size", source=self._depth_source, line_color="#64748b")
        points = fig.scatter(x="depth", y="size", source=self._depth_source, size=6, color="#334155",
                             legend_label="conv or pooling layer")
        fig.scatter(x="depth", y="size", source=self._current_source, size=13, fill_color=MARK_COLOUR,
                    line_color="white", legend_label="this layer")
        self._image_span = Span(location=0, dimension="width", line_color=BOX_COLOUR, line_dash="dashed",
                                line_width=1.5)
        fig.add_layout(self._image_span)
        fig.legend.location = "top_left"
        fig.add_tools(HoverTool(renderers=[points], tooltips=[("layer", "@name"), ("kind", "@kind"),
                                                              ("field", "@size px"), ("jump", "@jump px")]))
        fig.on_event(Tap, self._depth_tapped)
        fig.on_event(DoubleTap, self._depth_tapped)
        self._depth_fig = fig


def zoom(box: receptive.Box, height: int, width: int) -> tuple[int, int, int]:
    """(left, top, side) of a square view around the box with a margin, kept on the image where it fits."""
    side = min(max(box.height, box.width) * 3 // 2 + 8, max(height, width))
    left = min(max((box.left + box.right - side) // 2, 0), max(width - side, 0))
    top = min(max((box.top + box.bottom - side) // 2, 0), max(height - side, 0))
    return left, top, side


def _deepest(panel: ReceptiveFieldPanel) -> str:
    convs = [n for n in panel.layers if panel.state.inference.trace[n].kind == "conv"]
    return (convs or panel.layers)[-1]


def _first_covering(panel: ReceptiveFieldPanel) -> str:
    """The first layer whose units' fields are as large as the input."""
    x = panel.state.inference.x
    fields = receptive.receptive_fields(panel.state.inference.model, tuple(x.shape[1:]))
    return next((f.name for f in fields if f.size[0] >= x.shape[-1]), fields[-1].name)


def _first_pool_or_second(panel: ReceptiveFieldPanel) -> str:
    names = panel.layers
    pools = [n for n in names if panel.state.inference.trace[n].kind == "pool"]
    return pools[0] if pools else names[min(1, len(names) - 1)]


def _first_field_text(panel: ReceptiveFieldPanel) -> str:
    """The first layer's field, in pixels, as the rectangle draws it."""
    first = panel._fields[0] if panel._fields else None
    size = "its kernel's few" if first is None else "×".join(map(str, first.size))
    return (f"A unit of the first layer sees only its kernel's window: {size} pixels. The rectangle on the input "
            "shows them; the heat map shows how strongly each pixel moves the unit (the kernel's weights, in "
            "absolute value).")


def narrative_steps() -> tuple[Step, ...]:
    """Settings are functions of the panel, so that they name layers of whichever model is loaded."""
    return (
        Step("One unit, one small patch", _first_field_text, {"layer": lambda p: p.layers[0]}, section="rf-figures"),
        Step("Pooling and stride double the step",
             "After a 2×2 pooling (or a stride-2 convolution), neighbouring units are two input pixels apart: "
             "the *jump* doubles, and every later kernel tap reaches twice as far.",
             {"layer": _first_pool_or_second}, section="rf-figures"),
        Step("Deeper units see more",
             "Each layer adds (kernel − 1) × jump pixels. Look at the curve below: the field grows slowly at "
             "first, then fast once the strides have multiplied.",
             {"layer": _deepest}, section="rf-summary"),
        Step("Effective is smaller than theoretical",
             "The heat map is concentrated in the middle of the rectangle: the centre pixels reach the unit "
             "through many paths, the border pixels through few (Luo et al. 2016). Compare the percentage "
             "below with the rectangle's size.",
             {"layer": _deepest}, section="rf-figures"),
        Step("When does one unit see the whole image?",
             "This is the first layer whose theoretical field is as wide as the input (the dashed line in the "
             "plot). Click units near the border: part of their field is padding.",
             {"layer": _first_covering}, section="rf-summary"),
    )


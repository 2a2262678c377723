"""The convolution lesson: the kernel window stepping over the layer's real input, and a kernel playground.

Step through: pick a convolution (every Conv2d of the model, depthwise and pointwise included) and an
output channel. All window positions of that channel are computed once (math.channel_steps) and sent
to the page; play, pause, step, the scrubber and the speed run in the browser (one Bokeh CustomJS
renders a position from the sent arrays), so a step costs no server round trip. A change of layer,
channel or input replaces the sources' data inside one `one_update()`; no Bokeh model is made after
__init__.

Playground: one 2-D kernel (presets or typed numbers) on the student's image with stride, padding,
padding mode, dilation and groups, the output-size formula with its numbers, and impossible settings
explained as text.

The receptive-field and filter-atlas tabs (receptive.py, view_receptive.py, view_atlas.py) are built when
first opened; `parts=()` leaves them out.
"""

from __future__ import annotations

import logging

import numpy as np
import panel as pn
import param
from bokeh.layouts import column, row
from bokeh.models import Button, ColumnDataSource, CustomJS, Div, HoverTool, LinearColorMapper, Range1d, Slider
from bokeh.plotting import figure

from explorer.core.gallery import photo_gallery
from explorer.errors import InputError
from explorer.lessons import plots
from explorer.lessons.convolution import math
from explorer.lessons.convolution.view_atlas import FilterAtlas
from explorer.lessons.convolution.view_receptive import ReceptiveFieldPanel
from explorer.session.narrative import Narrative, Step
from explorer.session.state import SessionView, follows, one_update
from explorer.session.tags import tag_results

log = logging.getLogger(__name__)

STEP_TABS = ("Step through", "Playground")
# The lesson's other parts, each in its own tab, built when the tab first opens.
OPTIONAL_TABS = {"Receptive field": ReceptiveFieldPanel, "Filter atlas": FilterAtlas}
FRAME = 280                 # input and output pictures (px)
CELLS_FRAME = 230           # patch, kernel and product grids (px)
MAX_LABELLED_BLOCKS = 16    # name the input channel above each block of the patch up to this many
NUMBERS_FROM_PX = 24        # write the numbers in the cells when a cell is at least this wide
DEFAULT_SPEED = 8           # window positions per second when playing
ZOOM_FROM, ZOOM_SIDE = 48, 32  # an input wider than ZOOM_FROM px is shown ZOOM_SIDE px around the window
YOUR_INPUT = "your input"
PLAYGROUND_PHOTOS = ("camera", "coins", "astronaut", "chelsea")  # scikit-image samples (explorer.core.gallery)
PLAYGROUND_SIDE = 128       # photos are shrunk (block means) to at most this many pixels a side

# Renders window position `slider.value` from the arrays the server sent: the patch and product cells,
# the window on the input, the output map up to this position and the arithmetic as text. Runs on every
# step in the page; changes data in place and emits `change`, so nothing goes back to the server.
RENDER = """
const n = positions.data.value.length;
const P = taps.data.kernel.length;
if (n === 0 || patches.data.patch.length !== n * P) return;  // a new layer's data is still arriving
const k = Math.max(0, Math.min(Math.round(slider.value), n - 1));
function fmt(v) {
  if (!isFinite(v)) return String(v);
  if (v === 0) return "0";
  const e = Math.floor(Math.log10(Math.abs(Number(v.toPrecision(3)))));
  let s = (e < -4 || e >= 3) ? v.toExponential(2) : v.toPrecision(3);
  if (s.includes("e")) {
    let [m, x] = s.split("e");
    if (m.includes(".")) m = m.replace(/\\.?0+$/, "");
    const digits = x.replace(/^[+-]/, "");
    s = m + "e" + (x[0] === "-" ? "-" : "+") + (digits.length < 2 ? "0" + digits : digits);
  } else if (s.includes(".")) s = s.replace(/\\.?0+$/, "");
  return s.replace(/-/g, "\\u2212");
}
const numbers = meta.data.numbers[0];
const t = taps.data;
for (let p = 0; p < P; p++) {
  t.patch[p] = patches.data.patch[k * P + p];
  t.product[p] = patches.data.product[k * P + p];
  t.patch_text[p] = numbers ? fmt(t.patch[p]) : "";
  t.product_text[p] = numbers ? fmt(t.product[p]) : "";
}
taps.change.emit();
const top = positions.data.top[k], left = positions.data.left[k];
const w = win.data;
for (let q = 0; q < w.dx.length; q++) { w.x[q] = left + w.dx[q]; w.y[q] = top + w.dy[q]; }
win.change.emit();
const s = span.data;
s.left[0] = left; s.right[0] = left + s.width[0]; s.top[0] = top; s.bottom[0] = top + s.height[0];
span.change.emit();
const zoom = meta.data.zoom[0];  // a large input is shown around the window, zoom × zoom pixels
if (zoom > 0) {
  const [x0, x1, y0, y1] = meta.data.bounds[0];  // the padded input: the view stays inside it
  const x = Math.max(x0, Math.min(left + s.width[0] / 2 - zoom / 2, x1 - zoom));
  const y = Math.max(y0, Math.min(top + s.height[0] / 2 - zoom / 2, y1 - zoom));
  xr.setv({start: x, end: x + zoom});
  yr.setv({start: y + zoom, end: y});
}
const image = output.data.image[0];
const value = positions.data.value;
for (let q = 0; q < n; q++) image[q] = q <= k ? value[q] : NaN;
output.change.emit();
const width = meta.data.out_w[0];
const i = Math.floor(k / width), j = k % width;
cursor.data.left[0] = j; cursor.data.right[0] = j + 1; cursor.data.top[0] = i; cursor.data.bottom[0] = i + 1;
cursor.change.emit();
const F = after.data.name.length;
let html = `<div class="conv-arithmetic"><b>Window position ${k}</b> (of 0–${n - 1}): output row ${i}, column ${j}<br>`;
html += `Σ of ${P} products = ${fmt(positions.data.sum[k])}`;
html += ` &nbsp;+ bias ${fmt(meta.data.bias[0])} &nbsp;= <b class="conv-value">${fmt(value[k])}</b>`;
let v = value[k];
for (let f = 0; f < F; f++) {
  const next = following.data.value[k * F + f];
  const formula = after.data.formula[f].split("{v}").join(fmt(v));
  html += `<br>→ ${after.data.module_type[f]} (${after.data.name[f]}): ${formula} = `;
  html += `<b class="conv-after">${fmt(next)}</b>`;
  v = next;
}
div.text = html + "</div>";
"""

# Play / pause: a timer that moves the scrubber; the scrubber's own callback renders each position.
PLAY = """
const key = "__convolution_player_" + slider.id;
const stop = () => { clearInterval(window[key]); window[key] = null; play.label = "▶ Play"; };
const start = () => {
  clearInterval(window[key]);
  window[key] = setInterval(() => {
    if (slider.value >= slider.end) { stop(); return; }
    slider.value = slider.value + 1;
  }, 1000 / speed.value);
  play.label = "⏸ Pause";
};
if (restart_only) { if (window[key]) start(); return; }
if (window[key]) { stop(); return; }
if (slider.value >= slider.end) slider.value = slider.start;
start();
"""
STEP = "slider.value = Math.max(slider.start, Math.min(slider.end, slider.value + delta));"


def _source(name: str, *columns: str) -> ColumnDataSource:
    return ColumnDataSource(data={c: [] for c in columns}, name=name)


def _cells_figure(title: str) -> figure:
    fig = figure(frame_width=CELLS_FRAME, frame_height=CELLS_FRAME, x_range=Range1d(0, 1),
                 y_range=plots.pixel_range(1), tools="", toolbar_location=None, title=title, min_border=4)
    fig.axis.visible = False
    fig.grid.visible = False
    fig.title.text_font_size = "13px"
    return fig


def _picture_figure(title: str, x_label: str, y_label: str, frame: int = FRAME) -> figure:
    fig = figure(frame_width=frame, frame_height=frame, x_range=Range1d(0, 1), y_range=plots.pixel_range(1),
                 tools="", toolbar_location=None, title=title, x_axis_location="above", x_axis_label=x_label,
                 y_axis_label=y_label, match_aspect=True)
    fig.grid.visible = False
    fig.title.text_font_size = "13px"
    return fig


class ConvolutionLesson(SessionView):
    """One convolution, one window at a time, on the student's input; and a kernel playground."""

    layer = param.Selector(default=None, objects=[], doc="The convolution (trace record name).")
    channel = param.Integer(default=0, bounds=(0, None), doc="Output channel of the convolution.")
    shown_input = param.Selector(default=0, objects=[0], doc="Input channel drawn under the window.")
    tab = param.Selector(default=STEP_TABS[0], objects=list(STEP_TABS), doc="Open part of the lesson.")
    # playground
    picture = param.Selector(default=YOUR_INPUT, objects=[YOUR_INPUT, *PLAYGROUND_PHOTOS],
                             doc="The image the playground filters.")
    preset = param.Selector(default="Sobel x", objects=list(math.PRESETS), doc="Kernel preset.")
    size = param.Integer(default=3, bounds=(1, 9), step=2, doc="Preset size (identity, blur, Gaussian, Gabor).")
    angle = param.Number(default=0.0, bounds=(0, 180), step=15, doc="Gabor angle (degrees).")
    frequency = param.Number(default=0.25, bounds=(0.05, 0.5), step=0.05, doc="Gabor frequency (cycles per pixel).")
    kernel_text = param.String(default="", doc="The kernel, one row per line.")
    stride = param.Integer(default=1, bounds=(1, 8))
    padding = param.Integer(default=1, bounds=(0, 16))
    padding_mode = param.Selector(default="zeros", objects=list(math.PADDING_MODES))
    dilation = param.Integer(default=1, bounds=(1, 8))
    groups = param.Integer(default=1, bounds=(1, 3))

    def __init__(self, model: str | None = None, parts: tuple[str, ...] | None = None, **params):
        """`parts`: the optional tabs to include (see OPTIONAL_TABS); all by default."""
        super().__init__(model=model, **params)
        self._shown_key: object = None
        self._steps: math.ChannelSteps | None = None
        self._build_step_through()
        self._build_playground()
        self._extra_tabs = self._optional_tabs(parts)
        self.param.tab.objects = list(STEP_TABS) + [title for title, _ in self._extra_tabs]
        self._follow_state()
        self.kernel_text = math.format_kernel(math.preset(self.preset, self.size, self.angle, self.frequency))
        self._update_playground()
        self._tabs = pn.Tabs(("Step through", self._step_layout), ("Playground", self._play_layout),
                             *self._extra_tabs, dynamic=False, sizing_mode="stretch_width")
        self._tabs.param.watch(lambda e: setattr(self, "tab", self.param.tab.objects[e.new]), "active")
        self._narrative = Narrative(narrative_steps(self), self, title="Convolution, step by step")

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self._narrative, self._tabs, sizing_mode="stretch_width")

    @param.depends("tab", "shown", watch=True)
    def _show_tab(self) -> None:
        self._tabs.active = self.param.tab.objects.index(self.tab)
        if self.tab in self._pending:
            body = dict(self._extra_tabs)[self.tab]
            self._parts[self.tab] = self._pending.pop(self.tab)(state=self.state)
            body.objects = [self._parts[self.tab]]
        for title, part in self._parts.items():  # a part in a closed tab does not follow the state
            part.shown = self.shown and title == self.tab

    def _optional_tabs(self, parts: tuple[str, ...] | None) -> list[tuple[str, pn.Column]]:
        """(title, empty body) of each optional part asked for; its Viewer is built when the tab first opens."""
        self._pending: dict[str, type] = {title: cls for title, cls in OPTIONAL_TABS.items()
                                          if parts is None or title in parts}
        self._parts: dict[str, SessionView] = {}
        return [(title, pn.Column(sizing_mode="stretch_width")) for title in self._pending]

    # --- following the session's state ---

    @follows("state.inference", "state.layer", "state.channel")
    def _follow_state(self) -> None:
        inference = self.state.inference
        model = inference.model.module
        names = list(math.conv_layers(model, inference.trace))
        # adopting the state's choice is not a choice to tell the state about; new choices count as adopting
        # too: the layer menu then takes its first entry when its value is not among them
        self._adopting = True
        try:
            self.param.layer.objects = names
            # a model without convolutions hides the step-through, which shows the previous model's
            self._board.visible = self._arithmetic_pane.visible = self._step_controls.visible = bool(names)
            if not names:
                self._layer_text.object = (f"{inference.model.name} has no 2-D convolution; the playground still "
                                           "works.")
                tag_results(inference.model.name, self._layer_text)
                return
            layer = self.state.layer if self.state.layer in names else self.layer if self.layer in names else names[0]
            out_channels = math.conv_module(model, layer).out_channels
            channel = self.state.channel if self.state.channel < out_channels else min(self.channel, out_channels - 1)
            with one_update():
                self.param.update(layer=layer, channel=channel)
                self._show_steps()
        finally:
            self._adopting = False

    @param.depends("layer", "channel", watch=True)
    def _tell_state(self) -> None:
        """The student picked a convolution or channel here: the overview and the other lessons follow."""
        if not getattr(self, "_adopting", False) and (self.layer, self.channel) != (self.state.layer,
                                                                                      self.state.channel):
            self.state.param.update(layer=self.layer, channel=self.channel)

    # --- step through ---

    @param.depends("layer", "channel", "shown_input", watch=True)
    def _show_steps(self) -> None:
        inference = self.state.inference
        if self.layer not in self.param.layer.objects:
            return
        model = inference.model.module
        conv = math.conv_module(model, self.layer)
        if self.channel >= conv.out_channels:
            self.channel = conv.out_channels - 1  # its watcher redraws
            return
        group = math.group_channels(conv, self.channel)
        if self.shown_input not in group:
            self.param.shown_input.objects = list(group)
            self.shown_input = group[0]  # its watcher redraws
            return
        key = (inference, self.layer, self.channel, self.shown_input)
        if key == self._shown_key:
            return
        self._shown_key = key
        record = inference.trace[self.layer]
        steps = math.channel_steps(conv, record.input, self.channel)
        after = math.after(model, math.following(inference.trace, self.layer), self.channel, steps.output)
        self._steps = steps
        with one_update():
            self.param.shown_input.objects = list(group)
            self._show_layer_text(conv, record, steps)
            self._show_cells(steps)
            self._show_input(steps, record.input.shape[2:], group.index(self.shown_input))
            self._show_output(steps)
            self._show_positions(steps, after)
            tag_results(inference.model.name, self._layer_text, self._arithmetic, *self._step_figures,
                        *self._step_sources)

    def _show_layer_text(self, conv, record, steps: math.ChannelSteps) -> None:
        c = math.cost(record)
        h, w = record.input.shape[2:]
        rows, cols = math.conv_output_sizes(conv, h, w)
        dense = ("" if c.dense_macs == c.macs else
                 f" (with groups = 1 it would be {plots.format_si(c.dense_macs, 'MACs')})")
        kh, kw = conv.kernel_size
        padding = conv.padding if isinstance(conv.padding, str) else "×".join(map(str, conv.padding))
        self._layer_text.object = (
            f"**{self.layer}**: {conv.in_channels} → {conv.out_channels} channels, kernel {kh}×{kw}, stride "
            f"{conv.stride[0]}×{conv.stride[1]}, padding {padding} "
            f"({conv.padding_mode}), dilation {conv.dilation[0]}×{conv.dilation[1]}, groups {conv.groups}, "
            f"{'a bias' if conv.bias is not None else 'no bias'}. {math.describe_groups(conv, self.channel)}\n\n"
            f"Output rows {rows.formula}; columns {cols.formula}.\n\n"
            f"**Cost**: {c.params:,} parameters · {plots.format_si(c.macs, 'MACs')}{dense} · output "
            f"{plots.format_shape(c.output_shape)} · {plots.format_bytes(c.activation_bytes)} of activations "
            f"(per image).")

    def _show_cells(self, steps: math.ChannelSteps) -> None:
        n_in, kh, kw = steps.kernel.shape
        per_row = int(np.ceil(np.sqrt(n_in)))  # a square of blocks fills the square frame best
        block_rows = -(-n_in // per_row)
        c, u, v = np.meshgrid(np.arange(n_in), np.arange(kh), np.arange(kw), indexing="ij")  # (C_g, k_h, k_w) each
        x = (c % per_row) * (kw + 1) + v
        y = (c // per_row) * (kh + 1) + u
        extent = max(per_row * (kw + 1) - 1, block_rows * (kh + 1) - 1)
        cell_px = CELLS_FRAME / extent
        numbers = self._numbers = cell_px >= NUMBERS_FROM_PX
        kernel = steps.kernel.numpy().ravel()
        patch, product = steps.patches[0].numpy().ravel(), steps.products[0].numpy().ravel()
        fmt = plots.format_value
        layout = dict(left=x.ravel(), right=x.ravel() + 1, top=y.ravel(), bottom=y.ravel() + 1, cx=x.ravel() + 0.5,
                      cy=y.ravel() + 0.5, channel=np.array(steps.in_channels)[c.ravel()], row=u.ravel(), col=v.ravel(),
                      kernel=kernel)
        # the kernel has a source of its own: it stays while the window moves, so its figure is not repainted
        self._kernel_cells.data = dict(layout, kernel_text=[fmt(w) if numbers else "" for w in kernel])
        self._taps.data = dict(layout, patch=patch.copy(), product=product.copy(),
                               patch_text=[fmt(p) if numbers else "" for p in patch],
                               product_text=[fmt(p) if numbers else "" for p in product])
        labels = [(int(ch), (i % per_row) * (kw + 1) + kw / 2, (i // per_row) * (kh + 1))
                  for i, ch in enumerate(steps.in_channels)] if n_in <= MAX_LABELLED_BLOCKS else []
        self._block_labels.data = dict(text=[f"in {ch}" for ch, _, _ in labels], x=[lx for _, lx, _ in labels],
                                       y=[ly for _, _, ly in labels])
        top_margin = 0.6 if labels else 0
        shown = steps.in_channels.index(self.shown_input)  # the block of the channel drawn on the left
        bx, by = (shown % per_row) * (kw + 1), (shown // per_row) * (kh + 1)
        edges = dict(left=bx - 0.15, right=bx + kw + 0.15, top=by - 0.15, bottom=by + kh + 0.15)
        self._shown_block.data = {k: [v] if n_in > 1 else [] for k, v in edges.items()}
        font = f"{int(np.clip(cell_px * 0.28, 8, 15))}px"
        patch_limit = plots.max_abs(steps.patches.numpy())
        signed = bool((steps.padded < 0).any())
        for fig, mapper, limit, kind in ((self._patch_fig, self._patch_mapper, patch_limit, signed),
                                         (self._kernel_fig, self._kernel_mapper, plots.max_abs(kernel), True),
                                         (self._product_fig, self._product_mapper,
                                          plots.max_abs(steps.products.numpy()), True)):
            fig.x_range.update(start=-0.2, end=extent + 0.2)
            fig.y_range.update(start=extent + 0.2, end=-0.2 - top_margin)
            mapper.update(palette=list(plots.palette(kind)), low=plots.colour_range(kind, limit)[0],
                          high=plots.colour_range(kind, limit)[1])
        for text in self._cell_texts:
            text.glyph.update(text_font_size=font, background_fill_alpha=0.75 if numbers else 0)  # no empty boxes
        self._patch_fig.title.text = (f"Input patch: {n_in} input channel{'s' * (n_in > 1)} × {kh}×{kw}"
                                      if n_in > 1 else f"Input patch ({kh}×{kw})")
        self._kernel_fig.title.text = f"Kernel weights of output channel {self.channel}"
        self._product_fig.title.text = "Patch × kernel, element by element"

    def _show_input(self, steps: math.ChannelSteps, size: tuple[int, int], shown: int) -> None:
        left, right, top, bottom = steps.pads
        h, w = size
        values = steps.padded[shown].numpy()
        signed = bool((steps.padded < 0).any())
        limit = plots.max_abs(steps.padded.numpy())
        self._input_source.data = dict(image=[values.astype(np.float32)], x=[-left], y=[-top], dw=[w + left + right],
                                       dh=[h + top + bottom])
        self._input_mapper.update(palette=list(plots.palette(signed)), low=plots.colour_range(signed, limit)[0],
                                  high=plots.colour_range(signed, limit)[1])
        self._input_frame.data = dict(left=[0], right=[w], top=[0], bottom=[h])
        kh, kw = steps.kernel.shape[1:]
        dy, dx = np.meshgrid(steps.tap_rows.numpy() + 0.5, steps.tap_cols.numpy() + 0.5, indexing="ij")  # tap centres
        # positions hold each window's top-left in input coordinates (padding is negative); taps are offsets from it
        self._window.data = dict(dx=dx.ravel(), dy=dy.ravel(), x=dx.ravel() - left + int(steps.lefts[0]),
                                 y=dy.ravel() - top + int(steps.tops[0]))
        span_w, span_h = int(steps.tap_cols[-1]) + 1, int(steps.tap_rows[-1]) + 1
        self._span.data = dict(width=[span_w], height=[span_h],
                               left=[int(steps.lefts[0]) - left], right=[int(steps.lefts[0]) - left + span_w],
                               top=[int(steps.tops[0]) - top], bottom=[int(steps.tops[0]) - top + span_h])
        extent = max(h + top + bottom, w + left + right)
        zoom = ZOOM_SIDE if extent > ZOOM_FROM else 0
        if zoom:  # around the first window, which is at the top left
            self._input_fig.x_range.update(start=-left, end=-left + zoom)
            self._input_fig.y_range.update(start=-top + zoom, end=-top)
        else:
            self._input_fig.x_range.update(start=-left, end=-left + extent)
            self._input_fig.y_range.update(start=-top + extent, end=-top)
        self._meta.data = dict(numbers=[self._numbers], bias=[steps.bias], out_w=[steps.output.shape[1]], zoom=[zoom],
                               bounds=[[-left, w + right, -top, h + bottom]])
        first_layer = self.layer == self.param.layer.objects[0]
        what = "your image" if first_layer else f"input channel {self.shown_input}"
        zoomed = ", zoomed in" if zoom else ""
        self._input_fig.title.text = f"The window on {what}{zoomed}"
        self._input_fig.xaxis.axis_label = ("x (input pixel; padding outside the dashed box)" if any(steps.pads)
                                            else "x (input pixel)")

    def _show_output(self, steps: math.ChannelSteps) -> None:
        out_h, out_w = steps.output.shape
        image = np.full((out_h, out_w), np.nan, dtype=np.float32)
        image.flat[0] = float(steps.output.flatten()[0])
        self._output_source.data = dict(image=[image], dw=[out_w], dh=[out_h])
        limit = plots.max_abs(steps.output.numpy())
        self._output_mapper.update(low=-limit, high=limit)
        extent = max(out_h, out_w)
        self._output_fig.x_range.update(start=0, end=extent)
        self._output_fig.y_range.update(start=extent, end=0)
        self._cursor.data = dict(left=[0], right=[1], top=[0], bottom=[1])
        self._output_fig.title.text = f"Output channel {self.channel} ({out_h}×{out_w}), filling in"

    def _show_positions(self, steps: math.ChannelSteps, after: tuple[math.After, ...]) -> None:
        self._after.data = dict(name=[a.name for a in after], module_type=[a.module_type for a in after],
                                formula=[a.formula for a in after])
        following = (np.stack([a.values.flatten().numpy() for a in after], axis=1).ravel() if after
                     else np.zeros(0, dtype=np.float32))  # (L·F,) position-major
        self._following.data = dict(value=following)
        self._patches.data = dict(patch=steps.patches.flatten().numpy(), product=steps.products.flatten().numpy())
        self._slider.update(end=max(steps.positions - 1, 1), value=0)
        self._positions.data = dict(top=steps.tops.numpy() - steps.pads[2], left=steps.lefts.numpy() - steps.pads[0],
                                    sum=steps.sums.numpy(), value=steps.output.flatten().numpy(),
                                    index=np.arange(steps.positions))
        self._arithmetic.text = self._arithmetic_text(steps, after, 0)

    def _arithmetic_text(self, steps: math.ChannelSteps, after: tuple[math.After, ...], k: int) -> str:
        """The arithmetic of position k as the page writes it (RENDER); the server's copy for position 0."""
        fmt = plots.format_value
        i, j = divmod(k, steps.output.shape[1])
        value = float(steps.output.flatten()[k])
        html = (f'<div class="conv-arithmetic"><b>Window position {k}</b> (of 0–{steps.positions - 1}): '
                f"output row {i}, column {j}"
                f"<br>Σ of {steps.kernel.numel()} products = {fmt(float(steps.sums[k]))} &nbsp;+ bias "
                f'{fmt(steps.bias)} &nbsp;= <b class="conv-value">{fmt(value)}</b>')
        v = value
        for a in after:
            nxt = float(a.values.flatten()[k])
            html += (f"<br>→ {a.module_type} ({a.name}): {a.formula.replace('{v}', fmt(v))} = "
                     f'<b class="conv-after">{fmt(nxt)}</b>')
            v = nxt
        return html + "</div>"

    def _build_step_through(self) -> None:
        self._taps = _source("convolution-taps", "left", "right", "top", "bottom", "cx", "cy", "channel", "row", "col",
                             "kernel", "patch", "product", "patch_text", "product_text")
        self._kernel_cells = _source("convolution-kernel", "left", "right", "top", "bottom", "cx", "cy", "channel",
                                     "row", "col", "kernel", "kernel_text")
        self._block_labels = _source("convolution-block-labels", "text", "x", "y")
        self._shown_block = _source("convolution-shown-block", "left", "right", "top", "bottom")
        self._patches = _source("convolution-patches", "patch", "product")
        self._positions = _source("convolution-positions", "top", "left", "sum", "value", "index")
        self._following = _source("convolution-following", "value")  # (L·F,) position-major
        self._after = _source("convolution-after", "name", "module_type", "formula")
        self._meta = _source("convolution-meta", "numbers", "bias", "out_w", "zoom", "bounds")
        self._input_source = _source("convolution-input", "image", "x", "y", "dw", "dh")
        self._input_frame = _source("convolution-input-frame", "left", "right", "top", "bottom")
        self._window = _source("convolution-window", "dx", "dy", "x", "y")
        self._span = _source("convolution-span", "width", "height", "left", "right", "top", "bottom")
        self._output_source = _source("convolution-output", "image", "dw", "dh")
        self._cursor = _source("convolution-cursor", "left", "right", "top", "bottom")

        self._patch_mapper, self._kernel_mapper, self._product_mapper = (
            LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1) for _ in range(3))
        self._patch_fig = _cells_figure("Input patch")
        self._kernel_fig = _cells_figure("Kernel weights")
        self._product_fig = _cells_figure("Patch × kernel")
        self._cell_texts = []
        for fig, field, mapper, source in ((self._patch_fig, "patch", self._patch_mapper, self._taps),
                                           (self._kernel_fig, "kernel", self._kernel_mapper, self._kernel_cells),
                                           (self._product_fig, "product", self._product_mapper, self._taps)):
            cells = fig.quad(left="left", right="right", top="top", bottom="bottom", source=source,
                             fill_color={"field": field, "transform": mapper}, line_color="#94a3b8", line_width=0.5)
            self._cell_texts.append(fig.text(x="cx", y="cy", text=f"{field}_text", source=source,
                                             text_align="center", text_baseline="middle", text_font_size="11px",
                                             text_color="#111827", background_fill_color="white",
                                             background_fill_alpha=0.75, padding=1))  # readable on dark cells
            fig.quad(left="left", right="right", top="top", bottom="bottom", source=self._shown_block, fill_alpha=0,
                     line_color="#f97316", line_width=2)
            fig.text(x="x", y="y", text="text", source=self._block_labels, text_align="center",
                     text_baseline="bottom", text_font_size="10px", text_color="#475569")
            values = [("input value", "@patch{0.000}"), ("weight", "@kernel{0.000}"), ("product", "@product{0.000}")]
            fig.add_tools(HoverTool(renderers=[cells], tooltips=[
                ("input channel", "@channel"), ("kernel row, column", "@row, @col"),
                *(values if source is self._taps else values[1:2])]))

        self._input_mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1, nan_color="#00000000")
        self._input_fig = _picture_figure("The window on the input", "x (input pixel)", "y (input pixel)")
        self._input_fig.image(image="image", x="x", y="y", dw="dw", dh="dh", color_mapper=self._input_mapper,
                              source=self._input_source)
        self._input_fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0,
                             line_color="#334155", line_dash="dashed", line_width=1.5, source=self._input_frame)
        # vivid orange: visible on the white of the diverging map and on viridis' dark purple alike
        self._input_fig.quad(left="left", right="right", top="top", bottom="bottom", fill_color="#f97316",
                             fill_alpha=0.12, line_color="#f97316", line_width=3, source=self._span)
        self._input_fig.rect(x="x", y="y", width=1, height=1, source=self._window, fill_alpha=0,
                             line_color="#f97316", line_width=1)
        self._output_mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1, nan_color="#00000000")
        self._output_fig = _picture_figure("Output channel", "x (output pixel)", "y (output pixel)")
        self._output_fig.image(image="image", x=0, y=0, dw="dw", dh="dh", color_mapper=self._output_mapper,
                               source=self._output_source)
        self._output_fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0,
                              line_color="#b45309", line_width=2.5, source=self._cursor)
        for fig in (self._input_fig, self._output_fig):
            for axis in (fig.xaxis[0], fig.yaxis[0]):
                axis.ticker.min_interval = 1
                axis.minor_tick_line_color = None

        self._slider = Slider(start=0, end=1, value=0, step=1, title="Window position", width=360,
                              name="convolution-position")
        self._speed = Slider(start=1, end=60, value=DEFAULT_SPEED, step=1, title="Speed (positions per second)",
                             width=200, name="convolution-speed")
        self._play = Button(label="▶ Play", width=90, button_type="primary", name="convolution-play")
        self._back = Button(label="◀ Step", width=70, name="convolution-back")
        self._forward = Button(label="Step ▶", width=70, name="convolution-forward")
        self._arithmetic = Div(text="", width=760, height=120, name="convolution-arithmetic",
                               styles={"font-size": "14px", "line-height": "1.6"})
        # what shows the chosen convolution's numbers (tagged with its model, see explorer.session.tags.tag_results)
        self._step_figures = (self._patch_fig, self._kernel_fig, self._product_fig, self._input_fig, self._output_fig)
        self._step_sources = (self._taps, self._kernel_cells, self._block_labels, self._shown_block, self._patches,
                              self._positions, self._following, self._after, self._meta, self._input_source,
                              self._input_frame, self._window, self._span, self._output_source, self._cursor)
        render = CustomJS(args=dict(positions=self._positions, patches=self._patches, taps=self._taps,
                                    win=self._window, span=self._span, output=self._output_source,
                                    cursor=self._cursor, after=self._after, following=self._following,
                                    meta=self._meta, slider=self._slider, xr=self._input_fig.x_range,
                                    yr=self._input_fig.y_range,
                                    div=self._arithmetic), code=RENDER)
        self._slider.js_on_change("value", render)
        self._positions.js_on_change("data", render)  # the server sent a new layer, channel or input
        self._play.js_on_click(CustomJS(args=dict(slider=self._slider, speed=self._speed, play=self._play,
                                                  restart_only=False), code=PLAY))
        self._speed.js_on_change("value", CustomJS(args=dict(slider=self._slider, speed=self._speed, play=self._play,
                                                             restart_only=True), code=PLAY))
        self._back.js_on_click(CustomJS(args=dict(slider=self._slider, delta=-1), code=STEP))
        self._forward.js_on_click(CustomJS(args=dict(slider=self._slider, delta=1), code=STEP))

        self._layer_text = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10),
                                            css_classes=["convolution-layer"])
        self._step_controls = pn.Row(
            pn.widgets.Select.from_param(self.param.layer, name="Convolution", width=220),
            pn.widgets.IntInput.from_param(self.param.channel, name="Output channel", width=130),
            pn.widgets.Select.from_param(self.param.shown_input, name="Input channel drawn", width=150))
        self._board = pn.pane.Bokeh(column(
            row(self._back, self._play, self._forward, self._slider, self._speed),
            row(self._input_fig, self._output_fig),
            row(self._patch_fig, self._kernel_fig, self._product_fig)))
        self._arithmetic_pane = pn.pane.Bokeh(self._arithmetic)
        self._step_layout = pn.Column(
            pn.pane.Markdown(
                "The window (orange) slides over the layer's real input: your image at the first layer, the feature "
                "maps of the layer before deeper in. At each position the input values under it are multiplied by "
                "the kernel's weights, the products are added up, the bias is added: one output value. Press "
                "**Play**, or step with the buttons or the slider; the output map fills in as the window moves. "
                + plots.COLOUR_LEGEND, sizing_mode="stretch_width", margin=(0, 10)),
            # the text is a root of its own: a change of it does not lay out the figures again
            self._step_controls, self._layer_text, self._board, self._arithmetic_pane, sizing_mode="stretch_width")

    # --- playground ---

    @param.depends("preset", "size", "angle", "frequency", watch=True)
    def _apply_preset(self) -> None:
        size = self.size if self.preset in math.SIZED_PRESETS else 3
        self.kernel_text = math.format_kernel(math.preset(self.preset, size if size % 2 else size + 1, self.angle,
                                                          self.frequency))

    def playground_picture(self) -> np.ndarray:
        """The picture the playground filters, uint8 (H, W) or (H, W, 3): the student's input or a photo."""
        if self.picture == YOUR_INPUT:
            return self.state.inference.view
        photo = next(item.source for item in photo_gallery() if item.key == self.picture)
        return np.rint(plots.downsample(photo.astype(np.float64), PLAYGROUND_SIDE)).astype(np.uint8)

    @follows("kernel_text", "stride", "padding", "padding_mode", "dilation", "groups", "picture", "state.inference")
    def _update_playground(self) -> None:
        import torch

        picture = self.playground_picture()
        image = picture.astype(np.float64) / 255
        image = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)  # (C, H, W) in [0, 1]
        self.param.groups.bounds = (1, image.shape[0])
        # the student's input is what this model sees (its preprocessing); a photo is the same for every model
        model = self.state.inference.model.name if self.picture == YOUR_INPUT else None
        with one_update():
            self._tag_playground(model)
            self._play_picture.data = dict(image=[plots.picture_to_rgba(picture)], dw=[image.shape[2]],
                                           dh=[image.shape[1]])
            self._fit(self._play_input_fig, image.shape[1], image.shape[2])
            try:
                kernel = math.parse_kernel(self.kernel_text)
                self._show_kernel(kernel)
                result = math.playground(torch.from_numpy(image), kernel, self.stride, self.padding,
                                         self.padding_mode, self.dilation, self.groups)
            except InputError as e:
                self._play_error.param.update(object=str(e), visible=True)
                self._play_formula.object = ""
                self._play_output.data = dict(image=[], x=[], dw=[], dh=[])
                return
            self._play_error.param.update(object="", visible=False)
            out = result.output.numpy()
            groups, out_h, out_w = out.shape
            gap = max(1, out_w // 10)
            self._play_output.data = dict(image=list(out.astype(np.float32)),
                                          x=[g * (out_w + gap) for g in range(groups)], dw=[out_w] * groups,
                                          dh=[out_h] * groups)
            limit = plots.max_abs(out)
            self._play_mapper.update(low=-limit, high=limit)
            self._fit(self._play_output_fig, out_h, groups * out_w + (groups - 1) * gap)
            channels = image.shape[0]
            what = (", the sum over the 3 colour channels" if groups == 1 and channels > 1 else
                    ", one per colour channel (red, green, blue)" if groups == 3 else "")
            self._play_output_fig.title.text = f"Output: {out_h}×{out_w}{what}"
            self._play_formula.object = (f"**Output size** (rows): {result.rows.formula}  \n"
                                         f"**Output size** (columns): {result.cols.formula}")

    def _tag_playground(self, model: str | None) -> None:
        results = (self._play_picture, self._play_input_fig, self._play_output, self._play_output_fig,
                   self._play_formula)
        if model is not None:
            tag_results(model, *results)
        else:
            for result in results:
                result.tags = []

    @staticmethod
    def _fit(fig: figure, height: int, width: int) -> None:
        extent = max(height, width)
        fig.x_range.update(start=0, end=extent)
        fig.y_range.update(start=extent, end=0)

    def _show_kernel(self, kernel) -> None:
        kh, kw = kernel.shape
        u, v = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
        values = kernel.numpy().ravel()
        cell_px = CELLS_FRAME / max(kh, kw)
        numbers = cell_px >= NUMBERS_FROM_PX
        self._play_kernel.data = dict(left=v.ravel(), right=v.ravel() + 1, top=u.ravel(), bottom=u.ravel() + 1,
                                      cx=v.ravel() + 0.5, cy=u.ravel() + 0.5, value=values,
                                      text=[plots.format_value(w) if numbers else "" for w in values])
        limit = plots.max_abs(values)
        self._play_kernel_mapper.update(low=-limit, high=limit)
        self._play_kernel_text.glyph.text_font_size = f"{int(np.clip(cell_px * 0.28, 8, 15))}px"
        self._fit(self._play_kernel_fig, kh, kw)

    def _build_playground(self) -> None:
        self._play_picture = _source("convolution-playground-input", "image", "dw", "dh")
        self._play_output = _source("convolution-playground-output", "image", "x", "dw", "dh")
        self._play_kernel = _source("convolution-playground-kernel", "left", "right", "top", "bottom", "cx", "cy",
                                    "value", "text")
        self._play_input_fig = _picture_figure("Your image", "x (pixel)", "y (pixel)", frame=240)
        self._play_input_fig.image_rgba(image="image", x=0, y=0, dw="dw", dh="dh", source=self._play_picture)
        self._play_mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1, nan_color="#00000000")
        self._play_output_fig = _picture_figure("Output", "x (output pixel)", "y (output pixel)", frame=300)
        self._play_output_fig.image(image="image", x="x", y=0, dw="dw", dh="dh", color_mapper=self._play_mapper,
                                    source=self._play_output)
        self._play_kernel_mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1)
        self._play_kernel_fig = _cells_figure("The kernel")
        self._play_kernel_fig.quad(left="left", right="right", top="top", bottom="bottom", source=self._play_kernel,
                                   fill_color={"field": "value", "transform": self._play_kernel_mapper},
                                   line_color="#94a3b8", line_width=0.5)
        self._play_kernel_text = self._play_kernel_fig.text(x="cx", y="cy", text="text", source=self._play_kernel,
                                                            text_align="center", text_baseline="middle",
                                                            text_color="#111827")
        self._play_error = pn.pane.Alert("", alert_type="warning", visible=False, css_classes=["playground-error"])
        self._play_formula = pn.pane.Markdown("", css_classes=["playground-formula"], margin=(0, 10))
        editor = pn.widgets.TextAreaInput.from_param(self.param.kernel_text, name="Kernel (one row per line)",
                                                     height=150, width=250, stylesheets=[
                                                         "textarea { font-family: monospace; }"])
        gabor = pn.Row(pn.widgets.FloatSlider.from_param(self.param.angle, name="Gabor angle (°)", width=150),
                       pn.widgets.FloatSlider.from_param(self.param.frequency, name="Gabor frequency (cycles/px)",
                                                         width=170))
        kernel_controls = pn.Column(
            pn.widgets.Select.from_param(self.param.picture, name="Image", width=150),
            pn.widgets.Select.from_param(self.param.preset, name="Preset", width=150),
            pn.widgets.IntSlider.from_param(self.param.size, name="Preset size", width=150), gabor, editor)
        settings = pn.Column(
            pn.widgets.IntSlider.from_param(self.param.stride, name="Stride", width=200),
            pn.widgets.IntSlider.from_param(self.param.padding, name="Padding", width=200),
            pn.widgets.RadioButtonGroup.from_param(self.param.padding_mode, width=300),
            pn.widgets.IntSlider.from_param(self.param.dilation, name="Dilation", width=200),
            pn.widgets.IntInput.from_param(self.param.groups, name="Groups", width=120))
        self._play_layout = pn.Column(
            pn.pane.Markdown(
                "Choose a kernel (a preset, or type your own numbers) and slide it over your image. The same "
                "numbers slide over every position: a convolution looks for one pattern everywhere. Sobel x is "
                "positive where the image gets brighter to the right, Sobel y where it gets brighter downward. "
                "With an RGB image, groups = 1 adds up the three colour channels; groups = 3 filters each alone.",
                sizing_mode="stretch_width", margin=(0, 10)),
            pn.Row(kernel_controls, pn.pane.Bokeh(self._play_kernel_fig), settings),
            self._play_formula, self._play_error,
            pn.pane.Bokeh(row(self._play_input_fig, self._play_output_fig)),
            sizing_mode="stretch_width")


def _first_conv(lesson: ConvolutionLesson) -> str:
    return lesson.param.layer.objects[0]


def _deepest_conv(lesson: ConvolutionLesson) -> str:
    """The last convolution whose output is still a map of more than one pixel."""
    trace = lesson.state.inference.trace
    spatial = [n for n in lesson.param.layer.objects if trace[n].output.shape[-1] > 1]
    return (spatial or lesson.param.layer.objects)[-1]


def _grouped_or_deepest(lesson: ConvolutionLesson) -> str:
    model = lesson.state.inference.model.module
    grouped = [n for n in lesson.param.layer.objects if math.conv_module(model, n).groups > 1]
    return grouped[0] if grouped else _deepest_conv(lesson)


def _tab_if_present(title: str, fallback: str):
    return lambda lesson: title if title in lesson.param.tab.objects else fallback


def narrative_steps(lesson: ConvolutionLesson) -> tuple[Step, ...]:
    return (
        Step("One window, one number",
             "The orange window covers a few pixels of your image. Each pixel is multiplied by the weight at the "
             "same place in the kernel, the products are added up and the bias is added: that is **one** output "
             "value. Press *Step ▶* a few times and check the sum under the pictures; then press *Play*.",
             {"tab": "Step through", "layer": _first_conv, "channel": 0}),
        Step("Padding keeps the size",
             "With a 3×3 kernel and no padding the window cannot be centred on the border pixels, so a 28×28 "
             "image gives 26×26. Padding adds one pixel all round and the output keeps the input's size. Set "
             "padding to 0 and read the formula; try the padding modes to see what fills the border.",
             {"tab": "Playground", "preset": "box blur", "size": 3, "stride": 1, "padding": 1, "dilation": 1,
              "groups": 1}),
        Step("Stride skips",
             "Stride 2 moves the window two pixels at a time: only every second position is computed, and the "
             "output is half as wide and half as high (a quarter of the work).",
             {"tab": "Playground", "preset": "Sobel x", "stride": 2, "padding": 1, "dilation": 1}),
        Step("Dilation spreads the taps",
             "Dilation 2 leaves a gap between the kernel's taps: the same 9 weights now cover a 5×5 area, with no "
             "extra parameters or work.",
             {"tab": "Playground", "preset": "Laplacian", "stride": 1, "padding": 2, "dilation": 2}),
        Step("Deeper units see more",
             "Deeper in, the window slides over feature maps, not pixels: each input value is already a summary "
             "of a patch of the image, so one output value here depends on a much larger part of your image. "
             "In a grouped or depthwise convolution (MobileNetV2) each output channel sees only its own group of "
             "input channels: look at the patch.",
             {"tab": _tab_if_present("Receptive field", "Step through"), "layer": _grouped_or_deepest,
              "channel": 0}),
        Step("What the first layer learned",
             "The first layer's kernels are small pictures: many look like the edge detectors (Sobel) and "
             "blurs of the playground. Compare them, and look at which parts of your image each one lights up.",
             {"tab": _tab_if_present("Filter atlas", "Step through"), "layer": _first_conv, "channel": 1}),
    )

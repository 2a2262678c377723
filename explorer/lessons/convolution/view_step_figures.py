"""The step-through's Bokeh models, built once per lesson, and the JavaScript that plays a position in the page.

Every position's numbers arrive as data: the values (for the colours) and, formatted in Python by
plots.format_value, their text. RENDER only picks position k's values and strings and writes them into the
figures, so the page and the server can never write a number differently.
"""

from __future__ import annotations

from bokeh.layouts import column, row
from bokeh.models import Button, CustomJS, Div, HoverTool, LinearColorMapper, Range1d, Slider
from bokeh.plotting import figure

from explorer.lessons import plots

FRAME = 240                 # input and output pictures (px): with axes and colour bar, under 390 px wide
CELLS_FRAME = 230           # patch, kernel and product grids (px)
DEFAULT_SPEED = 8           # window positions per second when playing
# The strings the page writes for every position, each kind sent as one text of lines: a list of strings costs the
# server one step of Bokeh's serializer per string (about 4 000 of them per input change on mnist-cnn).
STRINGS = ("labels", "sum", "value", "following")

# Renders window position `slider.value` from the arrays the server sent: the patch and product cells,
# the window on the input, the output map up to this position and the arithmetic as text. Runs on every
# step in the page; changes data in place and emits `change`, so nothing goes back to the server.
RENDER = """
const n = positions.data.value.length;
const P = taps.data.kernel.length;
if (n === 0 || patches.data.patch.length !== n * P) return;  // a new layer's data is still arriving
// The strings came as one text per kind, one string per line (STRINGS): split once per new data, kept in the page
const cache = window["__convolution_strings_" + strings.id] ??= {text: {}, lines: {}};
for (const name of Object.keys(strings.data)) {
  const text = strings.data[name][0] ?? "";
  if (cache.text[name] !== text) { cache.text[name] = text; cache.lines[name] = text.split("\\n"); }
}
const lines = cache.lines;
const k = Math.max(0, Math.min(Math.round(slider.value), n - 1));
const numbers = meta.data.numbers[0] && labels.data.patch.length === n * P;
const t = taps.data;
for (let p = 0; p < P; p++) {
  t.patch[p] = patches.data.patch[k * P + p];
  t.product[p] = patches.data.product[k * P + p];
  t.patch_text[p] = numbers ? lines.labels[labels.data.patch[k * P + p]] : "";
  t.product_text[p] = numbers ? lines.labels[labels.data.product[k * P + p]] : "";
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
html += `Σ of ${P} products = ${lines.sum[k]}`;
html += ` &nbsp;+ bias ${meta.data.bias_text[0]} &nbsp;= <b class="conv-value">${lines.value[k]}</b>`;
let v = lines.value[k];
for (let f = 0; f < F; f++) {
  const next = lines.following[k * F + f];
  const formula = after.data.formula[f].split("{v}").join(v);
  html += `<br>→ ${after.data.module_type[f]} (${after.data.name[f]}): ${formula} = `;
  html += `<b class="conv-after">${next}</b>`;
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
  play.label = "❚❚ Pause";
};
if (restart_only) { if (window[key]) start(); return; }
if (window[key]) { stop(); return; }
if (slider.value >= slider.end) slider.value = slider.start;
start();
"""
STEP = "slider.value = Math.max(slider.start, Math.min(slider.end, slider.value + delta));"


def cells_figure(title: str) -> figure:
    fig = figure(frame_width=CELLS_FRAME, frame_height=CELLS_FRAME, **plots.NATURAL_SIZE, x_range=Range1d(0, 1),
                 y_range=plots.pixel_range(1), tools="", toolbar_location=None, title=title, min_border=4)
    fig.axis.visible = False
    fig.grid.visible = False
    fig.title.text_font_size = "13px"
    return fig


def picture_figure(title: str, x_label: str, y_label: str) -> figure:
    fig = figure(frame_width=FRAME, frame_height=FRAME, **plots.NATURAL_SIZE, x_range=Range1d(0, 1),
                 y_range=plots.pixel_range(1), tools="", toolbar_location=None, title=title, x_axis_location="above",
                 x_axis_label=x_label, y_axis_label=y_label, match_aspect=True)
    fig.grid.visible = False
    fig.title.text_font_size = "13px"
    return fig


class StepFigures:
    """The step-through's sources, figures and player of one lesson (one session's document)."""

    def __init__(self):
        source = plots.source
        self.taps = source("left", "right", "top", "bottom", "cx", "cy", "channel", "row", "col", "kernel", "patch",
                           "product", "patch_text", "product_text", name="convolution-taps")
        self.kernel_cells = source("left", "right", "top", "bottom", "cx", "cy", "channel", "row", "col", "kernel",
                                   "kernel_text", name="convolution-kernel")
        self.block_labels = source("text", "x", "y", name="convolution-block-labels")
        self.shown_block = source("left", "right", "top", "bottom", name="convolution-shown-block")
        self.patches = source("patch", "product", name="convolution-patches")
        # where the cells' numbers are written: each value's index into the `labels` strings (empty: none written)
        self.labels = source("patch", "product", name="convolution-patch-labels")
        # every string the page writes, one text per kind (STRINGS): the cells' labels, each position's sum and
        # value, and the values after the layers that follow (position-major)
        self.strings = source(*STRINGS, name="convolution-strings")
        self.positions = source("top", "left", "sum", "value", "index", name="convolution-positions")
        self.following = source("value", name="convolution-following")  # (L·F,) position-major
        self.after = source("name", "module_type", "formula", name="convolution-after")
        self.meta = source("numbers", "bias", "bias_text", "out_w", "zoom", "bounds", name="convolution-meta")
        self.input_source = source("image", "x", "y", "dw", "dh", name="convolution-input")
        self.input_frame = source("left", "right", "top", "bottom", name="convolution-input-frame")
        self.window = source("dx", "dy", "x", "y", name="convolution-window")
        self.span = source("width", "height", "left", "right", "top", "bottom", name="convolution-span")
        self.output_source = source("image", "dw", "dh", name="convolution-output")
        self.cursor = source("left", "right", "top", "bottom", name="convolution-cursor")
        self._build_cells()
        self._build_pictures()
        self._build_player()
        # what shows the chosen convolution's numbers (tagged with its model, see explorer.session.tags.tag_results)
        self.figures = (self.patch_fig, self.kernel_fig, self.product_fig, self.input_fig, self.output_fig)
        self.sources = (self.taps, self.kernel_cells, self.block_labels, self.shown_block, self.patches, self.labels,
                        self.strings, self.positions, self.following, self.after, self.meta, self.input_source,
                        self.input_frame, self.window, self.span, self.output_source, self.cursor)
        # each row goes on under itself where the lesson is narrower than it (a phone, a tablet upright)
        wraps = dict(sizing_mode="stretch_width", stylesheets=[plots.WRAPS])
        self.layout = column(row(self.back, self.play, self.forward, self.slider, self.speed, **wraps),
                             row(self.input_fig, self.output_fig, **wraps),
                             row(self.patch_fig, self.kernel_fig, self.product_fig, **wraps),
                             sizing_mode="stretch_width")

    def _build_cells(self) -> None:
        self.patch_mapper, self.kernel_mapper, self.product_mapper = (
            LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1) for _ in range(3))
        self.patch_fig = cells_figure("Input patch")
        self.kernel_fig = cells_figure("Kernel weights")
        self.product_fig = cells_figure("Patch × kernel")
        self.patch_bar, self.kernel_bar, self.product_bar = (
            plots.colour_bar(mapper, title) for mapper, title in ((self.patch_mapper, "input value"),
                                                                  (self.kernel_mapper, "weight (layer's scale)"),
                                                                  (self.product_mapper, "product")))
        for fig, bar in ((self.patch_fig, self.patch_bar), (self.kernel_fig, self.kernel_bar),
                         (self.product_fig, self.product_bar)):
            fig.add_layout(bar, "right")
        self.cell_texts = []
        for fig, field, mapper, source in ((self.patch_fig, "patch", self.patch_mapper, self.taps),
                                           (self.kernel_fig, "kernel", self.kernel_mapper, self.kernel_cells),
                                           (self.product_fig, "product", self.product_mapper, self.taps)):
            cells = fig.quad(left="left", right="right", top="top", bottom="bottom", source=source,
                             fill_color={"field": field, "transform": mapper}, line_color="#94a3b8", line_width=0.5)
            self.cell_texts.append(fig.text(x="cx", y="cy", text=f"{field}_text", source=source,
                                            text_align="center", text_baseline="middle", text_font_size="12px",
                                            text_color="#111827", background_fill_color="white",
                                            background_fill_alpha=0.75, padding=1))  # readable on dark cells
            fig.quad(left="left", right="right", top="top", bottom="bottom", source=self.shown_block, fill_alpha=0,
                     line_color="#f97316", line_width=2)
            fig.text(x="x", y="y", text="text", source=self.block_labels, text_align="center",
                     text_baseline="bottom", text_font_size="12px", text_color="#475569")
            values = [("input value", "@patch{0.000}"), ("weight", "@kernel{0.000}"), ("product", "@product{0.000}")]
            fig.add_tools(HoverTool(renderers=[cells], tooltips=[
                ("input channel", "@channel"), ("kernel row, column", "@row, @col"),
                *(values if source is self.taps else values[1:2])]))

    def _build_pictures(self) -> None:
        self.input_mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1, nan_color="#00000000")
        self.input_fig = picture_figure("The window on the input", "x (input pixel)", "y (input pixel)")
        self.input_fig.image(image="image", x="x", y="y", dw="dw", dh="dh", color_mapper=self.input_mapper,
                             source=self.input_source)
        self.input_fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0,
                            line_color="#334155", line_dash="dashed", line_width=1.5, source=self.input_frame)
        # vivid orange: visible on the white of the diverging map and on viridis' dark purple alike
        self.input_fig.quad(left="left", right="right", top="top", bottom="bottom", fill_color="#f97316",
                            fill_alpha=0.12, line_color="#f97316", line_width=3, source=self.span)
        self.input_fig.rect(x="x", y="y", width=1, height=1, source=self.window, fill_alpha=0,
                            line_color="#f97316", line_width=1)
        self.output_mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1, nan_color="#00000000")
        self.output_fig = picture_figure("Output channel", "x (output pixel)", "y (output pixel)")
        self.output_fig.image(image="image", x=0, y=0, dw="dw", dh="dh", color_mapper=self.output_mapper,
                              source=self.output_source)
        self.output_fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0,
                             line_color="#b45309", line_width=2.5, source=self.cursor)
        self.input_bar = plots.colour_bar(self.input_mapper, "input value")
        self.output_bar = plots.colour_bar(self.output_mapper, "output value")
        self.input_fig.add_layout(self.input_bar, "right")
        self.output_fig.add_layout(self.output_bar, "right")
        for fig in (self.input_fig, self.output_fig):
            for axis in (fig.xaxis[0], fig.yaxis[0]):
                axis.ticker.min_interval = 1
                axis.minor_tick_line_color = None

    def _build_player(self) -> None:
        self.slider = Slider(start=0, end=1, value=0, step=1, title="Window position", width=290,
                             name="convolution-position")
        self.speed = Slider(start=1, end=60, value=DEFAULT_SPEED, step=1, title="Speed (positions per second)",
                            width=180, name="convolution-speed")
        self.play = Button(label="▶ Play", width=90, button_type="primary", name="convolution-play")
        self.back = Button(label="◀ Step", width=70, name="convolution-back")
        self.forward = Button(label="Step ▶", width=70, name="convolution-forward")
        # a fixed size gets each step's text in place, without a layout of the page (explorer/serve/bokehjs_fixes.js):
        # narrow enough for a phone, high enough for the lines its text wraps into
        self.arithmetic = Div(text="", width=370, height=230, name="convolution-arithmetic",
                              styles={"font-size": "14px", "line-height": "1.6"})
        render = CustomJS(args=dict(positions=self.positions, patches=self.patches, labels=self.labels,
                                    strings=self.strings, taps=self.taps, win=self.window, span=self.span,
                                    output=self.output_source, cursor=self.cursor, after=self.after,
                                    following=self.following, meta=self.meta, slider=self.slider,
                                    xr=self.input_fig.x_range, yr=self.input_fig.y_range, div=self.arithmetic),
                          code=RENDER)
        self.slider.js_on_change("value", render)
        self.positions.js_on_change("data", render)  # the server sent a new layer, channel or input
        self.play.js_on_click(CustomJS(args=dict(slider=self.slider, speed=self.speed, play=self.play,
                                                 restart_only=False), code=PLAY))
        self.speed.js_on_change("value", CustomJS(args=dict(slider=self.slider, speed=self.speed, play=self.play,
                                                            restart_only=True), code=PLAY))
        self.back.js_on_click(CustomJS(args=dict(slider=self.slider, delta=-1), code=STEP))
        self.forward.js_on_click(CustomJS(args=dict(slider=self.slider, delta=1), code=STEP))

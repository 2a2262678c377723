"""The quantization lesson: what rounding weights and activations to fewer bits does, with the arithmetic.

Compute lives in math.py (measured.py for the accuracies, int8.py for onnxruntime's real int8); this module only
shows it. Performance (a new Bokeh model costs far more to send and lay out than new data in one already on the
page; docs/performance.md): every Bokeh figure and source is built once in __init__; a control
change replaces source data and Markdown text inside one `one_update()`.

Accuracies come from measured.py: those kept (stored beside the card, or in the on-disk cache) are shown with the
rest of the lesson, at once; the others are measured on worker threads, kept for every session and process, and
painted when they arrive, with a progress bar for the curves. A result is painted only if it is still for the model
(and setting) on screen. Every figure, source and pane that shows a result carries `plots.model_tag` of its model,
set together with its content; until a result of a new model arrives, its place says so, under the new model's tag.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np
import panel as pn
import param
import torch
from bokeh.models import ColumnDataSource, HoverTool, Legend, LegendItem, Range1d, Span
from bokeh.plotting import figure

from explorer.core import trace, zoo
from explorer.errors import InputError
from explorer.lessons import plots
from explorer.lessons.quantization import math as qm
from explorer.lessons.quantization import measured
from explorer.session import background
from explorer.session.narrative import Narrative, Step
from explorer.session.state import SessionView, follows, one_update
from explorer.session.tags import tag_results

log = logging.getLogger(__name__)

BINS = 80
EXAMPLES = 6  # weights written out in the arithmetic table
ACT_CHOICES = {"float (not quantized)": 0, **{f"{b} bits": b for b in range(8, 1, -1)}}  # 0: float
CURVE_COLOURS = {  # Okabe-Ito: colour-blind safe
    ("symmetric", "per-tensor"): "#E69F00", ("symmetric", "per-channel"): "#0072B2",
    ("affine", "per-tensor"): "#CC79A7", ("affine", "per-channel"): "#009E73"}
FLOAT_COLOUR, QUANT_COLOUR, CLIP_COLOUR = "#999999", "#0072B2", "#D55E00"
TERNARY_X = qm.TERNARY_BITS
MEASURING = "⏳ measuring …"


class QuantizationLesson(SessionView):
    """What rounding weights (and activations) to fewer bits does to them, to the prediction and to accuracy."""

    layer = param.Selector(default=None, objects=[], doc="Convolution or linear layer whose arithmetic is shown.")
    bits = param.Integer(default=measured.DEFAULT.weight_bits, bounds=(1, 8),
                         doc="Bits per weight; 1 bit is XNOR-Net's sign · mean |w|.")
    act_bits = param.Selector(default=measured.DEFAULT.act_bits or 0, objects=list(ACT_CHOICES.values()),
                              doc="Bits per activation (each layer's input), or 0 to keep them float.")
    granularity = param.Selector(default=measured.DEFAULT.granularity, objects=list(qm.GRANULARITIES))
    scheme = param.Selector(default=measured.DEFAULT.scheme, objects=list(qm.SCHEMES))
    clip = param.Selector(default=measured.DEFAULT.clip, objects=list(qm.CLIPS),
                          doc="How the ends of the range are chosen.")
    channel = param.Integer(default=0, bounds=(0, None), doc="Output channel whose grid is drawn (per-channel).")

    def __init__(self, model: str | None = None, **params):
        super().__init__(model=model, **params)
        self._lock = threading.Lock()
        self.result: dict[str, object] = {}
        self.accuracy_job: Future | None = None
        self.sweep_job: Future | None = None
        self.int8_job: Future | None = None
        self._model: zoo.ZooModel | None = None  # the model whose results are on screen
        self._copy: qm.QuantizedCopy | None = None  # this lesson's private copy of it
        self._switching = False  # while the layer menu changes to another model's layers
        self._sweep_key: tuple | None = None  # (model, clip, act_bits) of the curves on screen
        self._sweeping: set[tuple] = set()  # the keys whose missing points a worker is measuring
        self._measured: dict[tuple[str, qm.Setting | None], float] = {}  # kept accuracies of the shown model
        self._build_histogram()
        self._build_predictions()
        self._build_sqnr()
        self._build_curves()
        self._error = pn.pane.Alert("", alert_type="danger", visible=False)
        # Fixed heights: text that grows or shrinks by a line would make the browser lay out the whole page again
        # on every change (docs/performance.md measured that cost for a figure's height).
        self._summary = pn.pane.Markdown("", sizing_mode="stretch_width", height=64, margin=(0, 10),
                                         css_classes=["quantization-summary"])
        self._accuracy = pn.pane.Markdown("", sizing_mode="stretch_width", height=48, margin=(0, 10),
                                          css_classes=["quantization-accuracy"])
        self._arithmetic = pn.pane.Markdown("", sizing_mode="stretch_width", height=540, margin=(0, 10),
                                            styles={"overflow-y": "auto"}, css_classes=["quantization-arithmetic"])
        self._progress = pn.indicators.Progress(value=0, max=len(qm.sweep_settings(measured.DEFAULT)), width=260,
                                                bar_color="primary", visible=False)
        self._progress_text = pn.pane.Markdown("", css_classes=["quantization-progress"])
        self._int8_button = pn.widgets.Button(label="Build real int8 with onnxruntime", color="primary",
                                              width=300)
        self._int8_button.on_click(self._build_int8)
        self._int8_progress = pn.indicators.Progress(value=0, max=3, width=260, visible=False)
        self._int8_text = pn.pane.Markdown(INT8_INTRO, sizing_mode="stretch_width", css_classes=["quantization-int8"])
        self._model_changed()
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            pn.state.curdoc.on_session_destroyed(self._stop)
        self._narrative = Narrative(steps(), self, title="Quantization, step by step")

    # --- state -------------------------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """The model whose results the lesson shows."""
        return self._model.name

    @property
    def setting(self) -> qm.Setting:
        """The current choices as a complete, hashable description (a cache key)."""
        return qm.Setting(weight_bits=max(self.bits, 2), scheme=self.scheme, granularity=self.granularity,
                          clip=self.clip, act_bits=self.act_bits or None,
                          format="binary" if self.bits == 1 else "integer")

    @follows("state.inference")
    def _model_changed(self) -> None:
        model = self.state.inference.model
        if model is not self._model:
            self._switch_to(model)
        self._update()

    def _switch_to(self, model: zoo.ZooModel) -> None:
        """Take another model: its layers in the menu (the widget shows the layer explained), nothing of the
        previous model kept, and its workers' results dropped when they arrive (they check the model)."""
        names = qm.quantizable_layers(model.module)
        self._model, self._copy = model, qm.QuantizedCopy(model.module)
        self._measured.clear()
        self._sweep_key = None
        wanted = self.state.layer if self.state.layer in names else names[0]
        self._switching = True  # one _update follows, for the new layer and model
        try:
            self.param.layer.objects = names
            self.param.update(layer=wanted)  # with events: the layer menu follows
        finally:
            self._switching = False
        with one_update():
            self._int8_button.disabled = False
            self._int8_progress.visible = False
            self._int8_text.object = INT8_INTRO
            tag_results(model.name, self._int8_text)

    @follows("state.layer")
    def _follow_state_layer(self) -> None:
        if self.state.layer in self.param.layer.objects:
            self.layer = self.state.layer

    # --- the one update ------------------------------------------------------------------------------------

    @param.depends("layer", "bits", "act_bits", "granularity", "scheme", "clip", "channel", watch=True)
    def _update(self) -> None:
        if self._switching:
            return
        try:
            self._compute()
        except InputError as e:
            with one_update():
                self._error.param.update(object=str(e), visible=True)
                tag_results(self.model_name, self._error)
            return
        with one_update():
            self._error.visible = False
            self._show_histogram()
            self._show_arithmetic()
            self._show_predictions()
            self._show_sqnr()
            self._show_summary()
            self._show_kept()
        _painter()(self._start_background)  # served: after this repaint has gone out, so it is not slowed down

    def _compute(self) -> None:
        inference = self.state.inference
        module = self._model.module
        setting = self.setting
        calibration = measured.calibration(self.model_name) if setting.act_bits is not None else None
        weight = module.get_submodule(self.layer).weight.detach().cpu().float()
        qt = qm.quantize_weight(weight, setting)
        approx = trace.run(self._copy.quantize(setting, calibration), inference.x)
        act = None
        if setting.act_bits is not None:
            act = qm.activation_quantizers(module, calibration, setting.act_bits, setting.scheme, setting.clip)
        channel = min(self.channel, weight.shape[0] - 1)
        self.result = dict(
            setting=setting, weight=weight, quantized=qt, channel=channel, trace=approx,
            probs=approx.logits[0].softmax(-1), layer_sqnr=qm.layer_sqnr(inference.trace, approx),
            weight_sqnr=qm.sqnr(weight, qt.dequantized), act=act[self.layer] if act else None,
            size_float=qm.size_bytes(module), size_quant=qm.size_bytes(module, setting),
            calibration=calibration)

    # --- accuracies: kept ones at once, the others on worker threads ----------------------------------------------

    def _look_up(self, settings: list[qm.Setting | None]) -> None:
        """Fill in what is kept (stored beside the card, or in the on-disk cache) for the shown model."""
        for setting in settings:
            if (self.model_name, setting) not in self._measured:
                value = measured.known(self._model, setting)
                if value is not None:
                    self._measured[(self.model_name, setting)] = value

    def _curve_settings(self) -> list[qm.Setting | None]:
        return [None, *qm.sweep_settings(self.setting)]  # None: float32, the dotted line

    def _missing(self, settings: list[qm.Setting | None]) -> list[qm.Setting | None]:
        return [s for s in settings if (self.model_name, s) not in self._measured]

    def _show_kept(self) -> None:
        """The accuracy and the curves from kept values; what is not kept says it is being measured."""
        setting = self.setting
        key = (self.model_name, setting.clip, setting.act_bits)
        if key != self._sweep_key:
            self._sweep_key = key
            self._look_up(self._curve_settings())
            self._show_curves()
        self._look_up([None, setting])
        self._show_accuracy()
        self._show_current_point()

    def _start_background(self) -> None:
        if self._missing([None, self.setting]):
            self._measure_accuracy()
        if self._missing(self._curve_settings()):
            self._start_sweep()

    def _stop(self, session_context) -> None:
        """The session ended: a running sweep stops after its current evaluation."""
        self._sweep_key = None

    def _keep(self, model_name: str, setting: qm.Setting | None, top1: float) -> bool:
        """Keep a worker's result if it is for the shown model (else the student has left that model)."""
        if model_name != self.model_name:
            return False
        self._measured[(model_name, setting)] = top1
        return True

    def _measure_accuracy(self) -> None:
        setting, model = self.setting, self._model
        paint = _painter()

        def show(float_top1: float, top1: float) -> None:
            if self._keep(model.name, None, float_top1) and self._keep(model.name, setting, top1):
                with one_update():
                    self._show_accuracy()
                    self._show_curves()  # the float32 line, and this setting's point if it is on them

        def work() -> None:
            float_top1 = measured.measure(model, None, background.request_turn())
            top1 = measured.measure(model, setting, background.request_turn())
            paint(functools.partial(show, float_top1, top1))

        self.accuracy_job = background.submit(work, "quantization")

    def _start_sweep(self) -> None:
        key, model = self._sweep_key, self._model
        missing = self._missing(self._curve_settings())
        with self._lock:
            if key in self._sweeping:
                return  # a worker is on it (and goes on: the curves are again the ones it measures)
            self._sweeping.add(key)
        paint = _painter()

        def show(setting: qm.Setting | None, top1: float) -> None:
            if self._keep(model.name, setting, top1) and self._sweep_key == key:
                with one_update():
                    self._show_curves()
                    self._show_current_point()

        def still_wanted() -> bool:
            with self._lock:
                if self._sweep_key == key and not background.exiting():
                    return True
                self._sweeping.discard(key)
                return False

        def work() -> None:
            for setting in missing:
                if not still_wanted():  # the student moved on: a newer sweep paints
                    return
                top1 = measured.measure(model, setting, background.sweep_turn())  # one evaluation per turn
                paint(functools.partial(show, setting, top1))
            with self._lock:
                self._sweeping.discard(key)

        self.sweep_job = background.submit(work, "quantization")

    def _build_int8(self, _event=None) -> None:
        """Export, quantize with onnxruntime and measure, on a worker thread, with a three-step progress bar."""
        from explorer.lessons.quantization import int8

        model = self._model
        files = int8.files_for(model.name, model.card.sha256)
        what, calibration_name = measured.meaning(model), measured.calibration_name(model)
        paint = _painter()
        self._int8_button.disabled = True
        self._int8_progress.param.update(value=0, visible=True)

        def show(step: int, text: str) -> None:
            if self.model_name != model.name:
                return  # the student has left this model: the lesson shows the new one's introduction
            with one_update():
                self._int8_progress.param.update(value=step, visible=step < 3)
                self._int8_button.disabled = step < 3
                self._int8_text.object = text
                tag_results(model.name, self._int8_text)

        def work() -> None:
            paint(functools.partial(show, 0, "⏳ 1/3: exporting the float32 model to ONNX …"))
            calibration, evalset = measured.calibration(model.name), measured.heldout(model.name)
            int8.export_float(model.module, files, calibration)
            paint(functools.partial(show, 1, f"⏳ 2/3: calibrating on {calibration_name} and quantizing to int8 …"))
            with background.request_turn():
                int8.quantize_int8(files, calibration)
                paint(functools.partial(show, 2, f"⏳ 3/3: measuring {what} on {evalset.name} and latency …"))
                result = int8.measure(files, evalset)
            paint(functools.partial(show, 3, _int8_text(files, result, what)))

        self.int8_job = background.submit(work, "quantization")

    # --- figures, built once ---------------------------------------------------------------------------------

    def _build_histogram(self) -> None:
        self._hist_source = ColumnDataSource(dict(left=[], right=[], top=[]), name="quantization-histogram")
        self._dequant_source = ColumnDataSource(dict(left=[], right=[], top=[]), name="quantization-dequantized")
        self._grid_source = ColumnDataSource(dict(x=[], y0=[], y1=[]), name="quantization-grid")
        self._clip_source = ColumnDataSource(dict(x=[], y0=[], y1=[], label=[]), name="quantization-clip")
        fig = figure(height=340, sizing_mode="stretch_width", title="weights", tools="xwheel_zoom,xpan,reset",
                     x_axis_label="weight value", y_axis_label="number of weights", toolbar_location="above")
        grid = fig.segment(x0="x", x1="x", y0="y0", y1="y1", source=self._grid_source, line_color="#64748b",
                           line_alpha=0.45, line_width=1)
        floats = fig.quad(left="left", right="right", bottom=0, top="top", source=self._hist_source,
                          fill_color=FLOAT_COLOUR, fill_alpha=0.55, line_color=None)
        deq = fig.quad(left="left", right="right", bottom=0, top="top", source=self._dequant_source,
                       fill_color=QUANT_COLOUR, fill_alpha=0.8, line_color=None)
        clip = fig.segment(x0="x", x1="x", y0="y0", y1="y1", source=self._clip_source, line_color=CLIP_COLOUR,
                           line_width=2, line_dash="dashed")
        fig.add_layout(Legend(items=[LegendItem(label="float weights", renderers=[floats]),
                                     LegendItem(label="after quantization", renderers=[deq]),
                                     LegendItem(label="grid: the values the codes stand for", renderers=[grid]),
                                     LegendItem(label="clipping range [lo, hi]", renderers=[clip])],
                              orientation="horizontal", ncols=2, label_text_font_size="10px"), "below")
        fig.add_tools(HoverTool(renderers=[floats, deq], tooltips=[("from", "@left{0.0000}"), ("to", "@right{0.0000}"),
                                                                   ("weights", "@top")]))
        self._hist_fig = fig

    def _build_predictions(self) -> None:
        self._pred_source = ColumnDataSource(dict(y=[], prob=[], label=[], kind=[], colour=[], text=[]),
                                             name="quantization-predictions")
        fig = figure(height=230, width=380, title="prediction on your input: float32 vs quantized",
                     x_range=Range1d(0, 1.25), y_range=Range1d(-0.6, 4.6), toolbar_location=None,
                     x_axis_label="probability", tools="")
        fig.hbar(y="y", right="prob", height=0.38, color="colour", source=self._pred_source, legend_field="kind")
        fig.text(x="prob", y="y", text="text", x_offset=4, text_baseline="middle", text_font_size="10px",
                 source=self._pred_source)
        fig.yaxis.axis_label = "class"
        fig.yaxis.ticker = list(range(5))
        fig.legend.location = "bottom_right"
        fig.legend.label_text_font_size = "10px"
        self._pred_fig = fig

    def _build_sqnr(self) -> None:
        self._sqnr_source = ColumnDataSource(dict(x=[], top=[], name=[], text=[], colour=[]),
                                             name="quantization-sqnr")
        fig = figure(height=230, sizing_mode="stretch_width", title="SQNR of every layer's output on your input",
                     x_axis_label="layer, in the order the network runs them", y_axis_label="SQNR (dB)",
                     toolbar_location=None, tools="", y_range=Range1d(0, 70))
        bars = fig.vbar(x="x", top="top", width=0.8, color="colour", source=self._sqnr_source)
        fig.add_tools(HoverTool(renderers=[bars], tooltips=[("layer", "@name"), ("SQNR", "@text")]))
        self._sqnr_fig = fig

    def _build_curves(self) -> None:
        self._curve_source = ColumnDataSource(dict(xs=[], ys=[], colour=[], label=[]), name="quantization-curves")
        self._point_source = ColumnDataSource(dict(x=[], y=[], colour=[], label=[], text=[]),
                                              name="quantization-points")
        self._current_source = ColumnDataSource(dict(x=[], y=[]), name="quantization-current")
        fig = figure(height=300, sizing_mode="stretch_width", title="accuracy vs bits per weight",
                     x_axis_label="bits per weight", y_axis_label="accuracy (%)", x_range=Range1d(0.6, 8.4),
                     y_range=Range1d(0, 102), toolbar_location=None, tools="")
        fig.multi_line(xs="xs", ys="ys", line_color="colour", line_width=2, legend_field="label",
                       source=self._curve_source)
        dots = fig.scatter(x="x", y="y", color="colour", size=7, source=self._point_source)
        fig.scatter(x="x", y="y", marker="star", size=20, fill_color="#fde047", line_color="black",
                    source=self._current_source, legend_label="your setting")
        fig.text(x="x", y="y", text="label", x_offset=6, y_offset=-4, text_font_size="10px",
                 source=ColumnDataSource(dict(x=[1, TERNARY_X], y=[0, 0], label=["binary", "ternary"]),
                                         name="quantization-labels"))
        self._float_line = Span(location=0, dimension="width", line_color=FLOAT_COLOUR, line_dash="dotted",
                                line_width=2)
        fig.add_layout(self._float_line)
        fig.add_tools(HoverTool(renderers=[dots], tooltips=[("setting", "@label"), ("accuracy", "@text")]))
        fig.xaxis.ticker = list(range(1, 9))
        fig.legend.location = "bottom_right"
        fig.legend.label_text_font_size = "10px"
        self._curve_fig = fig

    # --- updates: data only --------------------------------------------------------------------------------------

    def _show_histogram(self) -> None:
        r = self.result
        weight, qt, c = r["weight"], r["quantized"], r["channel"]
        values = weight.numpy().ravel()
        deq = qt.dequantized.numpy().ravel()
        grid_lo, grid_hi = (qt.lo, qt.hi) if qt.axis is None else (qt.lo[c], qt.hi[c])
        span = max(float(np.abs(values).max()), float(np.abs(deq).max()), 1e-12)
        edges = np.linspace(-span * 1.02, span * 1.02, BINS + 1)
        counts, _ = np.histogram(values, edges)
        deq_counts, _ = np.histogram(deq, edges)
        top = max(int(counts.max()), int(deq_counts.max()), 1)
        levels = self._grid_levels(qt, c)
        with one_update():
            self._hist_source.data = dict(left=edges[:-1], right=edges[1:], top=counts)
            self._dequant_source.data = dict(left=edges[:-1] + 0.25 * np.diff(edges),
                                             right=edges[1:] - 0.25 * np.diff(edges), top=deq_counts)
            self._grid_source.data = dict(x=levels, y0=np.zeros_like(levels), y1=np.full_like(levels, top * 1.05))
            self._clip_source.data = dict(x=[float(grid_lo), float(grid_hi)], y0=[0, 0], y1=[top * 1.1] * 2,
                                          label=["lo", "hi"])
            which = f", grid of output channel {c}" if qt.axis is not None else ""
            self._hist_fig.title.text = (f"{self.layer}: {values.size:,} weights and the {_grid_name(r['setting'])}"
                                         f"{which}")
            tag_results(self.model_name, self._hist_fig, self._hist_source, self._dequant_source, self._grid_source,
                        self._clip_source)

    @staticmethod
    def _grid_levels(qt: qm.Quantized, channel: int) -> np.ndarray:
        scale = qt.scale if qt.axis is None else qt.scale[channel]
        zero = qt.zero_point if qt.axis is None else qt.zero_point[channel]
        codes = torch.arange(qt.qmin, qt.qmax + 1)
        if qt.qmin == -1 and qt.qmax == 1 and qt.axis is not None:  # binary: only the codes -1 and +1
            codes = torch.tensor([-1, 1])
        return qm.dequantize(codes, scale, zero, None).numpy()

    def _show_arithmetic(self) -> None:
        r = self.result
        setting, weight, qt, c = r["setting"], r["weight"], r["quantized"], r["channel"]
        channel_weights = weight[c].ravel()
        rows = channel_weights.abs().argsort(descending=True)[:EXAMPLES].tolist()  # the largest: clipping shows
        per_channel = qt.axis is not None
        scale = float(qt.scale[c] if per_channel else qt.scale)
        zero = int(qt.zero_point[c] if per_channel else qt.zero_point)
        lo = float(qt.lo[c] if per_channel else qt.lo)
        hi = float(qt.hi[c] if per_channel else qt.hi)
        f = _num
        lines = [f"### The arithmetic of `{self.layer}` (output channel {c} of {weight.shape[0]})"]
        if setting.format == "binary":
            lines.append(f"**Binary (XNOR-Net):** every weight becomes its sign times one scale per output channel, "
                         f"α = mean |w| = **{f(scale)}**. Codes are −1 and +1: one bit each.")
        else:
            outside = int(qm.clipped(weight, qt).sum())
            lines.append(_range_text(setting, lo, hi) + f" **{outside:,}** of the layer's {weight.numel():,} weights "
                         f"({outside / weight.numel():.1%}) lie outside their range and are clamped to the end codes.")
            lines.append(_scale_text(setting, lo, hi, scale, zero, qt.qmin, qt.qmax))
        table = [f"The {EXAMPLES} largest weights of this channel (the first to be clipped):",
                 "| weight w | w / s | code q | ŵ = (q − z) · s | error ŵ − w |", "|---:|---:|---:|---:|---:|"]
        for i in rows:
            w = float(channel_weights[i])
            deq = float(qt.dequantized[c].ravel()[i])
            table.append(f"| {f(w)} | {f(w / scale)} | {f(int(qt.q[c].ravel()[i]))} | {f(deq)} | {f(deq - w)} |")
        lines.append("\n".join(table))
        example = qm.spell_out(float(channel_weights[rows[-1]]), scale, zero, qt.qmin, qt.qmax)
        if setting.format != "binary":
            lines.append("**One weight, end to end:** " + _end_to_end(example, zero, qt.qmin, qt.qmax))
        lines.append(self._activation_text())
        lines.append(f"Weight SQNR of this layer: **{_db(r['weight_sqnr'])}** "
                     f"(signal power over error power; each extra bit adds about 6 dB).")
        self._arithmetic.object = "\n\n".join(lines)
        tag_results(self.model_name, self._arithmetic)

    def _activation_text(self) -> str:
        r = self.result
        act: qm.ActivationQuant | None = r["act"]
        if act is None:
            return ("**One activation:** activations stay float32. Choose activation bits to see the input of this "
                    "layer quantized too.")
        x = self.state.inference.trace[self.layer].input.flatten()
        nonzero = x[x != 0]
        typical = float(nonzero.abs().median()) if len(nonzero) else 0.0
        value = float(x[int((x.abs() - typical).abs().argmin())])
        steps = qm.spell_out(value, float(act.scale), int(act.zero_point), act.qmin, act.qmax)
        return (f"**One activation, end to end** (a typical input value of this layer on your input; the range "
                f"was calibrated on {len(r['calibration']):,} images, s = {_num(float(act.scale))}, "
                f"z = {_num(int(act.zero_point))}): " + _end_to_end(steps, int(act.zero_point), act.qmin, act.qmax))

    def _show_predictions(self) -> None:
        inference = self.state.inference
        float_probs, quant_probs = inference.probs, self.result["probs"]
        # The five classes either model believes most, so that a changed answer is on the chart
        either = torch.maximum(float_probs, quant_probs)
        top = either.topk(min(5, len(either))).indices.tolist()[::-1]  # Bokeh draws y=0 at the bottom
        labels = [inference.model.labels[i] for i in top]
        ys = [float(y) for y in range(len(top))]
        data = dict(y=[y + 0.2 for y in ys] + [y - 0.2 for y in ys],
                    prob=[float(float_probs[i]) for i in top] + [float(quant_probs[i]) for i in top],
                    label=labels * 2, kind=["float32"] * len(top) + ["quantized"] * len(top),
                    colour=[FLOAT_COLOUR] * len(top) + [QUANT_COLOUR] * len(top))
        data["text"] = [f"{p:.1%}" if p >= 0.0005 else "" for p in data["prob"]]  # no column of "0.0%"
        self._pred_source.data = data
        self._pred_fig.yaxis.major_label_overrides = {i: _short(label) for i, label in enumerate(labels)}
        tag_results(self.model_name, self._pred_source, self._pred_fig)

    def _show_sqnr(self) -> None:
        sqnr = self.result["layer_sqnr"]
        names = list(sqnr)
        finite = [min(v, 99.0) for v in sqnr.values()]  # an unchanged layer has infinite SQNR: drawn at the top
        colours = ["#0072B2" if v >= 20 else "#E69F00" if v >= 10 else "#D55E00" for v in finite]
        self._sqnr_source.data = dict(x=list(range(len(names))), top=finite, name=names,
                                      text=[_db(v) for v in sqnr.values()], colour=colours)
        self._sqnr_fig.x_range.start, self._sqnr_fig.x_range.end = -1, len(names)
        self._sqnr_fig.y_range.end = max(70.0, max(finite, default=0) + 5)
        tag_results(self.model_name, self._sqnr_source, self._sqnr_fig)

    def _show_summary(self) -> None:
        r = self.result
        inference = self.state.inference
        fp, qp = inference.probs, r["probs"]
        f_label, q_label = inference.model.labels[int(fp.argmax())], inference.model.labels[int(qp.argmax())]
        same = "the same answer" if f_label == q_label else "**a different answer**"
        ratio = r["size_float"] / r["size_quant"]
        tag_results(self.model_name, self._summary)
        self._summary.object = (
            f"**{r['setting'].describe()}.** On {inference.description}: float32 says **{f_label}** "
            f"({float(fp.max()):.1%}), quantized says **{q_label}** ({float(qp.max()):.1%}), {same}. "
            f"Model size: {plots.format_bytes(r['size_float'])} as float32 → "
            f"**{plots.format_bytes(r['size_quant'])}** ({ratio:.1f}× smaller).")

    def _show_current_point(self) -> None:
        setting = self.setting
        top1 = self._measured.get((self.model_name, setting))
        x = 1.0 if setting.format == "binary" else float(setting.weight_bits)
        self._current_source.data = dict(x=[x], y=[np.nan if top1 is None else 100 * top1])
        tag_results(self.model_name, self._current_source)

    def _show_curves(self) -> None:
        """The curves of the shown model and the current clipping and activation bits, as far as measured."""
        settings = qm.sweep_settings(self.setting)
        curves = {key: ([], []) for key in CURVE_COLOURS}
        dots = dict(x=[], y=[], colour=[], label=[], text=[])
        for setting in settings:
            top1 = self._measured.get((self.model_name, setting))
            if top1 is None:
                continue
            if setting.format == "integer":
                xs, ys = curves[(setting.scheme, setting.granularity)]
                xs.append(setting.weight_bits)
                ys.append(100 * top1)
                colour = CURVE_COLOURS[(setting.scheme, setting.granularity)]
                x = setting.weight_bits
            else:
                colour, x = "#000000", 1 if setting.format == "binary" else TERNARY_X
            dots["x"].append(x)
            dots["y"].append(100 * top1)
            dots["colour"].append(colour)
            dots["label"].append(setting.describe())
            dots["text"].append(f"{top1:.2%}")
        drawn = [key for key, (xs, _) in curves.items() if xs]
        self._curve_source.data = dict(xs=[curves[k][0] for k in drawn], ys=[curves[k][1] for k in drawn],
                                       colour=[CURVE_COLOURS[k] for k in drawn], label=[f"{s}, {g}" for s, g in drawn])
        self._point_source.data = dots
        float_top1 = self._measured.get((self.model_name, None))
        self._float_line.location = 0.0 if float_top1 is None else 100 * float_top1
        self._float_line.visible = float_top1 is not None
        done, dataset = len(dots["x"]), measured.dataset_name(self._model)
        base = self.setting
        self._progress.param.update(value=done, max=len(settings), visible=done < len(settings))
        self._progress_text.object = (
            f"{len(settings)} settings, each measured on {dataset}; clipping {base.clip}, {_acts(base.act_bits)}."
            if done == len(settings) else
            f"⏳ Measuring the curves on {dataset}: {done} of {len(settings)} settings done (clipping {base.clip}, "
            f"{_acts(base.act_bits)}) …")
        tag_results(self.model_name, self._curve_fig, self._curve_source, self._point_source, self._float_line,
                    self._progress, self._progress_text)
        self._show_current_point()

    def _show_accuracy(self) -> None:
        """Float32 and quantized accuracy (or agreement) as far as measured; a placeholder for the rest."""
        what, dataset = measured.meaning(self._model), measured.dataset_name(self._model)
        base = self._measured.get((self.model_name, None))
        quant = self._measured.get((self.model_name, self.setting))
        shown = [f"**{what.capitalize()}** on {dataset}:",
                 f"float32 **{base:.2%}**," if base is not None else "float32 " + MEASURING,
                 f"quantized **{quant:.2%}**" if quant is not None else "quantized " + MEASURING]
        if base is not None and quant is not None:
            drop = 100 * (base - quant)
            shown.append(f"({drop:.2f} points lost)." if drop >= 0 else
                         f"({-drop:.2f} points gained, by luck of rounding).")
        if what == "agreement":
            shown.append("Agreement: how often the quantized model's top class is the float32 model's.")
        self._accuracy.object = " ".join(shown)
        tag_results(self.model_name, self._accuracy)

    # --- layout ---------------------------------------------------------------------------------------------------

    def controls(self) -> pn.Column:
        act = pn.widgets.Select(label="Activation bits", options=ACT_CHOICES, value=self.act_bits, width=260)
        act.link(self, value="act_bits", bidirectional=True)
        return pn.Column(
            pn.widgets.Select.from_param(self.param.layer, label="Layer", width=260),
            pn.widgets.IntSlider.from_param(self.param.bits, label="Weight bits (1 = binary)", width=260),
            act,
            pn.widgets.RadioButtonGroup.from_param(self.param.granularity, width=260),
            pn.widgets.RadioButtonGroup.from_param(self.param.scheme, width=260),
            pn.pane.Markdown("Clipping (where the ends go)", margin=(5, 10, 0, 10)),
            pn.widgets.RadioButtonGroup.from_param(self.param.clip, width=260),
            pn.widgets.IntInput.from_param(self.param.channel, label="Output channel shown", width=260),
            width=290)

    def __panel__(self) -> pn.viewable.Viewable:
        curves = pn.Column(pn.pane.Bokeh(self._curve_fig, sizing_mode="stretch_width"),
                           pn.Row(self._progress, self._progress_text), sizing_mode="stretch_width")
        main = pn.Column(
            self._error, self._summary, self._accuracy,
            pn.Row(pn.pane.Bokeh(self._hist_fig, sizing_mode="stretch_width"), self._arithmetic,
                   sizing_mode="stretch_width"),
            pn.Row(pn.pane.Bokeh(self._pred_fig), pn.pane.Bokeh(self._sqnr_fig, sizing_mode="stretch_width"),
                   sizing_mode="stretch_width"),
            curves,
            pn.pane.Markdown("### Real integers: int8 with onnxruntime", margin=(15, 10, 0, 10)),
            pn.Row(self._int8_button, self._int8_progress), self._int8_text,
            sizing_mode="stretch_width")
        return pn.Row(pn.Column(self._narrative, self.controls(), width=300), main, sizing_mode="stretch_width")


def _painter() -> Callable[[Callable[[], None]], None]:
    """How a worker thread shows its result: on the session's event loop when served (Bokeh documents may
    only be changed there), else (a notebook, a test) at once."""
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        return lambda paint: paint()

    def on_the_loop(paint: Callable[[], None]) -> None:
        try:
            doc.add_next_tick_callback(paint)
        except AttributeError:  # Bokeh has destroyed the document: the session ended, nobody is looking
            log.debug("a quantization result arrived after its session ended")

    return on_the_loop


def _num(x: float) -> str:
    """4 significant digits (integers exactly), with a real minus sign."""
    return (f"{x:,}" if isinstance(x, int) else f"{x:.4g}").replace("-", "−")


def _db(v: float) -> str:
    return "∞ dB (unchanged)" if v == float("inf") else f"{v:.1f} dB"


def _short(label: str) -> str:
    return label if len(label) <= 14 else label[:13] + "…"


def _acts(act_bits: int | None) -> str:
    return "float activations" if act_bits is None else f"{act_bits}-bit activations"


def _grid_name(setting: qm.Setting) -> str:
    if setting.format == "binary":
        return "two binary levels ±α"
    return f"{2 ** setting.weight_bits}-mark {setting.scheme} grid ({setting.granularity})"


def _range_text(setting: qm.Setting, lo: float, hi: float) -> str:
    rule = {"min-max": "the smallest and largest weight",
            "percentile": f"the {100 - qm.PERCENTILE:.1f} and {qm.PERCENTILE} percentiles (the rest is clipped)",
            "mse": "the range with the smallest mean squared error (searched)"}[setting.clip]
    return f"**Range** [lo, hi] = [{_num(lo)}, {_num(hi)}]: {rule}, widened to contain 0 so that 0 stays exact."


def _scale_text(setting: qm.Setting, lo: float, hi: float, scale: float, zero: int, qmin: int, qmax: int) -> str:
    codes = (f"{setting.weight_bits}-bit codes run from qmin = {_num(qmin)} to qmax = {_num(qmax)} "
             f"({qmax - qmin + 1} marks).")
    if setting.scheme == "symmetric":
        return (f"{codes} **Scale** s = max(|lo|, |hi|) / qmax = {_num(max(-lo, hi))} / {qmax} = **{_num(scale)}**; "
                f"**zero point** z = **0**.")
    return (f"{codes} **Scale** s = (hi − lo) / (qmax − qmin) = {_num(hi - lo)} / {qmax - qmin} = **{_num(scale)}**; "
            f"**zero point** z = qmin − round(lo / s) = {_num(qmin)} − round({_num(lo / scale)}) = **{_num(zero)}**.")


def _end_to_end(s: qm.SpelledOut, zero: int, qmin: int, qmax: int) -> str:
    clamp = f", clamped to [{_num(qmin)}, {_num(qmax)}]" if s.code != s.rounded + zero else ""
    return (f"x = {_num(s.value)} → x / s = {_num(s.ratio)} → round = {_num(s.rounded)} → + z ({_num(zero)}){clamp} → "
            f"code **{_num(s.code)}** → (q − z) · s = **{_num(s.dequantized)}**; error {_num(s.error)}.")


INT8_INTRO = ("Everything above is simulated: rounded values kept as float32. The button exports this model to "
              "ONNX and lets onnxruntime quantize it for real: int8 weights per output channel, int8 activations "
              "with ranges calibrated on example images (static, QDQ format). Then both files are measured.")


def _int8_text(files, measured, meaning: str) -> str:
    size_ratio = files.float_bytes / files.int8_bytes
    speed = measured.float_ms / measured.int8_ms
    drop = 100 * (measured.float_top1 - measured.int8_top1)
    return (f"| | float32 ONNX | int8 ONNX | |\n|---|---:|---:|---|\n"
            f"| file size | {plots.format_bytes(files.float_bytes)} | {plots.format_bytes(files.int8_bytes)} | "
            f"{size_ratio:.2f}× smaller |\n"
            f"| latency, {measured.batch} images (median) | {measured.float_ms:.1f} ms | {measured.int8_ms:.1f} ms | "
            f"{speed:.2f}× {'faster' if speed >= 1 else 'slower'} |\n"
            f"| {meaning} on {measured.dataset} | {measured.float_top1:.2%} | {measured.int8_top1:.2%} | "
            f"{drop:.2f} points {'lost' if drop >= 0 else 'gained'} |\n\n"
            f"Files: `{files.float_path.name}`, `{files.int8_path.name}` in `{files.int8_path.parent}`. Latency is "
            "measured on this server's CPU with onnxruntime, the same number of threads for both.")


def steps() -> tuple[Step, ...]:
    """The guided tour: each step sets the lesson's controls."""
    return (
        Step("A ruler with 256 marks",
             "8 bits give 256 integer codes, −128 to 127. One number, the **scale** s, says how far apart the marks "
             "are: every weight is rounded to the nearest mark. The histogram shows the weights in grey, the marks "
             "as thin lines and what the weights became in blue. At 8 bits the blue sits right on the grey, and the "
             "prediction does not move.",
             {"bits": 8, "granularity": "per-tensor", "scheme": "symmetric", "clip": "min-max", "act_bits": 0}),
        Step("Where to put the ends",
             "With only 16 marks (4 bits), where the ruler ends matters. **min-max** covers every weight but spaces "
             "the marks widely; **percentile** ignores the most extreme 0.1 % and clips them (red dashed lines); "
             "**mse** searches for the range with the smallest error. Compare the weight SQNR under the table.",
             {"bits": 4, "granularity": "per-tensor", "clip": "percentile"}),
        Step("One scale per channel",
             "Output channels can have very different ranges. One scale for the whole tensor must fit the widest, "
             "so small channels get only a few marks. **Per-channel** gives each output channel its own scale: "
             "look at the orange and blue curves below, and at how little it costs in size.",
             {"bits": 4, "granularity": "per-channel", "clip": "min-max"}),
        Step("The cliff below 4 bits",
             "Down to 4 bits the accuracy barely moves; at 3 and 2 it falls off a cliff, most steeply per-tensor. "
             "Each bit less doubles the step and costs about 6 dB of SQNR (the bars per layer).",
             {"bits": 2, "granularity": "per-tensor", "clip": "min-max"}),
        Step("Binary and ternary",
             "One bit: only the sign survives, times one scale per output channel, the mean |w| (XNOR-Net). The "
             "black dots on the curve are binary (1 bit) and ternary {−1, 0, +1} (1.58 bits, BitNet b1.58). "
             "Without retraining, this small network does not survive: those papers train with the rounding in place.",
             {"bits": 1}),
        Step("Activations too",
             "Real integer arithmetic needs integer inputs as well. Activations after ReLU are never negative, so a "
             "**symmetric** grid wastes half its codes; **affine** shifts the grid with the zero point z. Ranges "
             "come from calibration images. Try 4 activation bits.",
             {"bits": 8, "granularity": "per-channel", "scheme": "affine", "act_bits": 8, "clip": "min-max"}),
        Step("Real integers",
             "Everything above is simulated: rounded values stored as floats. Press **Build real int8** at the "
             "bottom: the same network is exported to ONNX and quantized by onnxruntime to real int8 (per-channel "
             "weights, calibrated activations): a file about 4× smaller, with its measured speed and accuracy.",
             {"bits": 8, "granularity": "per-channel", "scheme": "symmetric", "act_bits": 8}),
    )

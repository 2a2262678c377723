"""The quantization lesson's figures: each made once (`Histogram()`, ...) and fed data afterwards (`show`).

Every source keeps the name that tests and benchmarks find it by ("quantization-histogram", ...), and every figure
and source that shows a result is tagged with its model (explorer.session.tags), together with its content.
"""

from __future__ import annotations

import numpy as np
import torch
from bokeh.models import HoverTool, Legend, LegendItem, Range1d, Span
from bokeh.plotting import figure

from explorer.core import evaluate
from explorer.lessons import plots
from explorer.lessons.quantization import math as qm
from explorer.lessons.quantization import view_text as text
from explorer.session.tags import tag_results

BINS = 80
CURVE_COLOURS = {  # Okabe-Ito: colour-blind safe
    ("symmetric", "per-tensor"): "#E69F00", ("symmetric", "per-channel"): "#0072B2",
    ("affine", "per-tensor"): "#CC79A7", ("affine", "per-channel"): "#009E73"}
FLOAT_COLOUR, QUANT_COLOUR, CLIP_COLOUR = "#999999", "#0072B2", "#D55E00"
TERNARY_X = qm.TERNARY_BITS


class Histogram:
    """The layer's weights before and after quantization, the grid of values the codes stand for, the range."""

    def __init__(self):
        self.floats = plots.source("left", "right", "top", name="quantization-histogram")
        self.dequantized = plots.source("left", "right", "top", name="quantization-dequantized")
        self.grid = plots.source("x", "y0", "y1", name="quantization-grid")
        self.clip = plots.source("x", "y0", "y1", "label", name="quantization-clip")
        fig = figure(height=340, sizing_mode="stretch_width", title="weights", tools="xwheel_zoom,xpan,reset",
                     x_axis_label="weight value", y_axis_label="number of weights", toolbar_location="above")
        grid = fig.segment(x0="x", x1="x", y0="y0", y1="y1", source=self.grid, line_color="#64748b",
                           line_alpha=0.45, line_width=1)
        floats = fig.quad(left="left", right="right", bottom=0, top="top", source=self.floats,
                          fill_color=FLOAT_COLOUR, fill_alpha=0.55, line_color=None)
        deq = fig.quad(left="left", right="right", bottom=0, top="top", source=self.dequantized,
                       fill_color=QUANT_COLOUR, fill_alpha=0.8, line_color=None)
        clip = fig.segment(x0="x", x1="x", y0="y0", y1="y1", source=self.clip, line_color=CLIP_COLOUR,
                           line_width=2, line_dash="dashed")
        fig.add_layout(Legend(items=[LegendItem(label="float weights", renderers=[floats]),
                                     LegendItem(label="after quantization", renderers=[deq]),
                                     LegendItem(label="grid: the values the codes stand for", renderers=[grid]),
                                     LegendItem(label="clipping range [lo, hi]", renderers=[clip])],
                              orientation="horizontal", ncols=2, label_text_font_size="12px"), "below")
        fig.add_tools(HoverTool(renderers=[floats, deq], tooltips=[("from", "@left{0.0000}"), ("to", "@right{0.0000}"),
                                                                   ("weights", "@top")]))
        self.fig = fig

    def show(self, e: qm.Explained, model_name: str) -> None:
        qt, c = e.quantized, e.channel
        edges, counts, deq_counts = (t.numpy() for t in qm.histogram(e.weight, qt.dequantized, BINS))
        grid_lo, grid_hi = (qt.lo, qt.hi) if qt.axis is None else (qt.lo[c], qt.hi[c])
        top = max(int(counts.max()), int(deq_counts.max()), 1)
        levels = qm.grid_levels(qt, c).numpy()
        quarter = 0.25 * np.diff(edges)  # the quantized bars are drawn narrower, inside the float ones
        # the layer's weights: the same after a new input, then nothing is sent
        plots.set_data(self.floats, dict(left=edges[:-1], right=edges[1:], top=counts))
        plots.set_data(self.dequantized, dict(left=edges[:-1] + quarter, right=edges[1:] - quarter, top=deq_counts))
        plots.set_data(self.grid, dict(x=levels, y0=np.zeros_like(levels), y1=np.full_like(levels, top * 1.05)))
        plots.set_data(self.clip, dict(x=[float(grid_lo), float(grid_hi)], y0=[0, 0], y1=[top * 1.1] * 2,
                                       label=["lo", "hi"]))
        which = f"\nof output channel {c}" if qt.axis is not None else ""
        # lines short enough for a phone
        self.fig.title.text = f"{e.layer}: {e.weight.numel():,} weights and the\n{text.grid_name(e.setting)}{which}"
        tag_results(model_name, self.fig, self.floats, self.dequantized, self.grid, self.clip)


class Predictions:
    """The five classes either model believes most: float32 and quantized probabilities side by side."""

    def __init__(self):
        self.source = plots.source("y", "prob", "label", "kind", "colour", "text", name="quantization-predictions")
        fig = figure(height=230, sizing_mode="stretch_width", title="prediction on your input: float32 vs quantized",
                     x_range=Range1d(0, 1.25), y_range=Range1d(-0.6, 4.6), toolbar_location=None,
                     x_axis_label="probability", tools="")
        fig.hbar(y="y", right="prob", height=0.38, color="colour", source=self.source, legend_field="kind")
        fig.text(x="prob", y="y", text="text", x_offset=4, text_baseline="middle", text_font_size="12px",
                 source=self.source)
        fig.yaxis.axis_label = "class"
        fig.yaxis.ticker = list(range(5))
        fig.legend.location = "bottom_right"
        fig.legend.label_text_font_size = "12px"
        self.fig = fig

    def show(self, float_probs: torch.Tensor, quant_probs: torch.Tensor, labels: tuple[str, ...],
             model_name: str) -> None:
        top = qm.top_classes(float_probs, quant_probs)[::-1]  # Bokeh draws y=0 at the bottom
        names = [labels[i] for i in top]
        ys = [float(y) for y in range(len(top))]
        probs = [float(float_probs[i]) for i in top] + [float(quant_probs[i]) for i in top]
        self.source.data = dict(y=[y + 0.2 for y in ys] + [y - 0.2 for y in ys], prob=probs, label=names * 2,
                                kind=["float32"] * len(top) + ["quantized"] * len(top),
                                colour=[FLOAT_COLOUR] * len(top) + [QUANT_COLOUR] * len(top),
                                text=[f"{p:.1%}" if p >= 0.0005 else "" for p in probs])  # no column of "0.0%"
        self.fig.yaxis.major_label_overrides = {i: text.short(label) for i, label in enumerate(names)}
        tag_results(model_name, self.source, self.fig)


class LayerSqnr:
    """SQNR of every layer's output on the input, in the order the network runs them."""

    def __init__(self):
        self.source = plots.source("x", "top", "name", "text", "colour", name="quantization-sqnr")
        fig = figure(height=230, sizing_mode="stretch_width", title="SQNR of every layer's output on your input",
                     x_axis_label="layer, in the order the network runs them", y_axis_label="SQNR (dB)",
                     toolbar_location=None, tools="", y_range=Range1d(0, 70))
        bars = fig.vbar(x="x", top="top", width=0.8, color="colour", source=self.source)
        fig.add_tools(HoverTool(renderers=[bars], tooltips=[("layer", "@name"), ("SQNR", "@text")]))
        self.fig = fig

    def show(self, sqnr: dict[str, float], model_name: str) -> None:
        names = list(sqnr)
        drawn = [min(v, 99.0) for v in sqnr.values()]  # an unchanged layer has infinite SQNR: drawn at the top
        colours = ["#0072B2" if v >= 20 else "#E69F00" if v >= 10 else "#D55E00" for v in drawn]
        self.source.data = dict(x=list(range(len(names))), top=drawn, name=names,
                                text=[text.db(v) for v in sqnr.values()], colour=colours)
        self.fig.x_range.start, self.fig.x_range.end = -1, len(names)
        self.fig.y_range.end = max(70.0, max(drawn, default=0) + 5)
        tag_results(model_name, self.source, self.fig)


class Curves:
    """Accuracy against bits per weight: one line per scheme × granularity, dots for binary and ternary with their
    95 % intervals as error bars, the float32 accuracy as a dotted line and the student's setting as a star."""

    def __init__(self):
        self.lines = plots.source("xs", "ys", "colour", "label", name="quantization-curves")
        self.points = plots.source("x", "y", "low", "high", "colour", "label", "text", name="quantization-points")
        self.current = plots.source("x", "y", name="quantization-current")
        # on two lines from the start, as `show` writes it: a title that gained a line after the first paint left
        # the old line's lower half drawn above the figure
        fig = figure(height=300, sizing_mode="stretch_width",
                     title="accuracy vs bits per weight\n(bars: 95 % interval)",
                     x_axis_label="bits per weight", y_axis_label="accuracy (%)", x_range=Range1d(0.6, 8.4),
                     y_range=Range1d(0, 102), toolbar_location=None, tools="")
        fig.multi_line(xs="xs", ys="ys", line_color="colour", line_width=2, legend_field="label", source=self.lines)
        fig.segment(x0="x", x1="x", y0="low", y1="high", line_color="colour", line_width=1.5, line_alpha=0.6,
                    source=self.points)  # each point's 95 % interval
        dots = fig.scatter(x="x", y="y", color="colour", size=7, source=self.points)
        fig.scatter(x="x", y="y", marker="star", size=20, fill_color="#fde047", line_color="black",
                    source=self.current, legend_label="your setting")
        labels = plots.source("x", "y", "label", "y_offset", name="quantization-labels")
        # one above the other: 0.58 bits apart, the two words would overlap on a phone
        labels.data = dict(x=[1, TERNARY_X], y=[0, 0], label=["binary", "ternary"], y_offset=[-4, -20])
        fig.text(x="x", y="y", text="label", x_offset=6, y_offset="y_offset", text_font_size="12px", source=labels)
        self.float_line = Span(location=0, dimension="width", line_color=FLOAT_COLOUR, line_dash="dotted",
                               line_width=2)
        fig.add_layout(self.float_line)
        fig.add_tools(HoverTool(renderers=[dots], tooltips=[("setting", "@label"), ("measured", "@text")]))
        fig.xaxis.ticker = list(range(1, 9))
        fig.legend.location = "bottom_right"
        fig.legend.label_text_font_size = "12px"
        self.fig = fig

    def show(self, measured: dict[qm.Setting | None, float], settings: list[qm.Setting], model_name: str,
             meaning: str, n: int) -> None:
        """The curves of `settings` as far as `measured` has them (None: the float32 model), each value a fraction of
        n images: `meaning` "accuracy", or "agreement" (with the float32 model)."""
        lines = {key: ([], []) for key in CURVE_COLOURS}
        dots = dict(x=[], y=[], low=[], high=[], colour=[], label=[], text=[])
        for setting in settings:
            top1 = measured.get(setting)
            if top1 is None:
                continue
            if setting.format == "integer":
                xs, ys = lines[(setting.scheme, setting.granularity)]
                xs.append(setting.weight_bits)
                ys.append(100 * top1)
                colour, x = CURVE_COLOURS[(setting.scheme, setting.granularity)], setting.weight_bits
            else:
                colour, x = "#000000", 1 if setting.format == "binary" else TERNARY_X
            low, high = evaluate.interval_of(top1, n)
            for column, value in (("x", x), ("y", 100 * top1), ("low", 100 * low), ("high", 100 * high),
                                  ("colour", colour), ("label", setting.describe()),
                                  ("text", f"{top1:.2%} ({evaluate.interval_text(top1, n)})")):
                dots[column].append(value)
        drawn = [key for key, (xs, _) in lines.items() if xs]
        # measured over the test set: the same after a new input, then nothing is sent
        plots.set_data(self.lines, dict(xs=[lines[k][0] for k in drawn], ys=[lines[k][1] for k in drawn],
                                        colour=[CURVE_COLOURS[k] for k in drawn],
                                        label=[f"{s}, {g}" for s, g in drawn]))
        plots.set_data(self.points, dots)
        float_top1 = measured.get(None)
        self.float_line.location = 0.0 if float_top1 is None else 100 * float_top1
        self.float_line.visible = float_top1 is not None
        unchanged = "agreement with the unchanged model (%)"
        self.fig.yaxis.axis_label = "accuracy (%)" if meaning == "accuracy" else unchanged
        self.fig.title.text = f"{meaning} vs bits per weight\n(bars: 95 % interval, n = {n:,})"  # lines for a phone
        tag_results(model_name, self.fig, self.lines, self.points, self.float_line)

    def show_current(self, setting: qm.Setting, top1: float | None, model_name: str) -> None:
        x = 1.0 if setting.format == "binary" else float(setting.weight_bits)
        plots.set_data(self.current, dict(x=[x], y=[np.nan if top1 is None else 100 * top1]))
        tag_results(model_name, self.current)

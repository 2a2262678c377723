"""The pruning lesson's figures: built once per session, then only fed data (the names let tests and benchmarks find
their sources in the page). Every `show_*` assigns data computed by the lesson (math.py, measured.py) and tags what
it paints with the model it is about (plots.model_tag)."""

from __future__ import annotations

import numpy as np
import torch
from bokeh.models import ColorBar, HoverTool, LabelSet, Legend, LegendItem, LinearColorMapper, Range1d, Span
from bokeh.plotting import figure

from explorer.core import evaluate
from explorer.lessons import plots
from explorer.lessons.pruning import math as pm
from explorer.lessons.pruning import measured

TOP_K = 5
MAP_SIDE = 160             # largest side of a weight picture sent (block means beyond it)
PRUNED_COLOUR = "#3b3b3b"  # pruned weights are transparent over this background
METHOD_COLOURS = {"magnitude": "#0072B2", "random": "#999999", "filters-l1": "#D55E00", "filters-l2": "#009E73"}
DENSE_COLOUR, PRUNED_BAR = "#0072B2", "#D55E00"


def _bars(title: str, name: str) -> tuple[figure, object]:
    source = plots.source("label", "prob", "text", "colour", name=name)
    fig = figure(height=170, width=300, x_range=Range1d(0, 1.25), y_range=[], toolbar_location=None,
                 title=title, x_axis_label="probability")
    fig.hbar(y="label", right="prob", height=0.7, color="colour", source=source)
    fig.add_layout(LabelSet(x="prob", y="label", text="text", source=source, x_offset=4, y_offset=-7,
                            text_font_size="12px"))
    fig.xaxis.ticker = [0, 0.5, 1]
    return fig, source


def _weights(title: str, name: str) -> tuple[figure, object]:
    source = plots.source("image", "dw", "dh", name=name)
    fig = figure(frame_width=240, frame_height=240, x_range=Range1d(0, 1), y_range=plots.pixel_range(1),
                 toolbar_location=None, title=title, background_fill_color=PRUNED_COLOUR,
                 x_axis_label="input (channel × kernel column)", y_axis_label="output (filter × kernel row)")
    fig.image_rgba(image="image", x=0, y=0, dw="dw", dh="dh", source=source)
    fig.grid.visible = False
    return fig, source


def _layer_bars(title: str, name: str, x_label: str, value: str, colour: str, height: int) -> tuple[figure, object]:
    source = plots.source("layer", value, "text", name=name)
    fig = figure(sizing_mode="stretch_width", max_width=420, height=height, x_range=Range1d(0, 118), y_range=[],
                 toolbar_location=None, title=title, x_axis_label=x_label)
    fig.hbar(y="layer", right=value, height=0.7, color=colour, source=source)
    fig.add_layout(LabelSet(x=value, y="layer", text="text", source=source, x_offset=3, y_offset=-6,
                            text_font_size="12px"))
    fig.yaxis.major_label_text_font_size = "12px"
    return fig, source


class Figures:
    """Every figure of the lesson and its sources (see the module)."""

    def __init__(self, sparsity: int):
        self.dense_fig, self.dense_source = _bars("Dense model", "pruning-dense")
        self.pruned_fig, self.pruned_source = _bars("Pruned model", "pruning-pruned")
        self.colour_mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1)
        self.before_fig, self.before_source = _weights("Weights before", "pruning-weights-before")
        self.after_fig, self.after_source = _weights("After pruning (dark: exactly 0)", "pruning-weights-after")
        # one mapper for both pictures (show_weights): this bar is also the scale of the weights before
        self.after_fig.add_layout(ColorBar(color_mapper=self.colour_mapper, title="weight", width=10), "right")
        self.sparsity_fig, self.sparsity_source = _layer_bars(
            "Zero weights per layer", "pruning-sparsity", "weights that are zero (%)", "zero", PRUNED_BAR, 200)
        self.sensitivity_fig, self.sensitivity_source = _layer_bars(
            "Per-layer sensitivity", "pruning-sensitivity", "accuracy (%)", "top1", DENSE_COLOUR, 120)
        self.sensitivity_source.data.update(low=[], high=[])
        self.sensitivity_fig.segment(x0="low", x1="high", y0="layer", y1="layer", line_color="black", line_width=1.5,
                                     source=self.sensitivity_source)  # each bar's 95 % interval

        self.curve_source = plots.source("xs", "ys", "colour", "method", name="pruning-curves")
        self.curve_points = plots.source("x", "y", "low", "high", "colour", "method", "text",
                                         name="pruning-curve-points")
        fig = figure(sizing_mode="stretch_width", max_width=720, height=300, x_range=Range1d(0, 100),
                     y_range=Range1d(0, 102), toolbar_location=None, title="accuracy against sparsity",
                     x_axis_label="sparsity (%); dashed line: the slider",
                     y_axis_label="accuracy (%)")
        lines = fig.multi_line(xs="xs", ys="ys", line_color="colour", line_width=2, source=self.curve_source)
        fig.segment(x0="x", x1="x", y0="low", y1="high", line_color="colour", line_width=1.5, line_alpha=0.6,
                    source=self.curve_points)  # each point's 95 % interval
        dots = fig.scatter(x="x", y="y", color="colour", size=6, source=self.curve_points)
        fig.add_layout(Legend(items=[LegendItem(label=dict(field="method"), renderers=[lines])]), "right")
        fig.add_tools(HoverTool(renderers=[dots], tooltips=[("method", "@method"), ("sparsity", "@x %"),
                                                            ("measured", "@text")]))
        self.curve_marker = Span(location=sparsity, dimension="height", line_dash="dashed", line_color="black")
        fig.add_layout(self.curve_marker)
        self.curve_fig = fig

    def new_model(self, layers: list[str], what: str) -> None:
        self.curve_fig.yaxis.axis_label = axis_label(what)
        self.sparsity_fig.y_range.factors = list(reversed(layers))
        self.sparsity_fig.height = 60 + 16 * len(layers)

    def show_prediction(self, labels: tuple[str, ...], dense: torch.Tensor, pruned: torch.Tensor, tag: list) -> None:
        """The top classes of the dense and of the pruned model's probabilities."""
        for source, fig, p, colour in ((self.dense_source, self.dense_fig, dense, DENSE_COLOUR),
                                       (self.pruned_source, self.pruned_fig, pruned, PRUNED_BAR)):
            values, indices = p.topk(min(TOP_K, len(p)))
            names = [label(labels, int(i)) for i in indices]
            fig.y_range.factors = list(reversed(names))
            plots.set_data(source, dict(label=names, prob=values.tolist(), text=[f"{v:.1%}" for v in values.tolist()],
                                        colour=[colour] * len(names)))  # the dense model's: sent on a new input only
            source.tags = fig.tags = tag

    def show_weights(self, before: np.ndarray, after: np.ndarray, tag: list) -> tuple[int, int]:
        """Two weight pictures (pm.weight_map), coloured on one scale; returns the (height, width) drawn."""
        limit = plots.max_abs(before)
        small_before, small_after = plots.downsample(before, MAP_SIDE), plots.downsample(after, MAP_SIDE)
        h, w = small_before.shape
        for source, values in ((self.before_source, small_before), (self.after_source, small_after)):
            source.data = dict(image=[plots.to_rgba(values, signed=True, limit=limit)], dw=[w], dh=[h])
            source.tags = tag
        for fig in (self.before_fig, self.after_fig):
            fig.x_range.end, fig.y_range.start = w, h
            fig.frame_height = int(np.clip(240 * h / w, 40, 320))
            fig.tags = tag
        self.colour_mapper.low, self.colour_mapper.high = -limit, limit
        return h, w

    def show_sparsity(self, layer_sparsity: dict[str, float], tag: list) -> None:
        self.sparsity_source.data = dict(
            layer=list(layer_sparsity), zero=[100 * s for s in layer_sparsity.values()],
            text=[f"{100 * s:.1f} %" for s in layer_sparsity.values()])
        self.sparsity_source.tags = self.sparsity_fig.tags = tag

    def show_curves(self, curves: dict[str, measured.Curve], title: str, tag: list) -> None:
        """`curves`: method -> its known points, in %, with their intervals (drawn as error bars)."""
        cols: dict[str, list] = {k: [] for k in ("xs", "ys", "colour", "method")}
        points: dict[str, list] = {k: [] for k in ("x", "y", "low", "high", "colour", "method", "text")}
        for method, c in curves.items():
            colour, name = METHOD_COLOURS[method], pm.METHODS[method].label
            for k, v in zip(cols, (c.sparsity, c.value, colour, name), strict=True):
                cols[k].append(v)
            for x, y, low, high in zip(c.sparsity, c.value, c.low, c.high, strict=True):
                text = f"{y:.1f} % (95 % CI {low:.1f}–{high:.1f} %)"
                for k, v in zip(points, (x, y, low, high, colour, name, text), strict=True):
                    points[k].append(v)
        self.curve_source.data = cols
        self.curve_points.data = points
        self.curve_source.tags = self.curve_points.tags = self.curve_fig.tags = tag
        self.curve_fig.title.text = title

    def show_sensitivity(self, rows: list[tuple[str, float]], title: str, what: str, n: int, tag: list) -> None:
        """`rows`: (layer, value in [0, 1], measured on n images) from the top down, with their 95 % intervals."""
        self.sensitivity_fig.y_range.factors = [name for name, _ in reversed(rows)]
        self.sensitivity_fig.height = 70 + 16 * len(rows)
        intervals = [evaluate.interval_of(a, n) for _, a in rows]
        self.sensitivity_source.data = dict(layer=[name for name, _ in rows], top1=[100 * a for _, a in rows],
                                            text=[f"{100 * a:.1f} %" for _, a in rows],
                                            low=[100 * low for low, _ in intervals],
                                            high=[100 * high for _, high in intervals])
        self.sensitivity_fig.title.text = title
        self.sensitivity_fig.xaxis.axis_label = axis_label(what)
        self.sensitivity_source.tags = self.sensitivity_fig.tags = tag

    def results(self) -> tuple:
        """Every figure and source that shows a result of the current model (tagged with it)."""
        return (self.curve_fig, self.curve_source, self.curve_points, self.sensitivity_fig, self.sensitivity_source,
                self.sparsity_fig, self.sparsity_source, self.dense_fig, self.dense_source, self.pruned_fig,
                self.pruned_source, self.before_fig, self.before_source, self.after_fig, self.after_source)


def axis_label(what: str) -> str:
    """An axis of measured values: accuracy, or agreement, which is not accuracy (measured.quantity)."""
    return "accuracy (%)" if what == "accuracy" else "agreement with the unchanged model (%)"


def label(labels: tuple[str, ...], i: int) -> str:
    return labels[i] if i < len(labels) else str(i)

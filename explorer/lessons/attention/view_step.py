"""Section 3 of the attention lesson: the session's head computed step by step, from the block's input to P·V.

Sources "attention-step-{x, normed, q, k, v, scores, scaled, probs, out}" (one matrix each), "attention-step-row"
(the query's row, outlined) and "attention-softmax-row" (the query's row of P as bars, beside the model's own).
A temperature change reuses the head's Q, K and V (math.with_temperature).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import panel as pn
from bokeh.models import ColorBar, ColumnDataSource, CustomJSHover, HoverTool, LinearColorMapper, Range1d
from bokeh.plotting import figure

from explorer.lessons import plots
from explorer.lessons.attention import math as am
from explorer.lessons.attention.view_figures import PHONE_WIDTH, QUERY_COLOUR, STEP_SIDE, Changed, Shown, outer
from explorer.session.tags import tag_results


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
BAR_HEIGHT = 56  # a matrix's colour bar under it, with its ticks and title (px)


def with_bar(frame_width: int, frame_height: int) -> dict[str, int]:
    """`outer` of a matrix with its colour bar below."""
    size = outer(frame_width, frame_height)
    return dict(size, height=size["height"] + BAR_HEIGHT)


class StepByStep:
    """Section 3: figures made once (in the constructor), sized per model by `resize`, data assigned by `draw`."""

    def __init__(self, changed: Changed, cell_hover: CustomJSHover):
        self._changed = changed
        self.step: am.HeadStep | None = None      # the head shown, at the lesson's temperature
        self._own: am.HeadStep | None = None      # the same head at τ = 1
        self._gap = 0.0                           # largest |own probabilities - traced ones|
        self.text = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
        self._sources: dict[str, ColumnDataSource] = {}
        self._bars: dict[str, ColorBar] = {}
        self.figs: dict[str, figure] = {}
        self._query_row = plots.source("left", "right", "top", "bottom", name="attention-step-row")
        for m in STEPS:
            source = plots.source("image", "dw", "dh", name=f"attention-step-{m.key}")
            mapper = LinearColorMapper(palette=list(plots.palette(m.signed)), low=-1 if m.signed else 0, high=1)
            fig = figure(**with_bar(120, 120), x_range=Range1d(0, 1), y_range=plots.pixel_range(1),
                         tools="", toolbar_location=None, title=m.title, x_axis_location="above", min_border=4)
            fig.title.text_font_size = "12px"
            fig.grid.visible = False
            fig.xaxis.axis_label, fig.yaxis.axis_label = m.columns, "token"
            fig.axis.axis_label_text_font_size = "12px"
            fig.axis.major_label_text_font_size = "12px"
            image = fig.image(image="image", x=0, y=0, dw="dw", dh="dh", color_mapper=mapper, source=source)
            bar = plots.colour_bar(mapper, "weight" if m.key == "probs" else "value")
            bar.update(orientation="horizontal", width="auto", height=10)  # below: rows of matrices keep their width
            fig.add_layout(bar, "below")
            if m.key in QUERY_ROWS:
                fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_color=QUERY_COLOUR,
                         line_width=1.5, source=self._query_row)
            tooltips = [("token (row)", "$y{custom}"), (m.columns, "$x{custom}"), ("value", "@image{0.0000}")]
            fig.add_tools(HoverTool(renderers=[image], tooltips=tooltips,
                                    formatters={"$x": cell_hover, "$y": cell_hover}))
            self._sources[m.key], self._bars[m.key], self.figs[m.key] = source, bar, fig

        self._row_source = plots.source("token", "label", "probs", "own", name="attention-softmax-row")
        fig = figure(height=220, width=PHONE_WIDTH, sizing_mode="stretch_width", max_width=560,
                     x_range=Range1d(-0.5, 1), y_range=Range1d(0, 1.05), tools="", toolbar_location=None,
                     title="the query's row of P")
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
        fig.legend.label_text_font_size = "12px"
        self._row_fig = fig

    def layout(self, controls: pn.viewable.Viewable) -> list:
        return [pn.pane.Markdown("#### 3. One head, step by step", margin=(0, 10),
                                 css_classes=["attention-part-3"]), self.text, controls,
                # each row of matrices goes on under itself where the lesson is narrower (a phone, a tablet)
                pn.Row(*(pn.pane.Bokeh(self.figs[m.key]) for m in STEPS[:2]), stylesheets=[plots.WRAPS]),
                pn.Row(*(pn.pane.Bokeh(self.figs[m.key]) for m in STEPS[2:5]), stylesheets=[plots.WRAPS]),
                pn.Row(*(pn.pane.Bokeh(self.figs[m.key]) for m in STEPS[5:]), stylesheets=[plots.WRAPS]),
                pn.pane.Bokeh(self._row_fig, sizing_mode="stretch_width")]

    def resize(self, inference, a: am.Analysis) -> None:
        """The matrices' sizes for a model's tokens, width D and heads."""
        heads, tokens = a.maps.shape[1], a.maps.shape[-1]
        d_model = int(inference.trace[a.records[0]].output.shape[-1])  # D, the residual stream's width
        if not self._changed("step-size", (heads, tokens, d_model)):
            return
        d = d_model // heads
        px = min(10.0, max(2.0, STEP_SIDE / tokens))
        for m in STEPS:
            cols = {"feature": d_model, "feature of the head": d, "key token": tokens}[m.columns]
            fig = self.figs[m.key]
            widest = min(2.2 * STEP_SIDE, PHONE_WIDTH - outer(0, 0)["width"])  # wide x, a phone's width at most
            fig.update(**with_bar(int(min(widest, max(40, cols * px))), int(tokens * px)))
            fig.x_range.end, fig.y_range.start = cols, tokens
            fig.title.text = m.title.format(T=tokens, D=d_model, d=d)
        self._row_fig.x_range.end = tokens - 0.5

    def draw(self, s: Shown) -> None:
        a, inference = s.analysis, s.inference
        key = (inference, s.index, s.head, s.temperature)
        if self._changed("own-step", key[:3]):  # the head at τ = 1; a temperature change reuses its Q, K, V
            block, x = am.block_and_input(inference.model.module, inference.trace, s.layer)
            self._own = am.head_step(block, x, s.head)
            self._gap = am.largest_difference(self._own.probs, a.maps[s.index, s.head])
        if self._changed("step", key):
            step = self.step = am.with_temperature(self._own, s.temperature)
            for m in STEPS:
                values = getattr(step, m.key).float().numpy()
                self._sources[m.key].data = dict(image=[values], dw=[values.shape[1]], dh=[values.shape[0]])
                plots.set_colour_scale(self._bars[m.key], m.signed, plots.max_abs(values))
            tag_results(s.model, *self._sources.values(), *self.figs.values())
        if not self._changed("step-row", key + (s.query,)):
            return
        step, q, tokens = self.step, s.query, a.maps.shape[-1]
        self._query_row.data = dict(left=[0], right=[10_000], top=[q], bottom=[q + 1])
        labels = [("class" if i < a.grid.first else str(i)) for i in range(tokens)]
        self._row_source.data = dict(token=list(range(tokens)), label=labels, probs=step.probs[q].tolist(),
                                     own=a.maps[s.index, s.head, q].tolist())
        self._row_fig.title.text = f"row {q} of P ({s.query_name})"  # short: the figure is a phone's width
        tag_results(s.model, self._query_row, self._row_source, self._row_fig, self.text)
        d = step.q.shape[1]
        self.text.object = (
            f"Head {s.head} of {s.layer}, computed from the block's input x: d = {d} features per head, so the "
            f"scores are divided by √{d} = {plots.format_value(math.sqrt(d))}, then by the temperature τ = "
            f"{s.temperature:g}. Each row of P is a softmax and sums to 1; the red outline follows the query's "
            f"row (token {q}) from Q to the output. At τ = 1 these probabilities are the model's own: they differ "
            f"from the traced ones by at most {self._gap:.1e}. Hover any cell for its value. Matrices are coloured "
            "to their own largest |value| (blue negative, white 0, red positive); P from 0 (dark purple) to its "
            "largest weight (yellow).")

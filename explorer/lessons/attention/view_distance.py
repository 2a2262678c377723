"""Section 5 of the attention lesson: the mean attention distance of every head, local against global heads.

Source "attention-distance": one dot per layer and head (math.attention_distance, summed up by
math.distance_summary), the session's head outlined.
"""

from __future__ import annotations

import panel as pn
from bokeh.models import HoverTool, Range1d
from bokeh.plotting import figure

from explorer.lessons import plots
from explorer.lessons.attention import math as am
from explorer.lessons.attention.view_figures import PHONE_WIDTH, QUERY_COLOUR, Changed, Shown
from explorer.session.tags import tag_results


class Distance:
    """Section 5: a figure made once (in the constructor), data assigned by `draw`."""

    def __init__(self, changed: Changed):
        self._changed = changed
        self.text = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
        self._source = plots.source("x", "distance", "layer", "head", "label", "text", name="attention-distance")
        self._mean = plots.source("x", "distance")
        self._selected = plots.source("x", "distance")
        fig = figure(width=PHONE_WIDTH, height=300, sizing_mode="stretch_width", max_width=560,
                     x_range=Range1d(-0.5, 1), y_range=Range1d(0, 1), tools="", toolbar_location=None,
                     title="mean attention distance of every head")
        fig.title.text_font_size = "13px"
        fig.xaxis.axis_label, fig.yaxis.axis_label = "layer", "mean attention distance (px)"
        fig.xaxis.ticker.min_interval = 1
        fig.xaxis.minor_tick_line_color = None
        fig.line(x="x", y="distance", line_color="#94a3b8", line_width=2, source=self._mean,
                 legend_label="mean over heads")
        points = fig.scatter(x="x", y="distance", size=11, fill_color=plots.SEQUENTIAL[60], line_color="white",
                             source=self._source, legend_label="one head")
        fig.text(x="x", y="distance", text="text", text_align="center", text_baseline="middle", text_font_size="12px",
                 text_color="white", source=self._source)
        fig.scatter(x="x", y="distance", size=17, fill_alpha=0, line_color=QUERY_COLOUR, line_width=2,
                    source=self._selected, legend_label="selected head")
        self._uniform_line = fig.line(x=[-0.5, 100], y=[0, 0], line_dash="dashed", line_color="#475569",
                                      legend_label="attention spread equally")
        fig.add_tools(HoverTool(renderers=[points], tooltips=[("layer", "@layer"), ("head", "@head"),
                                                              ("distance", "@label")]))
        fig.legend.location = "bottom_right"
        fig.legend.label_text_font_size = "12px"
        self._fig = fig

    def layout(self) -> list:
        return [pn.pane.Markdown("#### 5. Attention distance: local and global heads", margin=(0, 10),
                                 css_classes=["attention-part-5"]), self.text,
                pn.pane.Bokeh(self._fig, sizing_mode="stretch_width")]

    def draw(self, s: Shown) -> None:
        a, inference = s.analysis, s.inference
        layers, heads = a.maps.shape[:2]
        spread = 0.5 / max(heads, 1)  # heads of one layer side by side around the layer's tick
        offsets = [(h - (heads - 1) / 2) * spread for h in range(heads)]
        if self._changed("distance", (inference,)):
            self._draw_all(s, offsets)
        if self._changed("distance-selected", (inference, s.index, s.head)):
            self._selected.data = dict(x=[s.index + offsets[s.head]], distance=[float(a.distance_px[s.index, s.head])])
            tag_results(s.model, self._selected)

    def _draw_all(self, s: Shown, offsets: list[float]) -> None:
        a = s.analysis
        layers, heads = a.maps.shape[:2]
        dist, summary = a.distance_px.numpy(), am.distance_summary(a.distance_px)
        self._source.data = dict(
            x=[ly + offsets[h] for ly in range(layers) for h in range(heads)],
            distance=dist.flatten().tolist(), layer=[a.records[ly] for ly in range(layers) for _ in range(heads)],
            head=[h for _ in range(layers) for h in range(heads)], label=[f"{v:.1f} px" for v in dist.flatten()],
            text=[str(h) for _ in range(layers) for h in range(heads)])
        self._mean.data = dict(x=list(range(layers)), distance=summary.per_layer.tolist())
        self._fig.x_range.end = layers - 0.5
        self._fig.y_range.end = max(float(dist.max()), a.uniform_distance_px) * 1.15
        self._uniform_line.data_source.data = dict(x=[-0.5, layers - 0.5], y=[a.uniform_distance_px] * 2)
        tag_results(s.model, self._source, self._mean, self._uniform_line.data_source, self._fig, self.text)
        local, wide = summary.most_local, summary.most_global
        self.text.object = (
            f"For every head (a dot, numbered by head), the distance from a query patch to the patches it attends "
            f"to, weighted by attention and averaged over the {a.grid.n} query patches (patch centres are "
            f"{a.grid.patch:g} px apart; the class token has no position and is left out). The most local head is "
            f"head {local[1]} of layer {local[0]} ({dist[local]:.1f} px), the most global head {wide[1]} of layer "
            f"{wide[0]} ({dist[wide]:.1f} px); a head spreading its attention equally would score "
            f"{a.uniform_distance_px:.1f} px (dashed).")

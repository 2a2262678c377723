"""The prediction: a top-k bar chart of class probabilities, built once and fed new data.

Class names are text glyphs above their bars, not a categorical y axis: new factors on an axis make
the browser measure the tick labels and lay out the whole page again, 25 ms per input change with
ImageNet names (docs/performance.md). Rows are fixed numbers 0..k-1, so a new input is data only.
"""

from __future__ import annotations

import panel as pn
import param
from bokeh.models import ColumnDataSource, HoverTool, Range1d
from bokeh.plotting import figure

from explorer.ui.state import SessionView, one_update

TOP_K = 5
BAR_COLOR = "#0072B2"  # Okabe-Ito blue: colour-blind safe
TOP_COLOR = "#D55E00"  # Okabe-Ito vermillion for the winner
BAR_HEIGHT = 0.4        # in rows: a bar sits in the lower part of its row, its class name above it


class Predictions(SessionView):
    """Top-k classes for the current input, with probabilities as bars and as text."""

    def __init__(self, **params):
        super().__init__(**params)
        self._source = ColumnDataSource(data=_bars([]))
        fig = figure(height=200, sizing_mode="stretch_width", x_range=Range1d(0, 1.18),
                     y_range=Range1d(-0.5, TOP_K - 0.35), toolbar_location=None, title="Prediction: top classes",
                     x_axis_label="probability")
        bars = fig.hbar(y="bar_y", right="prob", height=BAR_HEIGHT, color="color", source=self._source)
        fig.text(x=0, y="name_y", text="label", text_baseline="bottom", text_font_size="11px", text_color="#1e293b",
                 source=self._source)
        fig.text(x="prob", y="bar_y", text="text", x_offset=4, text_baseline="middle", text_font_size="11px",
                 text_color="#334155", source=self._source)
        fig.add_tools(HoverTool(renderers=[bars], tooltips=[("class", "@label"), ("probability", "@text")]))
        fig.xaxis.ticker = [0, 0.25, 0.5, 0.75, 1]
        fig.yaxis.visible = False
        fig.ygrid.visible = False
        self._figure = fig
        self._summary = pn.pane.Markdown("", css_classes=["prediction-summary"], margin=(0, 10))
        self._plot = pn.pane.Bokeh(fig, sizing_mode="stretch_width")
        self._update()

    @param.depends("state.inference", watch=True)
    def _update(self) -> None:
        inference = self.state.inference
        if inference is None:
            return
        top = inference.top(TOP_K)
        label, prob = top[0]
        with one_update():
            self._source.data = _bars(top)
            self._summary.object = f"The model says **{label}** ({prob:.1%}) for {inference.description}."

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self._summary, self._plot, sizing_mode="stretch_width")


def _bars(top: list[tuple[str, float]]) -> dict[str, list]:
    rows = list(reversed(top))  # row 0 is at the bottom: the most likely class is drawn on top
    return {"label": _distinct([name for name, _ in rows]), "prob": [p for _, p in rows],
            "bar_y": [i - 0.2 for i in range(len(rows))], "name_y": [i + 0.05 for i in range(len(rows))],
            "text": [f"{p:.1%}" for _, p in rows],
            "color": [TOP_COLOR if i == len(rows) - 1 else BAR_COLOR for i in range(len(rows))]}


def _distinct(names: list[str]) -> list[str]:
    """Bar labels must differ: ImageNet has two classes named "crane" and two named "maillot"."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out

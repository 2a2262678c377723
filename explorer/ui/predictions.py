"""The prediction: a top-k bar chart of class probabilities, built once and fed new data."""

from __future__ import annotations

import panel as pn
import param
from bokeh.models import ColumnDataSource, HoverTool, LabelSet, Range1d
from bokeh.plotting import figure

from explorer.ui.state import SessionView, one_update

TOP_K = 5
BAR_COLOR = "#0072B2"  # Okabe-Ito blue: colour-blind safe
TOP_COLOR = "#D55E00"  # Okabe-Ito vermillion for the winner


class Predictions(SessionView):
    """Top-k classes for the current input, with probabilities as bars and as text."""


    def __init__(self, **params):
        super().__init__(**params)
        self._source = ColumnDataSource(data=_bars([]))
        fig = figure(height=190, sizing_mode="stretch_width", x_range=Range1d(0, 1.18), y_range=[],
                     toolbar_location=None, title="Prediction: top classes", x_axis_label="probability")
        fig.hbar(y="label", right="prob", height=0.7, color="color", source=self._source)
        fig.add_layout(LabelSet(x="prob", y="label", text="text", source=self._source, x_offset=4, y_offset=-7,
                                text_font_size="11px"))
        fig.add_tools(HoverTool(tooltips=[("class", "@label"), ("probability", "@text")]))
        fig.xaxis.ticker = [0, 0.25, 0.5, 0.75, 1]
        fig.yaxis.axis_label = "class"
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
            self._figure.y_range.factors = [name for name, _ in reversed(top)]
            self._source.data = _bars(top)
            self._summary.object = f"The model says **{label}** ({prob:.1%}) for {inference.description}."

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self._summary, self._plot, sizing_mode="stretch_width")


def _bars(top: list[tuple[str, float]]) -> dict[str, list]:
    rows = list(reversed(top))  # Bokeh draws the first factor at the bottom
    return {"label": _distinct([name for name, _ in rows]), "prob": [p for _, p in rows],
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

"""The prediction: the top-k classes with their probabilities, as a sentence and as bars.

The bars are HTML (one list, each bar a box of the probability's width), not a Bokeh figure: on
every input change the canvas version spent 6-10 ms painting its ten labels, 25 ms laying out the
page when a categorical axis got new ImageNet names (docs/performance.md); the list is one small
DOM update. Being text, the names and numbers are also read out by screen readers and can be
selected and copied.
"""

from __future__ import annotations

import html

import panel as pn
import param

from explorer.session.state import SessionView, one_update
from explorer.session.tags import tag_results

TOP_K = 5
BAR_COLOR = "#0072B2"  # Okabe-Ito blue: colour-blind safe
TOP_COLOR = "#D55E00"  # Okabe-Ito vermillion for the winner

STYLE = f"""
.bars {{ list-style: none; margin: 0; padding: 0; font-size: var(--bokeh-font-size, 12px); color: #1e293b; }}
.bars li {{ display: grid; grid-template-columns: minmax(8em, 14em) 1fr; align-items: center; gap: 8px;
           margin: 3px 0; }}
.name {{ overflow: hidden; text-overflow: ellipsis; white-space: nowrap; text-align: right; }}
.track {{ display: flex; align-items: center; gap: 4px; }}
.bar {{ height: 1.2em; background: {BAR_COLOR}; min-width: 1px; }}
.top .bar {{ background: {TOP_COLOR}; }}
.top .name {{ font-weight: 600; }}
.value {{ color: #334155; font-variant-numeric: tabular-nums; }}
"""


class Predictions(SessionView):
    """Top-k classes for the current input, with probabilities as bars and as text."""

    def __init__(self, **params):
        super().__init__(**params)
        self._summary = pn.pane.Markdown("", css_classes=["prediction-summary"], margin=(0, 10))
        self._bars = pn.pane.HTML("", css_classes=["prediction-bars"], sizing_mode="stretch_width",
                                  margin=(0, 10, 10, 10), stylesheets=[STYLE])
        self._update()

    @param.depends("state.inference", watch=True)
    def _update(self) -> None:
        inference = self.state.inference
        if inference is None:
            return
        top = inference.top(TOP_K)
        label, prob = top[0]
        with one_update():
            self._bars.object = bars_html(top)
            self._summary.object = f"The model says **{label}** ({prob:.1%}) for {inference.description}."
            tag_results(inference.model.name, self._summary, self._bars)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self._summary, self._bars, sizing_mode="stretch_width")


def bars_html(top: list[tuple[str, float]]) -> str:
    """The top classes, most likely first: a name, a bar as wide as its share of the track, the percentage."""
    rows = []
    for i, (name, prob) in enumerate(top):
        width = f"{min(max(prob, 0.0), 1.0) * 88:.2f}%"  # 88 %: room for the number beside a full bar
        rows.append(f'<li class="{"top" if i == 0 else "other"}"><span class="name" title="{html.escape(name)}">'
                    f'{html.escape(name)}</span><span class="track"><span class="bar" style="width: {width}">'
                    f'</span><span class="value">{prob:.1%}</span></span></li>')
    return (f'<ol class="bars" aria-label="The {len(top)} most likely classes and their probabilities">'
            f'{"".join(rows)}</ol>')

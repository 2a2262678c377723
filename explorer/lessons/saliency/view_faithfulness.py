"""Section 2 of the saliency lesson: deletion and insertion curves per method, their areas, and which method is most
faithful on this input, in words read off those areas.

Sources "saliency-deletion" and "saliency-insertion": one line per method whose curve has been computed, each
`Curve.fractions` against `Curve.probabilities` exactly as faithfulness.py returns them (fractions of the pixels
removed or revealed, the target class's probability); the areas in the legend and the table are `Curve.area`.
"""

from __future__ import annotations

import panel as pn
from bokeh.models import HoverTool, Legend, LegendItem, NumeralTickFormatter, Range1d
from bokeh.plotting import figure

from explorer.lessons import plots
from explorer.lessons.saliency import faithfulness as fm
from explorer.lessons.saliency import math as sm
from explorer.session.tags import tag_results

METHOD_COLOURS = dict(zip(sm.METHODS, plots.CATEGORICAL, strict=False))

EXPLAIN = (
    "A map is *faithful* when the pixels it calls important really matter to the model. **Deletion** (left) "
    "turns your pixels black, the most important first, and follows the class probability: a faithful map makes "
    "it fall fast, so a **small area** under the curve is good. **Insertion** (right) starts from a blurred copy "
    "of your input and puts your sharp pixels back, the most important first: a faithful map makes it rise fast, "
    "so a **large area** is good.")


def _curve_figure(title: str, name: str, xlabel: str) -> tuple[figure, object]:
    source = plots.source("xs", "ys", "colour", "method", name=name)
    fig = figure(sizing_mode="stretch_width", max_width=470, height=300, x_range=Range1d(0, 1),
                 y_range=Range1d(0, 1.02), toolbar_location=None, tools="", title=title, x_axis_label=xlabel,
                 y_axis_label="probability of the class")
    lines = fig.multi_line(xs="xs", ys="ys", line_color="colour", line_width=2.5, source=source)
    fig.add_layout(Legend(items=[LegendItem(label=dict(field="method"), renderers=[lines])],
                          label_text_font_size="12px"), "right")
    fig.add_tools(HoverTool(renderers=[lines], tooltips=[("method", "@method"), ("fraction", "$x{0%}"),
                                                         ("probability", "$y{0.0%}")]))
    fig.xaxis.formatter = NumeralTickFormatter(format="0%")
    fig.yaxis.formatter = NumeralTickFormatter(format="0%")
    return fig, source


class Faithfulness:
    """Section 2 (see the module): figures made once; `show` adds one method's curves."""

    def __init__(self):
        self.deletion_fig, self.deletion = _curve_figure("Deletion: most important pixels removed first",
                                                         "saliency-deletion", "pixels removed")
        self.insertion_fig, self.insertion = _curve_figure("Insertion: most important pixels put back first",
                                                           "saliency-insertion", "pixels put back")
        self.curves: dict[str, tuple[fm.Curve, fm.Curve]] = {}  # method -> (deletion, insertion) shown
        self.text = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10),
                                     css_classes=["saliency-faithfulness"])

    def clear(self, model: str) -> None:
        self.curves = {}
        self._paint(model)

    def computing(self, model: str) -> None:
        """The curves are asked for: say so under the empty figures until the first method's arrive (the lesson's
        progress bar is at its top, out of view when the student has scrolled here)."""
        if not self.curves:
            self.text.object = f"Computing the curves: 0 of {len(sm.METHODS)} methods …"
            tag_results(model, self.text)

    def show(self, method: str, deletion: fm.Curve, insertion: fm.Curve, model: str) -> None:
        self.curves[method] = (deletion, insertion)
        self._paint(model)

    def _paint(self, model: str) -> None:
        methods = [m for m in sm.METHODS if m in self.curves]
        for k, (source, fig) in enumerate(((self.deletion, self.deletion_fig), (self.insertion, self.insertion_fig))):
            curves = [self.curves[m][k] for m in methods]
            source.data = dict(xs=[c.fractions for c in curves], ys=[c.probabilities for c in curves],
                               colour=[METHOD_COLOURS[m] for m in methods],
                               method=[f"{sm.METHODS[m]}: area {c.area:.3f}" for m, c in zip(methods, curves,
                                                                                             strict=True)])
            tag_results(model, source, fig)
        self.text.object = verdict(self.curves) if methods else ""
        tag_results(model, self.text)

    def layout(self) -> list:
        return [pn.pane.Markdown("#### 2. Faithfulness: do the pixels a map points at matter?", margin=(0, 10),
                                 css_classes=["saliency-part-2"]),
                pn.pane.Markdown(EXPLAIN, sizing_mode="stretch_width", margin=(0, 10)),
                # side by side where they fit, one above the other on a phone (each in a column: plots.WRAPS)
                pn.Row(*(pn.Column(pn.pane.Bokeh(fig, sizing_mode="stretch_width"), max_width=470,
                                   margin=0, **plots.share_of_row(360))
                         for fig in (self.deletion_fig, self.insertion_fig)),
                       sizing_mode="stretch_width", stylesheets=[plots.WRAPS]),
                self.text]


def verdict(curves: dict[str, tuple[fm.Curve, fm.Curve]]) -> str:
    """The areas as a table, and in words which method did best by each test (methods whose areas read the same at
    the table's three decimals tie)."""
    rows = "\n".join(f"| {sm.METHODS[m]} | {d.area:.3f} | {i.area:.3f} |" for m, (d, i) in curves.items())
    table = "| method | deletion area (smaller is better) | insertion area (larger is better) |\n|---|---|---|\n" + rows
    if len(curves) < len(sm.METHODS):
        return table + f"\n\nComputing the curves: {len(curves)} of {len(sm.METHODS)} methods …"
    by_deletion = best({m: d.area for m, (d, _) in curves.items()}, min)
    by_insertion = best({m: i.area for m, (_, i) in curves.items()}, max)
    d, i = curves[by_deletion[0]][0].area, curves[by_insertion[0]][1].area
    if by_deletion == by_insertion:
        words = (f"On this input {names(by_deletion)} {'is' if len(by_deletion) == 1 else 'are'} the most faithful by "
                 f"both tests: removing {'its' if len(by_deletion) == 1 else 'their'} pixels first lowers the "
                 f"probability fastest (area {d:.3f}) and putting them back first raises it fastest (area {i:.3f}).")
    else:
        words = (f"On this input the two tests disagree: by deletion the most faithful "
                 f"{'is' if len(by_deletion) == 1 else 'are'} {names(by_deletion)} (smallest area, {d:.3f}), by "
                 f"insertion {names(by_insertion)} (largest area, {i:.3f}). Each test rewards a different kind of "
                 "map.")
    return table + "\n\n" + words


def best(areas: dict[str, float], pick) -> tuple[str, ...]:
    """The methods whose area, at three decimals, is the smallest (pick=min) or largest (pick=max)."""
    shown = {m: f"{a:.3f}" for m, a in areas.items()}
    top = shown[pick(areas, key=areas.get)]
    return tuple(m for m in areas if shown[m] == top)


def names(methods: tuple[str, ...]) -> str:
    bold = [f"**{sm.METHODS[m]}**" for m in methods]
    return bold[0] if len(bold) == 1 else ", ".join(bold[:-1]) + " and " + bold[-1]

"""Section 3 of the saliency lesson: the model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency
Maps", 2018), on its button, with progress.

sanity.py's cascade (`randomisation_steps`) re-initialises the model's layers on a private copy, one more per step
from the output down, and compares each method's map on that copy with its map on the real model
(`rank_correlation`: Spearman's correlation of |map|). Each step is one request of the lesson's slow work (strand
"sanity"); its answer adds one point per method to source "saliency-sanity" (x: layers randomised, y: the
correlation exactly as sanity.py gives it; 1 at x = 0, the map itself) and asks for the next step. A method whose
map still correlates above sanity.SURVIVAL_THRESHOLD once every layer is random survives the check
(`randomisation_check`'s rule): it shows the model's input, not what the model learned, and its line's legend, its
map's title and outline in section 1, and the text below say so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import panel as pn
from bokeh.models import HoverTool, Legend, LegendItem, Range1d, Span
from bokeh.plotting import figure

from explorer.core import zoo
from explorer.lessons import plots
from explorer.lessons.saliency import math as sm
from explorer.lessons.saliency import sanity as sn
from explorer.lessons.saliency.view_faithfulness import METHOD_COLOURS
from explorer.lessons.saliency.view_maps import FLAG_COLOUR
from explorer.session import background
from explorer.session.tags import tag_results
from explorer.session.work import SlowWork

EXPLAIN = (
    "If a map explains the *model*, destroying the model should destroy the map. The check replaces the weights of "
    "one more layer by random ones at each step, from the output down, and measures how similar each method's new "
    "map is to its original: the rank correlation of the pixels' |attribution| (1: the same ranking, 0: unrelated). "
    f"A line that ends above the dashed line (ρ = {sn.SURVIVAL_THRESHOLD}) belongs to a method whose map survives: it "
    "shows the input, whatever the model learned.")

Work = Callable[[], tuple | None]  # the lesson's (inference, settings, methods shown), None while a map is missing


class Sanity:
    """Section 3 (see the module): the figure made once, the button, one request per randomisation step."""

    def __init__(self, strand: SlowWork, work: Work):
        self._strand, self._work = strand, work
        self.source = plots.source("xs", "ys", "colour", "method", name="saliency-sanity")
        self.points = plots.source("x", "y", "colour", "method", "layer")
        fig = figure(sizing_mode="stretch_width", max_width=760, height=380, x_range=Range1d(0, 1),
                     y_range=Range1d(-0.25, 1.05), toolbar_location=None, tools="",
                     title="Rank correlation with the original map",
                     x_axis_label="randomised from the output down to this layer", y_axis_label="rank correlation")
        lines = fig.multi_line(xs="xs", ys="ys", line_color="colour", line_width=2.5, source=self.source)
        dots = fig.scatter(x="x", y="y", color="colour", size=6, source=self.points)
        fig.add_layout(Legend(items=[LegendItem(label=dict(field="method"), renderers=[lines])],
                              label_text_font_size="12px"), "right")
        fig.add_tools(HoverTool(renderers=[dots], tooltips=[("method", "@method"), ("randomised down to", "@layer"),
                                                            ("rank correlation", "@y{0.000}")]))
        fig.add_layout(Span(location=0, dimension="width", line_color="#94a3b8"))
        fig.add_layout(Span(location=sn.SURVIVAL_THRESHOLD, dimension="width", line_color=FLAG_COLOUR,
                            line_dash="dashed"))
        self.fig = fig
        self.button = pn.widgets.Button(label="Run the sanity check", color="primary", width=220,
                                        disabled=True)
        self.button.on_click(lambda _: self.run())
        self.progress = pn.indicators.Progress(value=0, max=1, width=300, visible=False)
        self.text = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10), css_classes=["saliency-sanity"])
        self.on_flags: Callable[[dict[str, bool | None]], None] = lambda flags: None  # the maps show the flags
        self._layers: tuple[str, ...] = ()
        self._correlation: dict[str, list[float]] = {}
        self._run = 0  # which run the answers belong to: a new run or a cleared check drops the old one's

    def new_model(self, model: zoo.ZooModel) -> None:
        self._layers = sn.randomisation_order(model.module)
        self.fig.x_range.end = max(len(self._layers), 1)
        # each step's tick names the layer randomised last: the x axis reads from the output down
        self.fig.xaxis.ticker = list(range(len(self._layers) + 1))
        self.fig.xaxis.major_label_overrides = dict(enumerate(("none", *self._layers)))
        self.fig.xaxis.major_label_orientation = 0.8 if len(self._layers) > 8 else "horizontal"
        self.clear(model.name)

    def ready(self, maps_done: bool) -> None:
        """Whether every map is shown, so that the check has originals to compare with."""
        self.button.disabled = not maps_done or self._correlation != {}

    def clear(self, model: str) -> None:
        """Forget the check (a map changed): no lines, no flags, the button waits for the maps."""
        self._run += 1
        self._correlation = {}
        self.button.disabled = True
        self.progress.visible = False
        plots.set_data(self.source, dict(xs=[], ys=[], colour=[], method=[]))  # already empty: nothing sent
        plots.set_data(self.points, dict(x=[], y=[], colour=[], method=[], layer=[]))
        self.text.object = (f"Press *Run the sanity check* to randomise the model's {len(self._layers)} layers with "
                            "weights one at a time (it computes every map again at each step).")
        self.on_flags({m: None for m in sm.METHODS})
        tag_results(model, self.source, self.points, self.fig, self.text)

    def run(self) -> None:
        work = self._work()
        if work is None or not self._layers:
            return
        inference, settings, methods = work
        self._run += 1
        self._correlation = {m: [1.0] for m in methods}  # before any layer is randomised the map is the original
        self.button.disabled = True
        self.progress.param.update(max=len(self._layers), value=0, visible=True)
        cascade = sn.randomisation_steps(inference.model.module, inference.x, settings, methods)
        self._step(self._run, inference.model.name, cascade, 0)

    def _step(self, run: int, model: str, cascade: Iterator[tuple[str, dict[str, float]]], k: int) -> None:
        """Ask for step k of the cascade (one more layer randomised, every map again), show it, ask for the next."""
        self.text.object = f"◔ Randomising {self._layers[k]} ({k + 1} of {len(self._layers)}) and computing the maps …"
        tag_results(model, self.text)

        def show(step: tuple[str, dict[str, float]]) -> None:
            if run != self._run:
                return
            for m, r in step[1].items():
                self._correlation[m].append(r)
            self.progress.value = k + 1
            self._paint(model)
            if k + 1 < len(self._layers):
                self._step(run, model, cascade, k + 1)
            else:
                self._finish(model)

        def compute() -> tuple[str, dict[str, float]] | None:
            with background.sweep_turn():  # after every student's own maps (explorer/session/background.py)
                return next(cascade) if run == self._run else None

        # one step at a time, each on the slow work's thread: the cascade's private copy is only touched there
        self._strand.request((run, k), compute, show)

    def _paint(self, model: str) -> None:
        methods = list(self._correlation)
        xs = [list(range(len(self._correlation[m]))) for m in methods]
        self.source.data = dict(xs=xs, ys=[self._correlation[m] for m in methods],
                                colour=[METHOD_COLOURS[m] for m in methods], method=[sm.METHODS[m] for m in methods])
        names = ("none (the real model)", *self._layers)
        self.points.data = dict(
            x=[x for xm in xs for x in xm], y=[y for m in methods for y in self._correlation[m]],
            colour=[METHOD_COLOURS[m] for m in methods for _ in self._correlation[m]],
            method=[sm.METHODS[m] for m in methods for _ in self._correlation[m]],
            layer=[names[i] for xm in xs for i in xm])
        tag_results(model, self.source, self.points, self.fig)

    def _finish(self, model: str) -> None:
        self.progress.visible = False
        # randomisation_check's rule: still above the threshold once every layer is random
        survives = {m: sn.survives(c) for m, c in self._correlation.items()}
        self.source.data = dict(self.source.data, method=[
            sm.METHODS[m] + (" ⚠ survives" if survives[m] else "") for m in self._correlation])
        flagged = [m for m, s in survives.items() if s]
        final = {m: c[-1] for m, c in self._correlation.items()}
        if flagged:
            names = ", ".join(f"**{sm.METHODS[m]}** (ρ = {final[m]:.2f})" for m in flagged)
            words = (f"⚠ With every layer random, these maps still resemble their originals: {names}. They fail the "
                     "check: they show what is in the input more than what the model learned.")
        else:
            words = "Every map changed once the model was random: every method passes the check on this input."
        blank = [sm.METHODS[m] for m, c in self._correlation.items() if any(math.isnan(r) for r in c)]
        if blank:  # rank_correlation is NaN for a constant map: nothing to rank
            words += (f" Where a line stops ({', '.join(blank)}), the map had become the same value everywhere (all "
                      "zero), so there is no ranking to compare: it certainly changed.")
        self.text.object = words
        self.on_flags({m: survives.get(m) for m in sm.METHODS})
        tag_results(model, self.text)

    def layout(self) -> list:
        return [pn.pane.Markdown("#### 3. Sanity check: randomise the model", margin=(0, 10),
                                 css_classes=["saliency-part-3"]),
                pn.pane.Markdown(EXPLAIN, sizing_mode="stretch_width", margin=(0, 10)),
                pn.Row(self.button, self.progress, stylesheets=[plots.WRAPS]),
                pn.pane.Bokeh(self.fig, sizing_mode="stretch_width", max_width=760), self.text]

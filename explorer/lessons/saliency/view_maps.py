"""Section 1 of the saliency lesson: the student's input with each method's map over it, side by side.

One figure per method (math.METHODS), made once, as large as the lesson's width allows: the input picture (source
"saliency-picture", shared), the method's map over it (source "saliency-map-<method>": `Attribution.heat` exactly as
math.attribute returns it, as float32) and a colour bar. Colours follow plots.py: the diverging map, white at exactly
0, red for pixels that raise the class score and blue for those that lower it, from −L to +L where L is the largest
|value| of that map alone.
Each map gets its own L because the methods measure different things in different units (a gradient, a share of
the logit, a weighted feature map); the colour bar beside each says what L is. Grad-CAM keeps only positive evidence
(a ReLU), so it has no blue. The map is drawn at the lesson's opacity so that the input stays visible underneath.
"""

from __future__ import annotations

import numpy as np
import panel as pn
from bokeh.models import HoverTool, LinearColorMapper, Range1d
from bokeh.plotting import figure

from explorer.lessons import plots
from explorer.lessons.saliency import math as sm
from explorer.session.tags import tag_results

# A map grows with the lesson's width: as many maps of at least LEAST_WIDTH px as fit side by side share a row, none
# wider than MOST_WIDTH px (two per row at 1440 px beside the sidebar, three at 1920, one on a phone or a tablet).
LEAST_WIDTH, MOST_WIDTH = 460, 540
AXES_WIDTH, AXES_HEIGHT = 138, 70  # around the plot area: the y axis and the colour bar; the title and the x axis
# Width / height of a whole figure whose plot area is square at 470 px wide: from a phone's 390 px to MOST_WIDTH, a
# pixel is drawn square to within 5 %
ASPECT = 470 / (470 - AXES_WIDTH + AXES_HEIGHT)
FLAG_COLOUR = "#D55E00"  # the title and outline of a map that survived the randomisation check
TITLE_COLOUR = "#1e293b"
SURVIVES = " ⚠ survives"  # the title of a map that survived the randomisation check (section 3)


class MapFigure:
    """One method's figure: the input, the map over it, its colour bar; data assigned by `show`."""

    def __init__(self, method: str, picture):
        self.method, self.title = method, sm.METHODS[method]
        self._state = ""  # after the title: computing, not available, or survives the sanity check
        self.source = plots.source("image", "dw", "dh", name=f"saliency-map-{method}")
        self.mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1)
        fig = figure(sizing_mode="scale_width", aspect_ratio=ASPECT, x_range=Range1d(0, 1),
                     y_range=plots.pixel_range(1), toolbar_location=None, tools="", title=self.title,
                     x_axis_label="x (px)", y_axis_label="y (px)", min_border_right=4)
        fig.title.text_font_size = "13px"
        fig.grid.visible = False
        fig.image_rgba(image="image", x=0, y=0, dw="dw", dh="dh", source=picture)
        self.heat = fig.image(image="image", x=0, y=0, dw="dw", dh="dh", color_mapper=self.mapper,
                              source=self.source)
        self.bar = plots.colour_bar(self.mapper, "attribution")
        fig.add_layout(self.bar, "right")
        fig.add_tools(HoverTool(renderers=[self.heat], tooltips=[("pixel (x, y)", "($x{0}, $y{0})"),
                                                                 ("attribution", "@image{0.000e+0}")]))
        self.fig = fig

    def clear(self, side: tuple[int, int], model: str) -> None:
        """No map yet for a new input: only its picture, of this size (height, width), for this model."""
        self.source.data = dict(image=[], dw=[], dh=[])
        self.fig.x_range.end, self.fig.y_range.start = side[1], side[0]
        self.waiting(True)
        tag_results(model, self.source, self.fig)

    def unavailable(self, model: str) -> None:
        """This method cannot explain this model (the lesson's error pane says why)."""
        self.source.data = dict(image=[], dw=[], dh=[])
        self._state = " (not available)"
        self.fig.title.text = self.title + self._state
        tag_results(model, self.source, self.fig)

    def waiting(self, computing: bool) -> None:
        """Say whether a new map is on its way."""
        self._state = " (computing …)" if computing else self._state.replace(" (computing …)", "")
        self.fig.title.text = self.title + self._state

    def show(self, a: sm.Attribution, model: str) -> None:
        heat = np.asarray(a.heat, dtype=np.float32)
        h, w = heat.shape
        self.source.data = dict(image=[heat], dw=[w], dh=[h])
        plots.set_colour_scale(self.bar, signed=True, limit=plots.max_abs(heat))
        self.fig.x_range.end, self.fig.y_range.start = w, h
        self._state = ""
        self.fig.title.text = self.title
        tag_results(model, self.source, self.fig)

    def flag(self, survives: bool | None) -> None:
        """Mark the map as one that survived randomising the model (None: not checked)."""
        self.fig.title.text_color = FLAG_COLOUR if survives else TITLE_COLOUR
        self.fig.outline_line_color = FLAG_COLOUR if survives else "#e5e7eb"
        self.fig.outline_line_width = 3 if survives else 1
        self._state = SURVIVES if survives else self._state.replace(SURVIVES, "")
        self.fig.title.text = self.title + self._state

    def set_opacity(self, opacity: float) -> None:
        self.heat.glyph.global_alpha = opacity


class Maps:
    """Section 1: every method's figure (see the module); `show` assigns one method's map."""

    def __init__(self, opacity: float):
        self.picture = plots.source("image", "dw", "dh", name="saliency-picture")
        self.figures = {method: MapFigure(method, self.picture) for method in sm.METHODS}
        for f in self.figures.values():
            f.set_opacity(opacity)
        self.gap_text = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10),
                                         css_classes=["saliency-gap"])
        self.target_text = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10),
                                            css_classes=["saliency-target"])

    def new_input(self, view: np.ndarray, model: str) -> None:
        """A new input: its picture in every figure, and no maps until they are computed for it."""
        h, w = view.shape[:2]
        self.picture.data = dict(image=[plots.picture_to_rgba(view)], dw=[w], dh=[h])
        for f in self.figures.values():
            f.clear((h, w), model)
        self.gap_text.object = ""
        tag_results(model, self.picture, self.gap_text)

    def show(self, a: sm.Attribution, model: str) -> None:
        self.figures[a.method].show(a, model)
        if a.completeness_gap is not None:
            self.gap_text.object = gap_text(a.completeness_gap)
            tag_results(model, self.gap_text)

    def layout(self, controls: pn.viewable.Viewable) -> list:
        """The section: its controls (CSS class saliency-controls) above its maps; on a phone under them, where seven
        controls one above the other would fill the first screen and push the maps off it (PHONE_ORDER)."""
        return [pn.Column(
            pn.pane.Markdown("#### 1. What each method says the model looks at", margin=(0, 10)),
            self.target_text, controls,
            pn.Row(*(pn.Column(pn.pane.Bokeh(f.fig, sizing_mode="scale_width"), **GROWS)
                     for f in self.figures.values()),
                   pn.Column(pn.pane.Markdown(HOW_TO_READ, margin=(20, 10)), **GROWS),
                   sizing_mode="stretch_width", stylesheets=[plots.WRAPS], css_classes=["main-figure"]),
            self.gap_text, sizing_mode="stretch_width", margin=0, stylesheets=[PHONE_ORDER])]


GROWS = dict(max_width=MOST_WIDTH, margin=0, **plots.share_of_row(LEAST_WIDTH))
PHONE_ORDER = "@media (max-width: 600px) { .saliency-controls, .saliency-gap { order: 1; } }"

HOW_TO_READ = (
    "**How to read the maps.** Each map lies over your input. **Red** pixels raise the class score, **blue** ones "
    "lower it, **white** is exactly 0. Each map has its own colour scale (its colour bar), since the methods "
    "measure different things: compare where the colours are, not how strong. Hover a pixel for its value. "
    "Grad-CAM keeps only positive evidence, so it has no blue. A map marked **⚠ survives** did not change when "
    "the model's weights were made random (section 3).")


def gap_text(gap: float) -> str:
    return (f"**Integrated Gradients' completeness gap: {plots.format_value(gap)}.** Its attributions should add up "
            "to exactly how much the class score (the logit) rises from the baseline image to your input: "
            "Σ attributions − (f(input) − f(baseline)) = 0. The integral along the path is approximated with the "
            "chosen number of steps, so the gap is that approximation's error: more steps shrink it.")

"""Section 4 of the attention lesson: attention rollout through all layers, beside the last layer's attention alone.

Source "attention-rollout": both maps over the input picture, for the lesson's query, head fusion and discard ratio
(math.rollout_maps). Each map has a figure of its own, side by side or, on a phone, one under the other.
"""

from __future__ import annotations

import panel as pn
from bokeh.models import CDSView, HoverTool, IndexFilter, LinearColorMapper, Range1d
from bokeh.plotting import figure

from explorer.lessons import plots
from explorer.lessons.attention import math as am
from explorer.lessons.attention.view_figures import OVERLAY_ALPHA, PICTURE, Changed, Shown, bare, outer
from explorer.session.tags import tag_results

INSET = 5          # the picture's distance from its figure's frame edges (px)
BAR_ROOM = 56      # under each picture: its colour bar, the bar's ticks and title (px)
BORDER = 10        # around the frame: room for the bar's end labels (px)
TITLES = ("rollout: all layers", "last layer alone")  # the two figures, left to right


class Rollout:
    """Section 4: two figures made once (in the constructor), data assigned by `draw`."""

    def __init__(self, changed: Changed):
        self._changed = changed
        self.text = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
        self._pictures = plots.source("image", "x", "y", "dw", "dh")
        self._source = plots.source("image", "x", "y", "dw", "dh", "what", "max_text", "left", "right", "top",
                                    "bottom", name="attention-rollout")
        # each map is coloured from 0 to its own largest weight: a bar under each
        self.bars = [plots.colour_bar(LinearColorMapper(palette=list(plots.SEQUENTIAL), low=0, high=1),
                                      "attention weight") for _ in TITLES]
        self.figs = []
        for i, (title, bar) in enumerate(zip(TITLES, self.bars, strict=True)):
            fig = figure(width=PICTURE + 2 * BORDER, height=outer(PICTURE, PICTURE, axes=False)["height"] + BAR_ROOM,
                         x_range=Range1d(0, PICTURE), y_range=plots.pixel_range(PICTURE), tools="",
                         toolbar_location=None, min_border=BORDER,
                         outline_line_color=None, title=title)
            bare(fig)
            view = CDSView(filter=IndexFilter([i]))  # this figure's row of the sources
            fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=self._pictures, view=view)
            fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", global_alpha=OVERLAY_ALPHA,
                           source=self._source, view=view)
            hit = fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_alpha=0,
                           source=self._source, view=view)
            fig.add_tools(HoverTool(renderers=[hit], tooltips=[("map", "@what"), ("largest weight", "@max_text")]))
            bar.update(orientation="horizontal", width="auto", height=12)
            fig.add_layout(bar, "below")
            self.figs.append(fig)

    def layout(self, controls: pn.viewable.Viewable) -> list:
        return [pn.pane.Markdown("#### 4. Attention rollout", margin=(0, 10),
                                 css_classes=["attention-part-4"]), self.text, controls,
                pn.Row(*(pn.pane.Bokeh(fig) for fig in self.figs), stylesheets=[plots.WRAPS])]

    def draw(self, s: Shown) -> None:
        a, inference = s.analysis, s.inference
        if not self._changed("rollout", (inference, s.query, s.head_fusion, s.discard_ratio)):
            return
        r = am.rollout_maps(a.maps, s.query, a.grid, s.head_fusion, s.discard_ratio)
        maps = (r.rollout.numpy(), r.last_layer.numpy())
        whats = (f"rollout over {len(a.records)} layers, heads fused by {s.head_fusion}, "
                 f"{s.discard_ratio:.0%} discarded", f"last layer only ({a.records[-1]}), mean of the heads")
        h, w = inference.view.shape[:2]
        scale = (PICTURE - 2 * INSET) / max(h, w)
        place = dict(x=[INSET] * 2, y=[INSET] * 2, dw=[w * scale] * 2, dh=[h * scale] * 2)  # each in its figure
        if self._changed("rollout-pictures", (inference,)):
            self._pictures.data = dict(image=[plots.picture_to_rgba(inference.view)] * 2, **place)
            tag_results(s.model, self._pictures)
        self._source.data = dict(
            image=[plots.to_rgba(m, signed=False) for m in maps], **place, what=list(whats),
            max_text=[plots.format_value(m.max()) for m in maps], left=[INSET] * 2, right=[INSET + w * scale] * 2,
            top=[INSET] * 2, bottom=[INSET + h * scale] * 2)
        for bar, m in zip(self.bars, maps, strict=True):
            plots.set_colour_scale(bar, signed=False, limit=plots.max_abs(m))
        tag_results(s.model, self._source, *self.figs, self.text)
        kept = "the class token's" if a.grid.first else "token 0's"
        discard = (f"its weakest {s.discard_ratio:.0%} of weights are set to 0 (all but {kept} attention to itself, "
                   "as vit-explain does), " if s.discard_ratio else "")
        self.text.object = (
            f"*{TITLES[0]}*: attention rollout for {s.query_name}, {whats[0]}. Each layer's heads are fused into "
            f"one matrix, {discard}the identity is added for the residual connection (a token keeps itself), each "
            f"row is rescaled to sum to 1, and the layers are multiplied from first to last. *{TITLES[1]}*: the last "
            f"layer's attention alone. Both are coloured from 0 to their own largest value. The patches receive "
            f"{plots.format_value(r.to_patches)} of the rollout"
            + (f", the class token {plots.format_value(r.to_prefix)}." if a.grid.first else "."))

"""Section 4 of the attention lesson: attention rollout through all layers, beside the last layer's attention alone.

Source "attention-rollout": both maps over the input picture, for the lesson's query, head fusion and discard ratio
(math.rollout_maps).
"""

from __future__ import annotations

import panel as pn
from bokeh.models import HoverTool, LinearColorMapper, Range1d
from bokeh.plotting import figure

from explorer.lessons import plots
from explorer.lessons.attention import math as am
from explorer.lessons.attention.view_figures import OVERLAY_ALPHA, PICTURE, Changed, Shown, bare
from explorer.session.tags import tag_results

LEFT = (5, PICTURE + 35)  # x of the two pictures (px)
TOP = 25                  # y of both, under their labels (px)
BAR_ROOM = 56             # under the pictures: a colour bar each, its ticks and title (px)


class Rollout:
    """Section 4: a figure made once (in the constructor), data assigned by `draw`."""

    def __init__(self, changed: Changed):
        self._changed = changed
        self.text = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
        self._pictures = plots.source("image", "x", "y", "dw", "dh")
        self._source = plots.source("image", "x", "y", "dw", "dh", "what", "max_text", "left", "right", "top",
                                    "bottom", name="attention-rollout")
        self._labels = plots.source("x", "text")
        fig = figure(width=2 * PICTURE + 40, height=PICTURE + 60 + BAR_ROOM, x_range=Range1d(0, 2 * PICTURE + 40),
                     y_range=plots.pixel_range(PICTURE + 30 + BAR_ROOM), tools="", toolbar_location=None, min_border=0,
                     outline_line_color=None, title="rollout")
        bare(fig)
        fig.text(x="x", y=12, text="text", text_align="center", text_baseline="middle", text_font_size="12px",
                 text_color="#334155", source=self._labels)
        fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=self._pictures)
        fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", global_alpha=OVERLAY_ALPHA, source=self._source)
        hit = fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_alpha=0,
                       source=self._source)
        fig.add_tools(HoverTool(renderers=[hit], tooltips=[("map", "@what"), ("largest weight", "@max_text")]))
        # each map is coloured from 0 to its own largest weight: a bar under each, in the frame's bottom strip
        self.bars = [plots.colour_bar(LinearColorMapper(palette=list(plots.SEQUENTIAL), low=0, high=1),
                                      "attention weight") for _ in LEFT]
        for bar, x in zip(self.bars, LEFT, strict=True):
            bar.update(orientation="horizontal", width=PICTURE - 10, height=12, location=(x, 0), padding=0)
            fig.add_layout(bar, "center")
        self._fig = fig

    def layout(self, controls: pn.viewable.Viewable) -> list:
        return [pn.pane.Markdown("#### 4. Attention rollout", margin=(0, 10),
                                 css_classes=["attention-part-4"]), self.text, controls,
                pn.pane.Bokeh(self._fig)]

    def draw(self, s: Shown) -> None:
        a, inference = s.analysis, s.inference
        if not self._changed("rollout", (inference, s.query, s.head_fusion, s.discard_ratio)):
            return
        r = am.rollout_maps(a.maps, s.query, a.grid, s.head_fusion, s.discard_ratio)
        maps = (r.rollout.numpy(), r.last_layer.numpy())
        whats = (f"rollout over {len(a.records)} layers, heads fused by {s.head_fusion}, "
                 f"{s.discard_ratio:.0%} discarded", f"last layer only ({a.records[-1]}), mean of the heads")
        h, w = inference.view.shape[:2]
        scale = (PICTURE - 10) / max(h, w)
        if self._changed("rollout-pictures", (inference,)):
            self._pictures.data = dict(image=[plots.picture_to_rgba(inference.view)] * 2, x=list(LEFT),
                                       y=[TOP, TOP], dw=[w * scale] * 2, dh=[h * scale] * 2)
            self._labels.data = dict(x=[x + w * scale / 2 for x in LEFT],
                                     text=["rollout: all layers", "last layer alone"])
            tag_results(s.model, self._pictures, self._labels)
        self._source.data = dict(
            image=[plots.to_rgba(m, signed=False) for m in maps], x=list(LEFT), y=[TOP, TOP], dw=[w * scale] * 2,
            dh=[h * scale] * 2, what=list(whats), max_text=[plots.format_value(m.max()) for m in maps],
            left=list(LEFT), right=[x + w * scale for x in LEFT], top=[TOP, TOP], bottom=[TOP + h * scale] * 2)
        for bar, m in zip(self.bars, maps, strict=True):
            plots.set_colour_scale(bar, signed=False, limit=plots.max_abs(m))
        self._fig.title.text = f"what reaches {s.query_name}"
        tag_results(s.model, self._source, self._fig, self.text)
        kept = "the class token's" if a.grid.first else "token 0's"
        discard = (f"its weakest {s.discard_ratio:.0%} of weights are set to 0 (all but {kept} attention to itself, "
                   "as vit-explain does), " if s.discard_ratio else "")
        self.text.object = (
            f"Left: attention rollout for {s.query_name}, {whats[0]}. Each layer's heads are fused into one "
            f"matrix, {discard}the identity is added for the residual connection (a token keeps itself), each row is "
            "rescaled to sum to 1, and the layers are multiplied from first to last. Right: the last layer's "
            f"attention alone. Both are coloured from 0 to their own largest value. The patches receive "
            f"{plots.format_value(r.to_patches)} of the rollout"
            + (f", the class token {plots.format_value(r.to_prefix)}." if a.grid.first else "."))

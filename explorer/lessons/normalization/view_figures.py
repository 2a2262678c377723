"""What the normalization lesson's parts share: what a part is shown, its text pane, and figure scaffolding.

Every figure and source is made once, when the lesson is built; a part's `show` only assigns data and properties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import panel as pn
import torch
from bokeh.models import ColumnDataSource, LinearColorMapper, Range1d
from bokeh.plotting import figure

from explorer.lessons import plots
from explorer.lessons.normalization import math as nm

TILE, TILE_GAP = 92, 16  # image tiles: side and gap (px)
TILE_BAR = 40            # under the tiles: a colour bar each, with its ticks (px)
TILE_ROW = TILE + 34 + TILE_BAR  # a row of tiles: label, picture, range, colour bar (px)


@dataclass(frozen=True)
class Shown:
    """What the parts show: one input at one norm layer, with the lesson's settings."""

    model: str              # the model's name, for the tags
    study: nm.LayerStudy
    kind: str
    groups: int
    size: int               # images per batch (1 for a model without MNIST batches)
    channel: int

    @property
    def noun(self) -> str:
        return "feature" if self.study.layout == "tokens" else "channel"

    @property
    def where(self) -> str:
        return "token" if self.study.layout == "tokens" else "position"


def text(part: str) -> pn.pane.Markdown:
    """A part's explanation; the class lets tests and benchmarks find it."""
    return pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10), css_classes=[f"normalization-{part}"])


def plain_figure(title: str, width: int, height: int, **kwargs) -> figure:
    fig = figure(title=title, width=width, height=height, tools="", toolbar_location=None, **kwargs)
    fig.title.text_font_size = "13px"
    return fig


def numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def clear(*sources: ColumnDataSource) -> None:
    for source in sources:
        source.data = {k: [] for k in source.data}


class Tiles:
    """`n` pictures (a feature map, a kernel) in rows of `columns`, each with a label above and its value range
    below. Three columns fit a phone's 390 px."""

    def __init__(self, title: str, n: int, name: str, columns: int = 3):
        self.source = plots.source("image", "x", "y", "dw", "dh", "cx", "label", "label_y", "range", "range_y",
                                   name=name)
        self.columns = columns
        width, self._height = columns * (TILE + TILE_GAP), -(-n // columns) * TILE_ROW
        # one data unit per screen pixel, so that the tiles keep their shape
        fig = figure(title=title, frame_width=width, frame_height=self._height, **plots.NATURAL_SIZE,
                     tools="", toolbar_location=None, x_range=Range1d(0, width),
                     y_range=plots.pixel_range(self._height), min_border=4)
        fig.title.text_font_size = "13px"
        fig.axis.visible = False
        fig.grid.visible = False
        fig.text(x="cx", y="label_y", text="label", text_align="center", text_baseline="top", text_font_size="12px",
                 source=self.source)
        fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=self.source)
        fig.text(x="cx", y="range_y", text="range", text_align="center", text_baseline="top", text_font_size="12px",
                 text_color="#475569", source=self.source)
        # each tile is coloured on its own scale (plots.to_rgba: its largest |value|): a bar under each
        self.bars = [plots.colour_bar(LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1), "")
                     for _ in range(n)]
        for i, bar in enumerate(self.bars):
            bar.update(orientation="horizontal", width=TILE, height=8, location=self._bar_corner(i, columns),
                       padding=0, title=None)
            fig.add_layout(bar, "center")
        self.fig = fig

    @staticmethod
    def _corner(i: int, columns: int) -> tuple[int, int]:
        """Top-left corner of tile i's cell (px, y down)."""
        return i % columns * (TILE + TILE_GAP), i // columns * TILE_ROW

    def _bar_corner(self, i: int, columns: int) -> tuple[int, int]:
        """Bottom-left corner of tile i's colour bar, in screen pixels from the frame's bottom left."""
        left, top = self._corner(i, columns)
        return left, self._height - top - TILE_ROW

    def show(self, tiles: dict[str, torch.Tensor], columns: int | None = None) -> None:
        """Draw each (label: 2-D values) tile, on the signed colour scale, `columns` to a row (as built if None)."""
        columns = columns or self.columns
        cols: dict[str, list] = {k: [] for k in self.source.data}
        for i, (label, values) in enumerate(tiles.items()):
            v = plots.downsample(numpy(values), TILE)
            scale = TILE / max(v.shape)  # the longer side fills the tile
            dw, dh = v.shape[1] * scale, v.shape[0] * scale
            left, top = self._corner(i, columns)
            cols["image"].append(plots.to_rgba(v, True))
            cols["x"].append(left + (TILE - dw) / 2)
            cols["y"].append(top + 18 + (TILE - dh) / 2)
            cols["label_y"].append(top + 2)
            cols["range_y"].append(top + TILE + 20)
            cols["dw"].append(dw)
            cols["dh"].append(dh)
            cols["cx"].append(left + TILE / 2)
            cols["label"].append(label)
            low, high = plots.format_value(float(values.min())), plots.format_value(float(values.max()))
            cols["range"].append(f"{low} … {high}")
            plots.set_colour_scale(self.bars[i], True, plots.max_abs(v))
        for i, bar in enumerate(self.bars):
            bar.update(visible=i < len(tiles), location=self._bar_corner(i, columns))
        self.source.data = cols


def picked(layout: str, channel: int, t: torch.Tensor) -> torch.Tensor:
    """The 2-D picture of one sample's values (C, *S) or (T, D): the channel's map, or features × tokens."""
    return t.T if layout == "tokens" else t[channel].reshape(t.shape[1], -1)

"""What the attention lesson's sections share: sizes, colours, figure scaffolding, and `Shown`, what the lesson shows.

Each section (view_patches.py, view_heads.py, view_step.py, view_rollout.py, view_distance.py) makes its figures
once, when the lesson first analyses a model with attention, and afterwards only assigns them data in `draw(shown)`,
asking the lesson's `changed(part, key)` memo whether a part shows something new.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from explorer.lessons.attention import math as am
from explorer.session.state import Inference

PICTURE = 240        # side of the input picture with its patch grid (px)
CELL_MAX = 86        # side of one cell of the layer × head grid (px), smaller for models with many heads
STEP_SIDE = 150      # the largest side of one matrix of the step-by-step view (px)
PHONE_WIDTH = 370    # the widest fixed-size figure: a phone's 390-px window, less the panes' margins (px)
OVERLAY_ALPHA = 0.72  # attention drawn over the picture: the digit stays visible underneath
QUERY_COLOUR = "#e11d48"
CELL_CODE = "return Math.floor(value).toString()"  # a hover formatter: the cell under the pointer, not rounded

Changed = Callable[[str, object], bool]  # the lesson's memo: Lesson.changed(part, key)
Select = Callable[..., None]             # the lesson's AttentionLesson.select(layer=, head=, query=)


@dataclass(frozen=True, eq=False)
class Shown:
    """What the lesson shows now: the analysed input, the layer and head (the session's), the lesson's settings."""

    inference: Inference
    analysis: am.Analysis
    layer: str             # the attention record shown
    index: int             # its position in analysis.records
    head: int
    query: int             # token whose attention is shown
    temperature: float
    head_fusion: str
    discard_ratio: float

    @property
    def model(self) -> str:
        return self.inference.model.name

    @property
    def query_name(self) -> str:
        cell = self.analysis.grid.cell(self.query)
        return "the class token" if cell is None else f"the patch at row {cell[0]}, column {cell[1]}"


def outer(frame_width: int, frame_height: int, axes: bool = True, colour_bar: bool = False) -> dict[str, int]:
    """Outer width and height around a plot area of about frame_width × frame_height px.

    Outer sizes rather than Bokeh's frame_width/frame_height: inside a Panel pane, a figure sized by its frame
    is cut off at the bottom by about its title's height (seen in Chromium with Panel 1.9.4, Bokeh 3.9.2).
    """
    return dict(width=frame_width + (58 if axes else 12) + (72 if colour_bar else 0),
                height=frame_height + (70 if axes else 34))


def bare(fig) -> None:
    """No axes, no grid: a figure of pictures placed by hand."""
    fig.axis.visible = False
    fig.grid.visible = False
    fig.title.text_font_size = "13px"


def pictured(fig, xlabel: str, ylabel: str) -> None:
    """A picture's axes, labelled, without grid lines."""
    fig.title.text_font_size = "13px"
    fig.grid.visible = False
    fig.xaxis.axis_label, fig.yaxis.axis_label = xlabel, ylabel

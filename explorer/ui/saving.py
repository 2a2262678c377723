"""Every figure can be saved: one save tool on each Bokeh plot of a view, added in one place.

BokehJS writes the file in the browser from what the figure draws (no server round trip, nothing fetched):
a PNG from a canvas figure, an SVG from a figure drawn with `output_backend="svg"`. The file is named
"<view>-<what the figure shows>", from the figure's title (else its name, else its axis labels).

The toolbar that holds the tool sits inside the plot's frame and shows only while the pointer is over the
plot (`toolbar_inner`, `autohide`), so a figure takes the same room with it as without it. A plot made with
`toolbar_location=None` gets its toolbar at the top right of its frame, with the save button alone (its other
tools, a hover, still work); one with a toolbar keeps its place and its buttons.

Parts of a lesson built later (a tab's figures made when the tab first opens, a section made for the first
model that has it) are reached by watching the view's layouts: whatever a layout is given is walked too.
"""

from __future__ import annotations

import re
import weakref

import panel as pn
from bokeh.models import CustomJS, Plot, SaveTool, Title
from panel.layout.base import ListLike, NamedListLike

MAX_NAME = 60  # characters of a file name taken from a title: enough to say what it is
NO_OVERFLOW = ".bk-tool-overflow { display: none; }"
# `slug` in the page, run when a title changes: the file is named after the title shown when it is saved. Silent:
# the page keeps the name to itself rather than send the server a message on every channel click.
RENAME = """
const words = cb_obj.text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
if (words) tool.setv({filename: `${prefix}-${words.slice(0, most).replace(/-+$/, "")}${suffix}`}, {silent: true});
"""


def make_savable(view: pn.viewable.Viewable | pn.viewable.Viewer, prefix: str) -> None:
    """Give every Bokeh plot in `view` a save tool, now and in whatever its layouts are given later."""
    _Saver(prefix).walk(pn.panel(view))


class _Saver:
    """The file names given so far in one view (each is given once) and the layouts already watched."""

    def __init__(self, prefix: str):
        self.prefix = slug(prefix) or "figure"
        self.names: set[str] = set()
        self.watched: weakref.WeakSet = weakref.WeakSet()  # layouts and panes

    def walk(self, view) -> None:
        for layout in view.select(ListLike) + view.select(NamedListLike):
            if layout not in self.watched:
                self.watched.add(layout)
                layout.param.watch(self._given, "objects")
        for pane in view.select(pn.pane.Bokeh):
            if pane not in self.watched:
                self.watched.add(pane)
                pane.param.watch(self._given, "object")
            self._save_plots(pane.object)

    def _given(self, event) -> None:
        if event.name == "object":
            self._save_plots(event.new)
            return
        for item in event.new:
            self.walk(pn.panel(item))

    def _save_plots(self, model) -> None:
        for plot in plots_in(model):
            tools = [tool for tool in plot.toolbar.tools if isinstance(tool, SaveTool)]
            if tools and tools[0].filename is not None:
                continue  # saved already
            if not tools:  # a figure made with tools="save" has one, unnamed
                tools = [SaveTool()]
                plot.add_tools(tools[0])
            self._name(plot, tools[0])
            plot.toolbar.update(autohide=True, logo=None)
            if plot.toolbar_location is None:  # a toolbar shown now: only for saving, the other tools work as before
                plot.update(toolbar_location="above", toolbar_inner=True)
                # One button never needs the "more tools" one, which BokehJS draws while it lays out a figure
                # narrower than the toolbar for a moment: up to 12 px past the lesson's edge, for up to a second.
                plot.toolbar.stylesheets = [*plot.toolbar.stylesheets, NO_OVERFLOW]
                for tool in plot.toolbar.tools:
                    tool.visible = tool is tools[0]

    def _name(self, plot: Plot, tool: SaveTool) -> None:
        """Name the file after what the plot shows; a title that changes (a channel's number) renames it."""
        name = f"{self.prefix}-{slug(what_it_shows(plot)) or 'figure'}"
        filename, n = name, 1
        while filename in self.names:
            n += 1
            filename = f"{name}-{n}"
        self.names.add(filename)
        tool.filename = filename
        if isinstance(plot.title, Title):
            suffix = filename[len(name):]  # a second figure of the same title keeps its number
            plot.title.js_on_change("text", CustomJS(args=dict(tool=tool, prefix=self.prefix, suffix=suffix,
                                                               most=MAX_NAME), code=RENAME))


def plots_in(model) -> list[Plot]:
    """The plots of a pane's Bokeh object: itself, or those in its rows, columns, grids and tabs. (Bokeh's
    `select` would visit every property of every model below, data sources included: 10 ms a figure.)"""
    if isinstance(model, Plot):
        return [model]
    children = [child[0] if isinstance(child, tuple) else child for child in getattr(model, "children", None) or ()]
    children += [panel.child for panel in getattr(model, "tabs", None) or ()]
    return [plot for child in children for plot in plots_in(child)]


def what_it_shows(plot: Plot) -> str:
    """The plot's title, else its name, else its axis labels."""
    if isinstance(plot.title, Title) and plot.title.text:
        return plot.title.text
    if plot.name:
        return plot.name
    labels = [axis.axis_label for axis in (*plot.left, *plot.below, *plot.above, *plot.right)
              if getattr(axis, "axis_label", None)]
    return " ".join(labels[:2])


def slug(text: str) -> str:
    """'Σ|∂unit/∂pixel|, zoomed' -> 'unit-pixel-zoomed': lower-case letters, digits and dashes, for a file name."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:MAX_NAME].rstrip("-")

"""Filter atlas: every filter of a convolution, sortable, with spectra, activation maps and degenerate filters flagged.

Top grid: one picture per filter (receptive.filter_atlas says what a picture is: an RGB composite for a
colour first layer, the kernel for one input channel, the mean over input channels otherwise, the input
weights of a 1×1 kernel); or, with the spectrum toggle, each picture's amplitude spectrum |FFT|.
Degenerate filters (receptive.degenerate_filters) get a red frame. Bottom grid: each filter's output
channel for the current input, in the same order. At most MAX_SHOWN filters are drawn, the first in
the chosen order.

Performance: both figures and their sources ("convolution-atlas-filters", "convolution-atlas-maps") are
built once; a change replaces their data inside one `one_update()`.
"""

from __future__ import annotations

import numpy as np
import panel as pn
import param
from bokeh.models import HoverTool, LinearColorMapper, Range1d
from bokeh.plotting import figure

from explorer.core import names
from explorer.errors import InputError
from explorer.lessons import plots
from explorer.lessons.convolution import receptive
from explorer.session.layer_lesson import OneLayerLesson
from explorer.session.narrative import Step
from explorer.session.state import follows, one_update
from explorer.session.tags import tag_results

COLS, CELL, PICTURE = 6, 60, 50       # cells per row, cell side and picture side (px): readable on a projector,
                                      # 360 px wide for a phone; the two grids side by side where there is room
LABEL = 16                            # px under a picture for its number
MAX_SHOWN = 256
FLAG_COLOUR = "#dc2626"


def _grid_figure(title: str) -> figure:
    fig = figure(frame_width=COLS * CELL, frame_height=CELL + LABEL, **plots.NATURAL_SIZE,
                 x_range=Range1d(0, COLS * CELL),
                 y_range=plots.pixel_range(CELL + LABEL), tools="", toolbar_location=None, min_border=0,
                 outline_line_color=None, title=title)
    fig.axis.visible = False
    fig.grid.visible = False
    fig.title.text_font_size = "13px"
    return fig


def conv_layers(inference) -> list[str]:
    """Trace records of 2-D convolutions (a 4-D weight), in the order they ran."""
    return [r.name for r in inference.trace.records if r.kind == "conv" and r.params.get("weight") is not None
            and r.params["weight"].dim() == 4]


class FilterAtlas(OneLayerLesson):
    """All filters of one convolution layer at a glance."""

    sort = param.Selector(default="index", objects=list(receptive.SORTS), doc="Order of the filters.")
    spectrum = param.Boolean(default=False, doc="Show each filter's amplitude spectrum instead of its weights.")

    tour_title = "Filter atlas, step by step"

    def __init__(self, model: str | None = None, **params):
        super().__init__(model=model, **params)
        self._atlas: receptive.Atlas | None = None
        self._build_figures()
        self._legend = pn.pane.Markdown("", sizing_mode="stretch_width", css_classes=["atlas-legend"])
        self._follow_state()
        self._layout = pn.Column(
            pn.Row(self.layer_menu,
                   pn.Column(pn.pane.Markdown("Sort by", margin=(0, 5)),
                             pn.widgets.RadioButtonGroup.from_param(self.param.sort)),
                   pn.Column(pn.pane.Markdown("Show", margin=(0, 5)),
                             pn.widgets.Toggle.from_param(self.param.spectrum, name="amplitude spectra", width=160)),
                   stylesheets=[plots.WRAPS]),
            self.errors,
            self._legend,
            pn.Row(pn.pane.Bokeh(self._filter_fig), pn.pane.Bokeh(self._maps_fig), stylesheets=[plots.WRAPS]),
            sizing_mode="stretch_width",
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    def steps(self) -> tuple[Step, ...]:
        return narrative_steps()

    @follows("state.inference")
    def _follow_state(self) -> None:
        inference = self.state.inference
        names = conv_layers(inference)
        with one_update():
            self._choose_layer(names)
            if self.layer is None:
                self._show_error(f"{inference.model.name} has no 2-D convolution.")
                for source in (self._filter_source, self._flag_source, self._maps_source):
                    source.data = {k: [] for k in source.data}
                self._legend.object = ""
                tag_results(inference.model.name, *self._results)
            else:  # a new input changes the maps, a new model everything
                self._show()

    def _show_error(self, message: str) -> None:
        if message:
            self.show_error(message)
        else:
            self.clear_error()

    def _compute(self) -> receptive.Atlas:
        if self.changed("atlas", (self.state.inference, self.layer)):
            record = self.state.inference.trace[self.layer]
            self._atlas = receptive.filter_atlas(record.params["weight"], record.output)
        return self._atlas

    def _show_layer(self) -> None:
        self._show()

    @param.depends("sort", "spectrum", watch=True)
    def _show(self) -> None:
        if self.layer is None:
            return
        try:
            atlas = self._compute()
            order = receptive.filter_order(atlas, self.sort).numpy()
        except InputError as e:
            self._show_error(str(e))
            return
        spectra = self.spectrum and atlas.spectra is not None
        self._show_error("" if not self.spectrum or spectra else
                         "1×1 kernels have no spatial pattern, so no spectrum: the weights are shown.")
        shown = order[:MAX_SHOWN]
        with one_update():
            self._show_filters(atlas, shown, spectra)
            self._show_maps(atlas, shown)
            rows = -(-len(shown) // COLS)
            for fig in (self._filter_fig, self._maps_fig):
                fig.frame_height = rows * (CELL + LABEL)
                fig.y_range.start = rows * (CELL + LABEL)
            self._legend.object = self._legend_text(atlas, len(order), len(shown), spectra)
            tag_results(self.state.inference.model.name, *self._results)

    def _cells(self, n: int) -> dict[str, list]:
        cols, rows = np.arange(n) % COLS, np.arange(n) // COLS
        left, top = cols * CELL, rows * (CELL + LABEL)
        return dict(left=left.tolist(), right=(left + CELL).tolist(), top=top.tolist(),
                    bottom=(top + CELL).tolist(), cx=(left + CELL / 2).tolist(), label_y=(top + CELL).tolist())

    def _placed(self, pictures: list[np.ndarray], cells: dict[str, list]) -> dict[str, list]:
        """x, y, dw, dh of each picture, centred in its cell with its longer side PICTURE px."""
        out: dict[str, list] = {"x": [], "y": [], "dw": [], "dh": []}
        for picture, left, top in zip(pictures, cells["left"], cells["top"], strict=True):
            h, w = picture.shape[:2]
            dw, dh = PICTURE * w / max(h, w), PICTURE * h / max(h, w)
            out["x"].append(left + (CELL - dw) / 2)
            out["y"].append(top + (CELL - dh) / 2)
            out["dw"].append(dw)
            out["dh"].append(dh)
        return out

    def _show_filters(self, atlas: receptive.Atlas, shown: np.ndarray, spectra: bool) -> None:
        if spectra:
            values = atlas.spectra.numpy()
            limit = plots.max_abs(values)
            images = [plots.to_rgba(values[i], signed=False, limit=limit) for i in shown]
        elif atlas.colour:
            limit = plots.max_abs(atlas.pictures.numpy())
            colours = receptive.colour_composite(atlas.pictures, limit).numpy()
            images = [plots.picture_to_rgba(colours[i]) for i in shown]
        else:
            values = atlas.pictures.numpy()
            limit = plots.max_abs(values)
            images = [plots.to_rgba(values[i], signed=True, limit=limit) for i in shown]
        # an RGB composite has no one colour scale: its legend says how to read it
        self._filter_bar.visible = spectra or not atlas.colour
        self._filter_bar.title = "|FFT|" if spectra else "weight"
        plots.set_colour_scale(self._filter_bar, not spectra, limit)
        cells = self._cells(len(shown))
        degenerate = atlas.degenerate.numpy()
        reasons = np.where(atlas.tiny.numpy(), "near zero (tiny norm)", np.where(atlas.flat.numpy(),
                           "near constant (tiny spread)", ""))
        self._filter_source.data = dict(
            image=images, **self._placed(images, cells), **cells, number=[str(i) for i in shown],
            norm=[plots.format_value(float(atlas.norms[i])) for i in shown],
            spread=[plots.format_value(float(atlas.spreads[i])) for i in shown],
            strength=[plots.format_value(float(atlas.strength[i])) if atlas.strength is not None else "–"
                      for i in shown],
            flag=[reasons[i] or "no" for i in shown])
        flagged = [k for k, i in enumerate(shown) if degenerate[i]]
        self._flag_source.data = {k: [cells[k][j] for j in flagged] for k in ("left", "right", "top", "bottom")}
        what = "amplitude spectra" if spectra else "filters"
        self._filter_fig.title.text = f"{self._name()}:\n{what}, by {self.sort} (hover for numbers)"

    def _show_maps(self, atlas: receptive.Atlas, shown: np.ndarray) -> None:
        self._maps_bar.visible = atlas.maps is not None
        if atlas.maps is None:
            self._maps_source.data = {k: [] for k in self._maps_source.data}
            return
        maps = atlas.maps.numpy()
        limit = plots.max_abs(maps)
        plots.set_colour_scale(self._maps_bar, True, limit)
        small = [plots.downsample(maps[i], PICTURE) for i in shown]
        images = [plots.to_rgba(m, signed=True, limit=limit) for m in small]
        cells = self._cells(len(shown))
        self._maps_source.data = dict(image=images, **self._placed(images, cells), **cells,
                                      number=[str(i) for i in shown])
        h, w = maps.shape[1:]
        self._maps_fig.title.text = f"{self._name()}:\noutput on this input, {h}×{w} maps"

    def _name(self) -> str:
        return names.labelled_name(self.state.inference.model.module, self.layer)

    def _legend_text(self, atlas: receptive.Atlas, n: int, shown: int, spectra: bool) -> str:
        flagged = int(atlas.degenerate.sum())
        count = f"All {n:,} filters" if shown == n else f"The first {shown:,} of {n:,} filters in this order"
        if spectra:
            picture = ("each filter's **amplitude spectrum** |FFT| of "
                       f"{'the mean over its colours' if atlas.colour else atlas.shows} (zero-padded to "
                       f"{atlas.spectra.shape[-1]}×{atlas.spectra.shape[-1]}, zero frequency in the middle, dark "
                       "purple 0 → yellow the layer's largest): a bright centre means a smoothing filter, bright "
                       "edges an edge or texture detector.")
        elif atlas.colour:
            picture = ("an **RGB composite**: each colour channel shows the weights for that input colour, grey "
                       "is 0, brighter is positive (one scale for the whole layer).")
        else:
            picture = f"**{atlas.shows}**, one colour scale for the whole layer. {plots.COLOUR_LEGEND}"
        flags = (f"A **red frame** marks a degenerate filter: its L2 norm, or the spread (standard deviation) of "
                 f"its weights, is below {receptive.DEGENERATE_FRACTION:.0%} of the layer's largest; such filters "
                 "pass almost nothing or only a blurred constant (CNN Filter DB, Gavrikov & Keuper 2022). "
                 f"**{flagged:,} of {n:,}** in this layer.")
        order = f"sorted by **{self.sort}** ({receptive.SORTS[self.sort]})"
        maps = ("\n\nBelow them, what each filter makes of this input, in the same order, on one colour scale for "
                "the layer." if atlas.maps is not None else "")
        return f"{count}, {order}. Each picture is {picture}\n\n{flags}{maps}"

    def _build_figures(self) -> None:
        columns = ("image", "x", "y", "dw", "dh", "left", "right", "top", "bottom", "cx", "label_y", "number")
        self._filter_source = plots.source(*columns, "norm", "spread", "strength", "flag",
                                           name="convolution-atlas-filters")
        self._flag_source = plots.source("left", "right", "top", "bottom", name="convolution-atlas-flags")
        self._maps_source = plots.source(*columns, name="convolution-atlas-maps")
        self._filter_fig = _grid_figure("filters")
        self._maps_fig = _grid_figure("activation maps")
        self._filter_bar, self._maps_bar = (
            plots.colour_bar(LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1), title)
            for title in ("weight", "activation"))
        for fig, bar in ((self._filter_fig, self._filter_bar), (self._maps_fig, self._maps_bar)):
            bar.update(orientation="horizontal", width="auto", height=14)
            fig.add_layout(bar, "below")  # under the grid, which fills a phone's width
        for fig, source in ((self._filter_fig, self._filter_source), (self._maps_fig, self._maps_source)):
            fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=source)
            fig.text(x="cx", y="label_y", text="number", text_align="center", text_baseline="top",
                     text_font_size="12px", text_color="#475569", source=source)
        self._filter_fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0,
                              line_color=FLAG_COLOUR, line_width=3, source=self._flag_source)
        hit = self._filter_fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0,
                                    line_alpha=0, source=self._filter_source)
        self._filter_fig.add_tools(HoverTool(renderers=[hit], tooltips=[
            ("filter", "@number"), ("L2 norm", "@norm"), ("spread (std)", "@spread"),
            ("mean |activation|", "@strength"), ("degenerate", "@flag")]))

    @property
    def _results(self) -> tuple:
        """What shows the layer's filters and maps (tagged with its model, see explorer.session.tags.tag_results)."""
        return (self._filter_source, self._flag_source, self._maps_source, self._filter_fig, self._maps_fig,
                self._legend)


def _first(atlas: FilterAtlas) -> str:
    return atlas.layers[0]


def _depthwise_or_last(atlas: FilterAtlas) -> str:
    trace = atlas.state.inference.trace
    grouped = [n for n in atlas.layers if trace[n].params["weight"].shape[1] == 1 and n != _first(atlas)]
    return grouped[0] if grouped else atlas.layers[-1]


def narrative_steps() -> tuple[Step, ...]:
    return (
        Step("What the first layer learned",
             "Each picture is one filter of the first convolution: many look like edge detectors at different "
             "angles, some like blobs (and, in a colour model, colour opponents).",
             {"layer": _first, "sort": "index", "spectrum": False}, section="atlas-legend"),
        Step("Strong and weak filters",
             "Sorted by L2 norm: the filters with the largest weights come first. The last ones are faint; "
             "a red frame marks those that are practically zero.",
             {"layer": _first, "sort": "L2 norm", "spectrum": False}, section="atlas-legend"),
        Step("What fires on your image",
             "Sorted by mean |activation| on your input: the first maps below are where this image excites the "
             "layer most. Change the input and watch the order change.",
             {"layer": _first, "sort": "activation", "spectrum": False}, section="atlas-legend"),
        Step("Frequencies",
             "The amplitude spectrum shows which spatial frequencies a filter passes: a bright centre is a "
             "blur (low-pass), a bright ring or pair of dots an edge or stripe detector at that angle.",
             {"layer": _first, "sort": "L2 norm", "spectrum": True}, section="atlas-legend"),
        Step("Deeper, and depthwise",
             "A deeper layer (in MobileNetV2 a depthwise one, with one kernel per channel). Its filters are less "
             "picture-like; compare how many are flagged as degenerate with the first layer.",
             {"layer": _depthwise_or_last, "sort": "L2 norm", "spectrum": False}, section="atlas-legend"),
    )

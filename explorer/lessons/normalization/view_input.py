"""Sections 1 and 2 of the normalization lesson: which values share one mean and variance, and the live statistics
of the chosen norm layer on the student's input (per channel or token, the maps before / normalized / after γ, β,
and the histogram of all its values).
"""

from __future__ import annotations

import numpy as np
from bokeh.models import HoverTool, Legend, LegendItem, Range1d
from bokeh.plotting import figure

from explorer.lessons import plots
from explorer.lessons.normalization import math as nm
from explorer.lessons.normalization.view_figures import Shown, Tiles, numpy, picked, plain_figure, text
from explorer.session.tags import tag_results

SHOW_SAMPLES, SHOW_ROWS, SHOW_COLS, CELL = 4, 16, 16, 10  # axes picture: samples, channels, positions, px
SAMPLES_PER_ROW = 2  # the samples' blocks two by two: the picture fits a phone's 390 px
LABEL_ROW = 24       # px under a block for its sample's name
HIGHLIGHT, HIGHLIGHT_SELF, OTHER = "#E69F00", "#9a3412", "#e2e8f0"
SERIES = {"image": ("#0072B2", "your input alone"), "batch": ("#D55E00", "the batch (train mode)"),
          "running": ("#000000", "running statistics (eval mode)")}


class Axes:
    """Section 1: the N × C × (H·W) picture (tokens × features for a ViT), the values that share the selected
    value's statistics highlighted."""

    def __init__(self):
        self.source = plots.source("x", "y", "colour", "sample", "channel", "position", name="normalization-axes")
        self.labels = plots.source("x", "y", "text")
        self.text = text("axes")
        self.text.param.update(sizing_mode="fixed", width=360)  # beside the picture, or under it on a phone
        # A fixed size, room for every sample block shown and a line under them for the samples not shown: a figure
        # that changes size makes the browser lay out the whole page again (100-250 ms, explorer/ui/overview.py)
        width = SAMPLES_PER_ROW * (SHOW_COLS + 2) * CELL - 2 * CELL
        height = -(-SHOW_SAMPLES // SAMPLES_PER_ROW) * (SHOW_ROWS * CELL + LABEL_ROW) + 18
        fig = figure(title="", frame_width=width, frame_height=height, **plots.NATURAL_SIZE, x_range=Range1d(0, width),
                     y_range=plots.pixel_range(height), tools="", toolbar_location=None, min_border=4)
        fig.title.text_font_size = "13px"
        fig.axis.visible = False
        fig.grid.visible = False
        fig.outline_line_color = None
        cells = fig.rect(x="x", y="y", width=CELL - 1, height=CELL - 1, fill_color="colour", line_color=None,
                         source=self.source)
        fig.text(x="x", y="y", text="text", text_baseline="top", text_font_size="12px", text_color="#334155",
                 source=self.labels)
        fig.add_tools(HoverTool(renderers=[cells], tooltips=[("sample", "@sample"), ("channel or feature", "@channel"),
                                                             ("position or token", "@position")]))
        self.fig = fig
        self.sources, self.results = [self.source, self.labels], [self.source, self.labels, self.fig, self.text]

    def show(self, s: Shown) -> None:
        x, layout, size, c = s.study.record.input, s.study.layout, s.size, s.channel
        channels = nm.feature_count(x)
        positions = x.shape[1] if layout == "tokens" else int(np.prod(x.shape[2:]))
        shape = (size, positions, channels) if layout == "tokens" else (size, channels, positions)
        index = (0, 0, c) if layout == "tokens" else (0, c, 0)
        box = nm.shared_with(s.kind, shape, index, s.groups, layout)
        chan_box, pos_box = (box[2], box[1]) if layout == "tokens" else (box[1], box[2])
        first_row = c // SHOW_ROWS * SHOW_ROWS  # the window of channels that holds the selected one
        rows = range(first_row, min(channels, first_row + SHOW_ROWS))
        cols = range(min(positions, SHOW_COLS))
        samples = range(min(size, SHOW_SAMPLES))
        block_w, block_h = (len(cols) + 2) * CELL, len(rows) * CELL + LABEL_ROW
        corners = [(n % SAMPLES_PER_ROW * block_w, n // SAMPLES_PER_ROW * block_h) for n in samples]
        cells: dict[str, list] = {k: [] for k in self.source.data}
        for n in samples:
            left, top = corners[n]
            for i, ch in enumerate(rows):
                for j in cols:
                    shared = n in box[0] and ch in chan_box and j in pos_box
                    mine = (n, ch, j) == (0, c, 0)
                    cells["x"].append(left + (j + 0.5) * CELL)
                    cells["y"].append(top + (i + 0.5) * CELL)
                    cells["colour"].append(HIGHLIGHT_SELF if mine else HIGHLIGHT if shared else OTHER)
                    cells["sample"].append(n + 1)
                    cells["channel"].append(ch)
                    cells["position"].append(j)
        plots.set_data(self.source, cells)  # the layer's shape only: the same after a new input, then not sent
        labels: dict[str, list] = {"x": [], "y": [], "text": []}
        for n in samples:
            labels["x"].append(corners[n][0])
            labels["y"].append(corners[n][1] + len(rows) * CELL + 4)
            labels["text"].append("sample 1 (yours)" if n == 0 else f"sample {n + 1}")
        if size > len(samples):  # on the line under the blocks
            labels["x"].append(0)
            labels["y"].append(-(-len(samples) // SAMPLES_PER_ROW) * block_h)
            labels["text"].append(f"… and {size - len(samples)} more samples in the batch")
        plots.set_data(self.labels, labels)
        noun, where = s.noun, s.where
        self.fig.title.text = (f"{s.study.record.name}: {noun}s {rows.start}–{rows.stop - 1} of {channels} (rows)\n"
                               f"× {where}s 0–{cols.stop - 1} of {positions} (columns)")  # two lines fit a phone
        shared_count = int(np.prod([len(r) for r in box]))
        stats = nm.count_statistics(s.kind, shape, s.groups, layout)
        per = {"batch": f"one per {noun}, shared by every sample of the batch and every {where}",
               "layer": (f"one per {where}, over its {channels} {noun}s" if layout == "tokens"
                         else "one per sample, over all its channels and positions"),
               "group": f"one per {'token' if layout == 'tokens' else 'sample'} and group of "
                        f"{channels // s.groups} {noun}s ({s.groups} groups)",
               "instance": f"one per sample and {noun}, over the {where}s",
               "rms": (f"like LayerNorm ({'per token' if layout == 'tokens' else 'per sample'}) but only rescaled: "
                       "the mean is not subtracted")}[s.kind]
        self.text.object = (
            f"**{nm.KINDS[s.kind]}**: {per}. The dark cell is {noun} {c} at {where} 0 of your input; the "
            f"{shared_count:,} highlighted values (the picture shows only some of them) share its mean and variance. "
            f"For a batch of {size}, this layer's input ({plots.format_shape((size, *x.shape[1:]))}) gets {stats:,} "
            f"separate means and variances.")
        tag_results(s.model, *self.results)


class Statistics:
    """Section 2: mean and variance per channel (per token for a ViT) of the input alone, of the batch and the
    running ones; the selected channel's map before, normalized and after γ, β."""

    def __init__(self):
        self.source = plots.source("x", "image_mean", "image_var", "batch_mean", "batch_var", "running_mean",
                                   "running_var", name="normalization-stats")
        self.text = text("stats")
        self.figs = []
        self._series: dict[str, list] = {series: [] for series in SERIES}  # glyphs and legend items
        for quantity in ("mean", "var"):
            fig = plain_figure(f"{'Mean' if quantity == 'mean' else 'Variance'} before normalization", 360, 280,
                               x_range=Range1d(-0.5, 1), y_axis_label=quantity.replace("var", "variance"))
            items = []
            for series, (colour, label) in SERIES.items():
                line = fig.line(x="x", y=f"{series}_{quantity}", color=colour, line_width=1.5, source=self.source)
                dots = fig.scatter(x="x", y=f"{series}_{quantity}", color=colour, size=4, source=self.source)
                items.append(LegendItem(label=label, renderers=[line, dots]))
                self._series[series] += [line, dots, items[-1]]
            fig.add_layout(Legend(items=items, label_text_font_size="12px", padding=2), "below")  # one a line
            fig.add_tools(HoverTool(tooltips=[("index", "@x"), ("your input", f"@image_{quantity}{{0.000}}"),
                                              ("batch", f"@batch_{quantity}{{0.000}}"),
                                              ("running", f"@running_{quantity}{{0.000}}")], mode="vline"))
            self.figs.append(fig)
        self.maps = Tiles("", 3, "normalization-maps")
        self.sources = [self.source, self.maps.source]
        self.results = [self.source, *self.figs, self.text, self.maps.source, self.maps.fig]

    def show(self, s: Shown) -> None:
        record, size, c = s.study.record, s.size, s.channel
        x = record.input
        xs = np.arange(x.shape[1])
        nan = np.full(len(xs), np.nan)
        own = s.study.own_statistics()
        if s.study.layout == "tokens":  # LayerNorm: per token, over the features
            image_mean, image_var = numpy(own.mean[0, :, 0]), numpy(own.var[0, :, 0])
            columns = dict(x=xs, image_mean=image_mean, image_var=image_var, batch_mean=nan, batch_var=nan,
                           running_mean=nan, running_var=nan)
            axis = "token (0: class token)"
            message = (f"LayerNorm takes one mean and variance per token, over its {x.shape[2]} features, so your "
                       f"input alone decides them: there are no running statistics and the batch does not matter. "
                       f"Token 0: mean {plots.format_value(image_mean[0])}, variance "
                       f"{plots.format_value(image_var[0])}.")
        else:  # per channel, over H×W
            batch_mean, batch_var = s.study.batch_statistics(size)
            running = "running_mean" in record.buffers
            columns = dict(x=xs, image_mean=numpy(own.mean.flatten()), image_var=numpy(own.var.flatten()),
                           batch_mean=numpy(batch_mean.flatten()), batch_var=numpy(batch_var.flatten()),
                           running_mean=numpy(record.buffers["running_mean"]) if running else nan,
                           running_var=numpy(record.buffers["running_var"]) if running else nan)
            axis = "channel"
            value = {k: plots.format_value(v[c]) for k, v in columns.items() if k != "x"}
            message = (f"Channel {c}: your image alone has mean {value['image_mean']} and variance "
                       f"{value['image_var']}; the batch of {size} has {value['batch_mean']} and {value['batch_var']}")
            message += (f"; the running statistics (what eval mode divides by) are {value['running_mean']} and "
                        f"{value['running_var']}." if running else ".")
        self.source.data = columns
        for series, parts in self._series.items():  # hide what does not apply (a ViT: no batch, no running)
            for part in parts:
                part.visible = bool(np.isfinite(columns[f"{series}_mean"]).any())
        for fig in self.figs:
            fig.xaxis.axis_label = axis
            fig.x_range.end = len(xs) - 0.5
        out = s.study.output()
        self.text.object = message + (
            f" Check: normalizing with these statistics and applying γ, β reproduces the layer's output within "
            f"{plots.format_value(out.check)}.")
        pick = lambda t: picked(s.study.layout, c, t[0])  # noqa: E731
        self.maps.show({"before": pick(x), "normalized": pick(out.normalized), "after γ, β": pick(out.after)})
        what = "features × tokens" if s.study.layout == "tokens" else f"channel {c}"
        self.maps.fig.title.text = f"Your input at {record.name},\n{what}"
        tag_results(s.model, *self.results)


class Histogram:
    """Section 2: every value of the layer's input and output, on one scale."""

    def __init__(self):
        self.source = plots.source("left", "right", "before", "after", name="normalization-hist")
        fig = plain_figure("", 360, 240, x_axis_label="value", y_axis_label="count")
        before = fig.quad(left="left", right="right", top="before", bottom=0, fill_color="#0072B2", fill_alpha=0.45,
                          line_color=None, source=self.source)
        after = fig.quad(left="left", right="right", top="after", bottom=0, fill_color="#D55E00", fill_alpha=0.45,
                         line_color=None, source=self.source)
        fig.add_layout(Legend(items=[LegendItem(label="before (layer input)", renderers=[before]),
                                     LegendItem(label="after (layer output)", renderers=[after])],
                              label_text_font_size="12px", orientation="horizontal", padding=2), "below")
        self.fig = fig
        self.sources, self.results = [self.source], [self.source, self.fig]

    def show(self, s: Shown) -> None:
        before, after = s.study.record.input, s.study.record.output
        edges = nm.common_edges(before, after)
        e = numpy(edges)
        self.source.data = dict(left=e[:-1], right=e[1:], before=nm.histogram(before, edges).numpy(),
                                after=nm.histogram(after, edges).numpy())
        self.fig.title.text = f"All {before.numel():,} values of your input at {s.study.record.name}"
        tag_results(s.model, *self.results)

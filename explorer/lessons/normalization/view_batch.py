"""Sections 3 to 6 of the normalization lesson: the batch-size experiment (BatchNorm with the statistics of a batch
of MNIST digits, the student's first, against eval mode and against LayerNorm/GroupNorm, and the whole network's
prediction in train mode); what the other kinds would make of the same activations; folding BatchNorm into the
convolution before it; |γ| of every norm layer with the switched-off channels.
"""

from __future__ import annotations

import numpy as np
import torch
from bokeh.models import HoverTool, Legend, LegendItem, Range1d

from explorer.lessons import plots
from explorer.lessons.normalization import math as nm
from explorer.lessons.normalization.view_figures import Shown, Tiles, clear, numpy, picked, plain_figure, text
from explorer.session.tags import tag_results

CURVES = {"batch": "#D55E00", "layer": "#0072B2", "group": "#009E73"}
FOLD_INPUTS = 3  # input channels of a kernel shown before (top row) and after folding (bottom row)
OFF_COLOUR, ON_COLOUR = "#D55E00", "#56B4E9"
RUNNING = "*Running the whole network in train mode…*"


class BatchSize:
    """Section 3: mean |difference| from eval mode per batch size, for BatchNorm, LayerNorm and GroupNorm; the whole
    network's prediction with every BatchNorm in train mode (slow: the lesson asks for it)."""

    def __init__(self):
        self.source = plots.source("size", *CURVES, name="normalization-batch")
        self.now = plots.source("size", "value", "colour", name="normalization-batch-now")
        self.text, self.prediction = text("batch"), text("prediction")
        fig = plain_figure("Your output vs the model's eval-mode output", 360, 300, x_axis_type="log",
                           x_axis_label="batch size (images; yours is one of them)",
                           y_axis_label="mean |difference|", y_range=Range1d(0, 1))
        items = []
        for kind, colour in CURVES.items():
            line = fig.line(x="size", y=kind, color=colour, line_width=2, source=self.source)
            dots = fig.scatter(x="size", y=kind, color=colour, size=5, source=self.source)
            items.append(LegendItem(label=f"{nm.KINDS[kind]}{' (batch statistics)' if kind == 'batch' else ''}",
                                    renderers=[line, dots]))
        fig.scatter(x="size", y="value", color="colour", size=12, marker="circle", fill_alpha=0.3,
                    line_width=2, source=self.now)
        fig.add_layout(Legend(items=items, label_text_font_size="12px", padding=2), "below")  # one a line
        fig.xaxis.ticker.base = 2
        fig.add_tools(HoverTool(tooltips=[("batch size", "@size"), ("BatchNorm", "@batch{0.0000}"),
                                          ("LayerNorm", "@layer{0.0000}"), ("GroupNorm", "@group{0.0000}")],
                                mode="vline"))
        self.fig = fig
        self.sources = [self.source, self.now]
        self.results = [self.source, self.now, self.fig, self.text, self.prediction]

    def show(self, s: Shown, batchable: bool) -> None:
        study, size = s.study, s.size
        sizes = nm.BATCH_SIZES if batchable else (1,)
        curves = {k: [study.difference(k, n, s.groups) for n in sizes] for k in CURVES}
        self.source.data = dict(size=list(sizes), **curves)
        now = {k: study.difference(k, size, s.groups) for k in CURVES}
        self.now.data = dict(size=[size] * 3, value=[now[k] for k in CURVES], colour=list(CURVES.values()))
        top = max(max(v) for v in curves.values())
        self.fig.y_range.end = top * 1.1 if top > 0 else 1
        tag_results(s.model, *self.results)
        if not batchable:
            self.text.object = ("Batches are drawn from the MNIST sample, so this part works with the MNIST "
                                "models only; with one image, BatchNorm's batch statistics are this image's "
                                f"own (per channel over its positions). Mean |difference| from eval mode: "
                                f"{plots.format_value(now['batch'])}.")
            return
        record = study.record
        biggest = nm.max_abs_difference(study.first_output("batch", size, s.groups), record.output[0])
        if nm.is_batch_norm(study.module):
            self.text.object = (
                f"**Train vs eval at batch size {size}:** BatchNorm with the batch's statistics changes your "
                f"output at {record.name} by {plots.format_value(now['batch'])} on average (largest "
                f"{plots.format_value(biggest)}) against the model's eval-mode output. LayerNorm and GroupNorm "
                f"({s.groups} groups) differ from it by the same amount for every batch size: "
                f"{plots.format_value(now['layer'])} and {plots.format_value(now['group'])}.")
        else:
            self.text.object = (
                f"**Batch size {size}:** this layer is a {record.module_type}, which never looks at the other "
                f"samples: the model's output is the same for every batch size (LayerNorm's curve: "
                f"{plots.format_value(now['layer'])}, float rounding). A BatchNorm here, over the batch "
                f"{'and the tokens ' if study.layout == 'tokens' else ''}of each feature, would change your output "
                f"by {plots.format_value(now['batch'])} on average (largest {plots.format_value(biggest)}).")

    def show_prediction(self, model: str, labels: tuple[str, ...], eval_probs: torch.Tensor, size: int | None,
                        probs: torch.Tensor | None) -> None:
        """The whole network with every BatchNorm in train mode; nothing for size None (no batches)."""
        top = int(eval_probs.argmax())
        tag_results(model, self.prediction)
        self.prediction.object = "" if size is None else (
            "No BatchNorm in this network: its prediction does not depend on the batch." if probs is None else
            f"**Whole network, every BatchNorm in train mode, batch of {size}:** the model gives "
            f"**{labels[top]}** {float(probs[top]):.1%} (eval mode: {float(eval_probs[top]):.1%}); its top class "
            f"is **{labels[int(probs.argmax())]}** ({float(probs.max()):.1%}).")


class WhatIf:
    """Section 4: the student's activations normalized by each kind, with the layer's own γ and β."""

    def __init__(self):
        self.tiles = Tiles("", 6, "normalization-whatif")  # the model's output and the five kinds: two rows
        self.text = text("whatif")
        self.sources, self.results = [self.tiles.source], [self.tiles.source, self.tiles.fig, self.text]

    def show(self, s: Shown) -> None:
        study, size = s.study, s.size
        record = study.record
        tiles = {"model (eval)": picked(study.layout, s.channel, record.output[0])}
        rows = []
        for kind, label in nm.KINDS.items():
            tiles[label] = picked(study.layout, s.channel, study.first_output(kind, size, s.groups))
            mark = "**" if kind == s.kind else ""
            count = nm.count_statistics(kind, (size, *record.input.shape[1:]), s.groups, study.layout)
            rows.append(f"| {mark}{label}{mark} | {count:,} | "
                        f"{plots.format_value(study.difference(kind, size, s.groups))} |")
        self.tiles.show(tiles)
        what = "features × tokens" if study.layout == "tokens" else f"channel {s.channel}"
        self.tiles.fig.title.text = f"Your input at {record.name}, {what},\nnormalized five ways, same γ and β"
        tag_results(s.model, *self.results)
        self.text.object = (
            f"Each kind applied to the same activations (a batch of {size}, yours first), then the layer's own γ and "
            f"β. Statistics only: putting another kind into the trained model would need retraining, because the "
            f"layers after it learned to expect this layer's output.\n\n"
            "| kind | means and variances | mean \\|difference\\| from the model |\n|---|---:|---:|\n"
            + "\n".join(rows))


class Fold:
    """Section 5: a BatchNorm after a convolution, folded into it: the kernels and biases before and after."""

    def __init__(self):
        self.tiles = Tiles("Kernels of one output channel:\nbefore (W, above), folded (W′, below)", 2 * FOLD_INPUTS,
                           "normalization-fold", columns=FOLD_INPUTS)
        self.bias = plots.source("channel", "before", "after", name="normalization-fold-bias")
        self.text = text("fold")
        fig = plain_figure("Bias per output channel", 360, 240, x_range=Range1d(-0.5, 1),
                           x_axis_label="output channel", y_axis_label="bias")
        b = fig.scatter(x="channel", y="before", color="#0072B2", size=5, source=self.bias)
        a = fig.vbar(x="channel", top="after", width=0.7, color="#D55E00", alpha=0.7, source=self.bias)
        fig.add_layout(Legend(items=[LegendItem(label="conv bias b (0 where it has none)", renderers=[b]),
                                     LegendItem(label="folded bias b′", renderers=[a])],
                              label_text_font_size="12px", padding=2), "below")
        self.bias_fig = fig
        self.sources = [self.tiles.source, self.bias]
        self.results = [self.tiles.source, self.bias, self.tiles.fig, self.bias_fig, self.text]

    def show(self, s: Shown, fold: nm.Folding | None) -> None:
        self.tiles.fig.visible = self.bias_fig.visible = fold is not None
        tag_results(s.model, *self.results)
        if fold is None:
            clear(*self.sources)
            self.text.object = ("Only a BatchNorm in eval mode that follows a convolution can be folded: its "
                                "statistics are fixed numbers. This layer is not one; LayerNorm's "
                                "statistics come from each input, so it never folds.")
            return
        c = s.channel
        before, after = fold.weight[c], fold.folded.weight[c]  # (C_in / groups, kh, kw)
        shown = min(before.shape[0], FOLD_INPUTS)
        tiles = {f"W[{c}, {i}]": before[i] for i in range(shown)}
        tiles.update({f"W′[{c}, {i}]": after[i] for i in range(shown)})
        self.tiles.show(tiles, columns=shown)  # the kernels before folding above the folded ones
        channels = len(fold.bias)
        # the layer's weights: the same after a new input, then nothing is sent
        plots.set_data(self.bias, dict(channel=np.arange(channels), before=numpy(fold.bias),
                                       after=numpy(fold.folded.bias)))
        self.bias_fig.x_range.end = channels - 0.5
        self.text.object = (
            f"**{fold.conv} + {s.study.record.name} → one convolution.** Output channel {c}: every weight is "
            f"multiplied by γ/σ = {plots.format_value(float(fold.scale[c]))}; the bias becomes β + (b − μ)·γ/σ = "
            f"{plots.format_value(float(fold.folded.bias[c]))}. The folded convolution on your input equals conv + "
            f"BatchNorm (eval mode) within a largest |difference| of "
            f"**{fold.difference:.2e}**, with one layer fewer to run.")


class Gamma:
    """Section 6: |γ| of every channel of every norm layer, the switched-off ones in orange."""

    def __init__(self):
        self.source = plots.source("x", "gamma", "colour", "layer", "channel", "size", name="normalization-gamma")
        self.text = text("gamma")
        # as wide as the lesson, up to a column of 30 px per layer (set in show)
        fig = plain_figure("|γ| per channel, one column per norm layer", 360, 300, x_range=[""],
                           y_axis_label="|γ| (scale after normalizing)", sizing_mode="stretch_width")
        points = fig.scatter(x="x", y="gamma", color="colour", size="size", alpha=0.7, source=self.source)
        fig.add_tools(HoverTool(renderers=[points], tooltips=[("layer", "@layer"), ("channel", "@channel"),
                                                              ("|γ|", "@gamma{0.0000}")]))
        self.fig = fig
        self.sources, self.results = [self.source], [self.source, self.fig, self.text]

    def show(self, model: str, summaries: list[nm.GammaSummary]) -> None:
        cols: dict[str, list] = {k: [] for k in self.source.data}
        rng = np.random.default_rng(0)  # a fixed sideways jitter, so that the points do not hide each other
        for i, s in enumerate(summaries):
            magnitude, off = numpy(s.magnitude), numpy(s.near_zero) > 0
            cols["x"].extend(i + 0.5 + rng.uniform(-0.3, 0.3, len(magnitude)))  # factor i is centred on i + 0.5
            cols["gamma"].extend(magnitude)
            cols["colour"].extend(np.where(off, OFF_COLOUR, ON_COLOUR))
            cols["layer"].extend([s.name] * len(magnitude))
            cols["channel"].extend(range(len(magnitude)))
            cols["size"].extend(np.where(off, 7, 4))
        self.source.data = cols
        tag_results(model, *self.results)
        names = [s.name for s in summaries]
        self.fig.x_range.factors = names
        self.fig.xaxis.major_label_orientation = 0.9 if len(names) > 6 else 0
        self.fig.max_width = max(360, min(1100, 30 * len(names) + 120))
        off = sum(int(s.near_zero.sum()) for s in summaries)
        total = sum(len(s.magnitude) for s in summaries)
        worst = max(summaries, key=lambda s: float(s.near_zero.float().mean()), default=None)
        self.text.object = (
            f"|γ| of every channel of every norm layer. Orange: |γ| below {nm.NEAR_ZERO:.0%} of its layer's largest, "
            f"so the channel's normalized values are multiplied by almost nothing and only β gets through: it is "
            f"effectively switched off. {off:,} of {total:,} channels ({off / max(total, 1):.1%}) here"
            + (f"; most in {worst.name} ({int(worst.near_zero.sum())} of {len(worst.magnitude)})." if off else ".")
            + " Training only BatchNorm's γ and β on random convolutions switches off about a third of the features "
              "(Frankle et al., \"Training BatchNorm and only BatchNorm\").") if summaries else (
            "This model has no norm layer with a learned scale γ.")

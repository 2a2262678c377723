"""Section 6 of the attention lesson: what attention filters, the relative log amplitude of the feature maps.

Sources "attention-frequency-lines" and "attention-frequency-layers" (per model, the Δ log amplitude at the highest
frequency of every layer's output against its relative depth; attention layers marked) and
"attention-frequency-curves" (Δ log amplitude over frequency, every layer of the session's model, the chosen one
drawn thick). All from frequency.comparison, off the event loop (the lesson's slow work): on the CPU it takes from
tens of milliseconds (the MNIST models) to a few tenths of a second (MobileNetV2).

Unlike the other sections this one works on any model, a CNN included: the comparison of a CNN with a ViT is its
point, so the lesson shows it on a CNN too, below the message that the other sections need attention.
"""

from __future__ import annotations

import math

import panel as pn
from bokeh.models import HoverTool, Range1d
from bokeh.plotting import figure

from explorer.lessons import plots
from explorer.lessons.attention import frequency as fq
from explorer.lessons.attention.view_figures import PHONE_WIDTH, QUERY_COLOUR, Changed
from explorer.session.in_step import keep_in_step
from explorer.session.state import Inference
from explorer.session.tags import tag_results
from explorer.session.work import SlowWork

KIND_NAMES = {"attention": "attention layer", "mlp": "MLP", "embedding": "patch embedding + positions",
              "conv": "convolution", "norm": "normalization", "activation": "activation", "pool": "pooling"}
PLURALS = {"attention": "attention layers", "mlp": "MLPs", "conv": "convolutions"}
JUDGED = ("attention", "mlp", "conv")  # the kinds the paper compares: low-pass attention, high-pass MLP and conv


class Frequency:
    """Section 6: figures made once (in the constructor), data assigned when the slow work answers."""

    def __init__(self, changed: Changed, slow: SlowWork, choose_layer):
        self._changed, self._slow = changed, slow
        self._result: tuple[Inference, fq.Comparison] | None = None  # what the figures show
        self._layer = ""  # the lesson's chosen layer, as last asked ('' before the student picks one)
        self.text = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
        self.curves_text = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
        self.layer_menu = keep_in_step(pn.widgets.Select(label="Layer of this model", options={}, width=300))
        self.layer_menu.param.watch(lambda event: choose_layer(event.new), "value")
        self.status = pn.pane.Markdown("", visible=False, margin=(0, 10))

        self._lines = plots.source("xs", "ys", "model", "colour", name="attention-frequency-lines")
        self._layers = plots.source("depth", "high", "model", "layer", "kind", "change", "colour",
                                    name="attention-frequency-layers")
        self._attention = plots.source("depth", "high", "model", "layer", "kind", "change", "colour")
        self._chosen_point = plots.source("depth", "high")
        fig = figure(width=PHONE_WIDTH, height=340, sizing_mode="stretch_width", max_width=760,
                     x_range=Range1d(-0.03, 1.03), y_range=Range1d(-1, 1), tools="", toolbar_location=None,
                     title="high frequencies through the network")
        fig.title.text_font_size = "13px"
        fig.xaxis.axis_label = "relative depth (0 = first layer, 1 = last)"
        fig.yaxis.axis_label = "Δ log amplitude at the highest frequency"
        fig.multi_line(xs="xs", ys="ys", line_color="colour", line_width=2, legend_field="model", source=self._lines)
        points = fig.scatter(x="depth", y="high", size=6, fill_color="colour", line_color="white", source=self._layers)
        marked = fig.scatter(x="depth", y="high", size=12, marker="triangle", fill_color="colour", line_color="black",
                             source=self._attention, legend_label="attention layer")
        fig.scatter(x="depth", y="high", size=18, fill_alpha=0, line_color=QUERY_COLOUR, line_width=2,
                    source=self._chosen_point, legend_label="chosen layer")
        fig.add_tools(HoverTool(renderers=[points, marked], tooltips=[
            ("model", "@model"), ("layer", "@layer (@kind)"), ("Δ log amplitude", "@high{0.00}"),
            ("change in this layer", "@change")]))
        fig.legend.label_text_font_size = "12px"
        fig.add_layout(fig.legend[0], "right")  # beside the plot: the lines fill it from top to bottom
        self._high_fig = fig

        self._curves = plots.source("xs", "ys", "layer", "colour", name="attention-frequency-curves")
        self._chosen_curve = plots.source("xs", "ys", "layer")
        fig = figure(width=PHONE_WIDTH, height=320, sizing_mode="stretch_width", max_width=620,
                     x_range=Range1d(0, 1), y_range=Range1d(-1, 1), tools="", toolbar_location=None,
                     title="Δ log amplitude over frequency")
        fig.title.text_font_size = "13px"
        fig.xaxis.axis_label, fig.yaxis.axis_label = "frequency ω (× π rad per sample)", "Δ log amplitude"
        curves = fig.multi_line(xs="xs", ys="ys", line_color="colour", line_width=1.5, line_alpha=0.8,
                                source=self._curves)
        chosen = fig.multi_line(xs="xs", ys="ys", line_color=QUERY_COLOUR, line_width=4, source=self._chosen_curve)
        fig.add_tools(HoverTool(renderers=[curves, chosen], tooltips=[("layer", "@layer")]))
        self._curves_fig = fig
        self._shown = pn.Column(self.text, pn.pane.Bokeh(self._high_fig, sizing_mode="stretch_width"), self.layer_menu,
                                self.curves_text, pn.pane.Bokeh(self._curves_fig, sizing_mode="stretch_width"),
                                sizing_mode="stretch_width", margin=0)

    def layout(self) -> list:
        return [pn.pane.Markdown("#### 6. What attention filters: high and low frequencies", margin=(0, 10),
                                 css_classes=["attention-part-6"]),
                self.status, self._shown]

    def draw(self, inference: Inference, layer: str) -> None:
        """Follow the session's input (slow work: the answer comes later) and show the chosen `layer`."""
        self._layer = layer
        if self._changed("frequency", (inference,)):
            if self._result is None or self._result[0].model is not inference.model:
                # until the answer comes, nothing on screen describes another model than the session's
                self._shown.visible = False
                self.status.param.update(object=f"Computing the spectra of every layer of {inference.model.name} …",
                                         visible=True)
            self._slow.request(inference, lambda: fq.comparison(inference.model, inference.x, inference.source),
                               lambda comparison: self._show(inference, comparison))
        elif self._result is not None and self._changed("frequency-layer", (inference, layer)):
            self._draw_layer(layer)

    # --- shown when the slow work answers ---

    def _show(self, inference: Inference, comparison: fq.Comparison) -> None:
        self._result = (inference, comparison)
        self._shown.visible, self.status.visible = True, False
        palette = plots.CATEGORICAL
        colours = {name: palette[i % len(palette)] for i, (name, _) in enumerate(comparison.spectra)}
        lines, layers, attention = [], [], []
        for name, spectra in comparison.spectra:
            depth = spectra.depth.tolist()
            lines.append(dict(xs=depth, ys=[s.high for s in spectra.layers], model=name, colour=colours[name]))
            for d, s in zip(depth, spectra.layers, strict=True):
                row = dict(depth=d, high=s.high, model=name, layer=s.name, kind=KIND_NAMES.get(s.kind, s.kind),
                           change="—" if math.isnan(s.change) else f"{s.change:+.2f}", colour=colours[name])
                (attention if s.kind == "attention" else layers).append(row)
        self._lines.data = _columns(lines, self._lines)
        self._layers.data = _columns(layers, self._layers)
        self._attention.data = _columns(attention, self._attention)
        highs = [s.high for _, spectra in comparison.spectra for s in spectra.layers]
        self._high_fig.y_range.start, self._high_fig.y_range.end = _padded(highs)
        mine = self._spectra()
        self._curves.data = dict(
            xs=[s.frequencies_pi.tolist() for s in mine.layers], ys=[s.delta.tolist() for s in mine.layers],
            layer=[s.name for s in mine.layers],
            colour=[plots.SEQUENTIAL[round(d * 255)] for d in mine.depth.tolist()])
        curves = [v for s in mine.layers for v in s.delta.tolist()]
        self._curves_fig.y_range.start, self._curves_fig.y_range.end = _padded(curves)
        self._curves_fig.title.text = f"Δ log amplitude over frequency, every layer of {inference.model.name}"
        self.text.object = explanation(comparison)
        tag_results(inference.model.name, self._lines, self._layers, self._attention, self._curves, self._high_fig,
                    self._curves_fig, self.text)
        self._draw_layer(self._layer)

    def _draw_layer(self, layer: str) -> None:
        inference, _ = self._result
        mine = self._spectra()
        names = [s.name for s in mine.layers]
        if not names:
            self.layer_menu.options, self.curves_text.object = {}, ""
            return
        index = names.index(layer) if layer in names else default_layer(mine)
        s = mine.layers[index]
        self._changed("frequency-layer", (inference, s.name))  # the lesson, told the menu's value, has nothing to do
        # choices and value together: a menu never holds a value outside its choices (it would pick its first)
        self.layer_menu.param.update(
            options={f"{x.name} ({KIND_NAMES.get(x.kind, x.kind)})": x.name for x in mine.layers}, value=s.name)
        self._chosen_point.data = dict(depth=[float(mine.depth[index])], high=[s.high])
        self._chosen_curve.data = dict(xs=[s.frequencies_pi.tolist()], ys=[s.delta.tolist()], layer=[s.name])
        change = ("" if math.isnan(s.change) else
                  f" From its input to its output the value at the highest frequency {_moved(s.change)}.")
        self.curves_text.object = (
            f"One line per layer of **{inference.model.name}**, dark (first) to yellow (last); thick: **{s.name}** "
            f"({KIND_NAMES.get(s.kind, s.kind)}), a {s.side} × {s.side} map, whose diagonal holds {len(s.delta)} "
            f"frequencies from 0 to {s.frequencies_pi[-1]:.2f}π. At the highest, its amplitude is "
            f"e^{s.high:.2f} = {math.exp(s.high):.3g} times that at zero frequency (the map's mean), in geometric "
            f"mean over the channels.{change}")
        tag_results(inference.model.name, self._chosen_point, self._chosen_curve, self.curves_text)

    def _spectra(self) -> fq.NetworkSpectra:
        """The session model's spectra in the shown result (empty where it could not be measured)."""
        inference, comparison = self._result
        return dict(comparison.spectra).get(inference.model.name, fq.NetworkSpectra((), ()))


def default_layer(spectra: fq.NetworkSpectra) -> int:
    """The layer shown before the student picks one: the last attention layer, else the last convolution, else the
    last layer."""
    kinds = [s.kind for s in spectra.layers]
    for kind in ("attention", "conv"):
        if kind in kinds:
            return len(kinds) - 1 - kinds[::-1].index(kind)
    return len(kinds) - 1


def explanation(comparison: fq.Comparison) -> str:
    """What the figures show, in words, from the numbers: per model, how many layers of each kind the paper compares
    lower the highest frequency, and whether that agrees with the paper."""
    parts, verdicts = [], []
    for name, spectra in comparison.spectra:
        counts = [(kind, *spectra.lowering(kind)) for kind in JUDGED if spectra.lowering(kind)[1]]
        said = "; ".join(f"{low} of {n} {PLURALS[kind]} lower it" for kind, low, n in counts)
        left_out = len(spectra.left_out)
        parts.append(f"- **{name}**: {said or 'no attention, MLP or convolution layer to judge'}"
                     + (f" ({left_out} layer{'s' * (left_out > 1)} without a square map left out)" if left_out else "")
                     + ".")
        verdicts += [f"in {name}, {PLURALS[kind]} {_verdict(kind, low, n)}" for kind, low, n in counts]
    refused = "".join(f"\n- **{name}** could not be measured: {why}" for name, why in comparison.refused)
    return (
        "Park & Kim (\"How Do Vision Transformers Work?\", ICLR 2022) take the 2-D Fourier transform of each "
        "channel of a layer's output, average the log amplitude over the channels, and read it along the diagonal "
        "from the zero frequency (the map's mean) to the highest, ω = π (a pattern that flips sign from one "
        "position to the next). Δ log amplitude is that minus its value at zero frequency. They find that attention "
        "layers lower the high frequencies (low-pass filters), and MLPs and convolutions raise them (high-pass). "
        "Below, your input through each model (a ViT's feature map is its token sequence on the patch grid, "
        "without the class token); a layer lowers the high frequencies when the value at the highest frequency is "
        "smaller after it than before.\n\n" + "\n".join(parts) + refused
        + ("\n\nOn this input, " + "; ".join(verdicts) + "." if verdicts else "")
        + "\n\n" + "".join(f"{said} " for said in (_coarse(*pair) for pair in comparison.spectra) if said)
        + "One input is one sample: the paper averages over many images.")


def _verdict(kind: str, low: int, n: int) -> str:
    """How the layers of `kind` act, against the paper's finding (attention lowers, MLPs and convolutions raise)."""
    if 2 * low == n:
        return f"lower the high frequencies in half of the layers ({low} of {n}): no clear filter either way"
    lowers = 2 * low > n
    said = f"lower the high frequencies in {low} of {n} layers" if lowers else f"raise them in {n - low} of {n} layers"
    agrees = lowers == (kind == "attention")
    return f"{said}, {'as in the paper' if agrees else '**unlike the paper**'}"


def _coarse(name: str, spectra: fq.NetworkSpectra) -> str:
    """Say how few frequencies the smallest map of a model has on its diagonal, when they are few (4 or fewer)."""
    small = min(spectra.layers, key=lambda s: s.side, default=None)
    if small is None or len(small.frequencies_pi) > 4:
        return ""
    shown = ", ".join("0" if f == 0 else "π" if f == 1 else f"{f:.2g}π" for f in small.frequencies_pi.tolist())
    return f"The smallest maps of {name} are {small.side} × {small.side}: their diagonal holds only {shown}."


def _moved(change: float) -> str:
    return f"{'fell' if change < 0 else 'rose'} by {abs(change):.2f} (× {math.exp(change):.3g} in amplitude)"


def _columns(rows: list[dict], source) -> dict[str, list]:
    return {c: [r[c] for r in rows] for c in source.column_names}


def _padded(values: list[float]) -> tuple[float, float]:
    """A y range around `values`, 8 % to spare on each side."""
    finite = [v for v in values if math.isfinite(v)] or [0.0]
    low, high = min(finite), max(finite)
    spare = max(high - low, 0.1) * 0.08
    return low - spare, high + spare

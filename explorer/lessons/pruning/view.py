"""The pruning lesson: a sparsity slider with the dense and the pruned model side by side.

Live, on every slider position (a private pruned copy, math.prune): both models' top classes for the
student's input, the chosen layer's weights before and after (pruned weights drawn dark), every layer's
share of zero weights, parameter, non-zero and MAC counts. The accuracy on the held-out set is read off
the cached accuracy-vs-sparsity curve at once (interpolated between its measured points, and labelled
so), then measured for exactly this setting in a worker thread; only the newest request is painted.
MobileNetV2 has no test set here: its "accuracy" is top-1 agreement with the dense model over the gallery
photos and their mirror images, and is labelled as agreement.

Slow work (curves, per-layer sensitivity, BatchNorm re-estimation, latency) runs in worker threads with a
progress bar; accuracies are cached process-wide by (model, method, sparsity, scope, layer) in core/evaluate
and measured on math.evaluation_copy (the same function, computed faster). Figures are built once; updates
replace source data and properties inside one_update().
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

import numpy as np
import panel as pn
import param
import torch
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    HoverTool,
    LabelSet,
    Legend,
    LegendItem,
    LinearColorMapper,
    Range1d,
    Span,
)
from bokeh.plotting import figure

from explorer.core import data, evaluate, images, zoo
from explorer.core.data import EvalSet
from explorer.errors import InputError
from explorer.lessons import plots
from explorer.lessons.pruning import math as pm
from explorer.ui.gallery import photo_gallery
from explorer.ui.narrative import Narrative, Step
from explorer.ui.state import SessionView, follows, one_update

log = logging.getLogger(__name__)

CURVE_AMOUNTS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
SETTLE_S = 0.25           # the slider must rest this long before the accuracy of its position is measured
LIVE_PARAMS = 1_000_000   # models up to this size re-prune while the slider is dragged; larger ones on release
TOP_K = 5
MAP_SIDE = 160            # largest side of a weight picture sent (block means beyond it)
PRUNED_COLOUR = "#3b3b3b"  # pruned weights are transparent over this background
LATENCY_BATCH = 256        # MNIST images per timed forward pass
CALIBRATION_IMAGES = 1000  # MNIST training digits used to re-estimate BatchNorm statistics
METHOD_COLOURS = {"magnitude": "#0072B2", "random": "#999999", "filters-l1": "#D55E00", "filters-l2": "#009E73"}
DENSE_COLOUR, PRUNED_BAR = "#0072B2", "#D55E00"


@functools.lru_cache(maxsize=4)
def held_out(model_name: str) -> EvalSet:
    """MNIST test set for MNIST models; otherwise gallery photos (and mirrors) labelled by the dense model."""
    model = zoo.load(model_name)
    if model.card.preprocess == "mnist":
        return data.eval_set("test", model.card.mean, model.card.std)
    photos = [item.source for item in photo_gallery()]
    pictures = photos + [np.ascontiguousarray(p[:, ::-1]) for p in photos]
    inputs = torch.cat([images.to_input(p, model.card) for p in pictures])
    return pm.agreement_set(model.module, inputs, f"{len(photos)} gallery photos and their mirror images")


def quantity(model: zoo.ZooModel) -> str:
    return "accuracy" if model.card.preprocess == "mnist" else "agreement"


def calibration_batches(model: zoo.ZooModel) -> list[torch.Tensor]:
    """Images for re-estimating BatchNorm statistics: training digits, or the agreement photos (said in the view)."""
    if model.card.preprocess == "mnist":
        digits = data.mnist("train")
        x = data.normalize_digits(digits.images[:CALIBRATION_IMAGES], model.card.mean, model.card.std)
        return list(x.split(250))
    return list(held_out(model.name).inputs.split(8))


class PruningLesson(SessionView):
    """Prune a private copy of the model and see what it changes: prediction, weights, counts, accuracy, speed."""

    method = param.Selector(default="magnitude", objects={m.label: k for k, m in pm.METHODS.items()},
                            doc="Which weights go first.")
    scope = param.Selector(default="layer", objects={v: k for k, v in pm.SCOPES.items()},
                           doc="Rank weights within each layer, or all layers together.")
    sparsity = param.Integer(default=50, bounds=(0, 99), doc="Percent of weights (or units) set to zero.")
    layer = param.Selector(default="", objects=[""], doc="Layer whose weights are drawn.")

    def __init__(self, model: str | None = None, **params):
        super().__init__(model=model, **params)
        self._pruned: torch.nn.Module | None = None
        self._request: tuple = ()   # the setting whose accuracy should be measured next
        self._measured: tuple = ()  # the setting whose measured accuracy is shown
        self._layout: tuple[object, pm.MacLayout | None] = (None, None)  # (inference, its MAC layout)
        self._curves: dict[tuple, tuple[list[float], list[float]]] = {}
        self._build_figures()
        self._controls()
        self._texts()
        self._narrative = Narrative(STEPS, self, title="Guided tour: pruning")
        self._new_model()

    # --- widgets and text ---

    def _controls(self) -> None:
        self._method_input = pn.widgets.RadioButtonGroup.from_param(self.param.method, color="light",
                                                                    orientation="vertical", width=220)
        self._scope_input = pn.widgets.RadioButtonGroup.from_param(self.param.scope, color="light",
                                                                   orientation="vertical", width=260)
        self._slider = pn.widgets.IntSlider(label="Sparsity (% of weights, or of units when structured)", start=0,
                                            end=99, value=self.sparsity, width=360)
        self._slider.param.watch(self._slider_moved, ["value", "value_throttled"])
        self._layer_input = pn.widgets.Select.from_param(self.param.layer, name="Weights of layer", width=260)
        self._curve_button = pn.widgets.Button(label="Measure accuracy curves", color="primary")
        self._sensitivity_button = pn.widgets.Button(label="Measure per-layer sensitivity")
        self._bn_button = pn.widgets.Button(label="Re-estimate BatchNorm statistics")
        self._speed_button = pn.widgets.Button(label="Measure latency")
        self._curve_button.on_click(self._measure_curves)
        self._sensitivity_button.on_click(self._measure_sensitivity)
        self._bn_button.on_click(self._recalibrate)
        self._speed_button.on_click(self._measure_speed)
        self._progress = pn.indicators.Progress(value=0, max=1, visible=False, width=360)

    def _texts(self) -> None:
        md = functools.partial(pn.pane.Markdown, sizing_mode="stretch_width", margin=(0, 10))
        self._error = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self._prediction_text = md("", css_classes=["pruning-prediction"])
        self._accuracy_text = md("", css_classes=["pruning-accuracy"])
        self._counts_text = md("", css_classes=["pruning-counts"])
        self._progress_text = md("")
        self._bn_text = md("", css_classes=["pruning-bn"])
        self._speed_text = md("", css_classes=["pruning-speed"])
        self._weights_text = md("")

    def _slider_moved(self, event) -> None:
        live = sum(p.numel() for p in self.state.inference.model.module.parameters()) <= LIVE_PARAMS
        if event.name == "value_throttled" or live:
            self.sparsity = event.new

    @param.depends("sparsity", watch=True)
    def _sync_slider(self) -> None:
        self._slider.value = self.sparsity

    # --- model or input change ---

    @follows("state.inference")
    def _new_model(self) -> None:
        inference = self.state.inference
        model = inference.model
        if getattr(self, "_model_name", None) == model.name:
            self._update()
            return
        self._model_name = model.name
        layers = list(pm.prunable_layers(model.module))
        # the first layer after the input's: a full matrix of weights (a depthwise conv is one kernel per channel)
        default = next((n for n in layers[1:] if getattr(model.module.get_submodule(n), "groups", 1) == 1), layers[0])
        with one_update():
            self.param.layer.objects = layers
            self._sparsity_fig.y_range.factors = list(reversed(layers))
            self._sparsity_fig.height = 60 + 16 * len(layers)
            self._curve_fig.yaxis.axis_label = f"{quantity(model)} (%)"
            self._sensitivity_source.data = dict(layer=[], top1=[], text=[])
            self._sensitivity_fig.y_range.factors = []
            self._bn_text.object = self._speed_text.object = ""
            self._show_curves()
            if self.layer != default:
                self.layer = default  # its watcher updates
            else:
                self._update()

    # --- the live update ---

    @param.depends("method", "scope", "sparsity", "layer", watch=True)
    def _update(self) -> None:
        inference = self.state.inference
        model = inference.model
        try:
            self._pruned = pm.prune(model.module, self.method, self.sparsity / 100, self.scope)
        except InputError as e:
            self._error.param.update(object=str(e), visible=True)
            return
        self._error.visible = False
        with torch.no_grad():
            probs = self._pruned(inference.x.to(next(self._pruned.parameters()).device)).softmax(-1)[0].cpu()
        if self._layout[0] is not inference:
            self._layout = (inference, pm.mac_layout(model.module, inference.x))
        counts = pm.counts(self._pruned, self._layout[1])
        dense_macs = counts.macs  # the pruned copy keeps every weight's storage: its dense count is the model's
        layer_sparsity = pm.sparsity(self._pruned)
        with one_update():
            self._show_prediction(inference, probs)
            self._show_weights(model)
            self._sparsity_source.data = dict(
                layer=list(layer_sparsity), zero=[100 * s for s in layer_sparsity.values()],
                text=[f"{100 * s:.1f} %" for s in layer_sparsity.values()])
            self._counts_text.object = (
                f"**Parameters** {counts.params:,} stored, **{counts.nonzeros:,} not zero** "
                f"({counts.nonzeros / counts.params:.1%}). **MACs per image**: dense kernels still do "
                f"{plots.format_si(counts.macs, 'MACs')}; only {plots.format_si(counts.macs_nonzero, 'MACs')} "
                f"multiply a non-zero weight (theoretical, {counts.macs_nonzero / dense_macs:.1%} of dense).")
            self._curve_marker.location = self.sparsity
            self._show_accuracy_estimate()
        self._request = self._setting()
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:  # served: measure in the back
            pn.state.execute(self._measure_accuracy)

    def _show_prediction(self, inference, probs: torch.Tensor) -> None:
        labels = inference.model.labels
        for source, fig, p, colour in ((self._dense_source, self._dense_fig, inference.probs, DENSE_COLOUR),
                                       (self._pruned_source, self._pruned_fig, probs, PRUNED_BAR)):
            values, indices = p.topk(min(TOP_K, len(p)))
            names = [_label(labels, int(i)) for i in indices]
            fig.y_range.factors = list(reversed(names))
            source.data = dict(label=names, prob=values.tolist(), text=[f"{v:.1%}" for v in values.tolist()],
                               colour=[colour] * len(names))
        dense_top, pruned_top = int(inference.probs.argmax()), int(probs.argmax())
        same = "the same answer" if dense_top == pruned_top else "**a different answer**"
        self._prediction_text.object = (
            f"Dense model: **{_label(labels, dense_top)}** ({float(inference.probs[dense_top]):.1%}) · pruned at "
            f"{self.sparsity} %: **{_label(labels, pruned_top)}** ({float(probs[pruned_top]):.1%}), {same}.")

    def _show_weights(self, model: zoo.ZooModel) -> None:
        dense = model.module.get_submodule(self.layer).weight
        pruned = self._pruned.get_submodule(self.layer).weight
        before, after = pm.weight_map(dense).numpy(), pm.weight_map(pruned).numpy()
        limit = plots.max_abs(before)
        small_before, small_after = plots.downsample(before, MAP_SIDE), plots.downsample(after, MAP_SIDE)
        h, w = small_before.shape
        for source, values in ((self._before_source, small_before), (self._after_source, small_after)):
            source.data = dict(image=[plots.to_rgba(values, signed=True, limit=limit)], dw=[w], dh=[h])
        for fig in (self._before_fig, self._after_fig):
            fig.x_range.end, fig.y_range.start = w, h
            fig.frame_height = int(np.clip(240 * h / w, 40, 320))
        self._colour_mapper.low, self._colour_mapper.high = -limit, limit
        zeros = int((pruned == 0).sum())
        shape = plots.format_shape(tuple(dense.shape))
        layout = ("rows: output filter × kernel row; columns: input channel × kernel column"
                  if dense.dim() == 4 else "rows: outputs; columns: inputs")
        shrunk = "" if (h, w) == before.shape else f" Drawn at {w}×{h} (block means of the non-zero weights)."
        self._weights_text.object = (f"**{self.layer}**: weight {shape}, {zeros:,} of {dense.numel():,} are zero "
                                     f"({zeros / dense.numel():.1%}), drawn dark. {layout}.{shrunk}")

    def _show_accuracy_estimate(self) -> None:
        """The accuracy read off this method's cached curve (interpolated), until the measurement arrives."""
        model = self.state.inference.model
        if self._measured == self._setting():
            return  # the measured value for exactly this setting is already shown
        curve = self._curves.get((model.name, self.method, self.scope))
        what = quantity(model)
        if curve is None or len(curve[0]) < 2:
            self._accuracy_text.object = f"Measuring the {what} at {self.sparsity} % …"
            return
        order = np.argsort(curve[0])
        estimate = float(np.interp(self.sparsity, np.asarray(curve[0])[order], np.asarray(curve[1])[order]))
        self._accuracy_text.object = (f"{what.capitalize()} ≈ **{estimate:.1f} %** (read off the curve; "
                                      f"measuring this exact setting …)")

    async def _measure_accuracy(self) -> None:
        request = self._request
        await asyncio.sleep(SETTLE_S)  # a dragged slider: only a position the student stays on is measured
        if request != self._request:
            return
        model = self.state.inference.model
        dataset = held_out(model.name)
        dense = evaluate.accuracy(model.module, dataset)
        acc = await asyncio.to_thread(pm.measure, model.module, self.method, self.sparsity / 100, dataset,
                                      self.scope)
        if request != self._request:
            return  # a newer setting will paint
        self._show_measured(model, dataset, dense, acc)

    def _setting(self) -> tuple:
        return (self.state.inference.model.name, self.method, self.scope, self.sparsity)

    def _show_measured(self, model, dataset: EvalSet, dense: evaluate.Accuracy, acc: evaluate.Accuracy) -> None:
        self._measured = self._setting()
        what = quantity(model)
        self._accuracy_text.object = (
            f"{what.capitalize()} at {self.sparsity} %: **{acc.top1:.2%}** ({acc.correct:,} of {acc.n:,}, measured "
            f"now on {dataset.name}); dense model: {dense.top1:.2%}."
            + ("" if what == "accuracy" else " Agreement = the pruned model's top class equals the dense model's; "
               "there is no ImageNet test set here, so this is not accuracy."))

    def measure_now(self) -> evaluate.Accuracy:
        """Measure and show the current setting's accuracy synchronously (notebooks and tests)."""
        model = self.state.inference.model
        dataset = held_out(model.name)
        acc = pm.measure(model.module, self.method, self.sparsity / 100, dataset, self.scope)
        self._show_measured(model, dataset, evaluate.accuracy(model.module, dataset), acc)
        return acc

    # --- curves ---

    async def _measure_curves(self, _event=None) -> None:
        model, scope = self.state.inference.model, self.scope
        dataset = held_out(model.name)
        todo = [(m, a) for m in pm.METHODS for a in CURVE_AMOUNTS]
        self._curve_button.disabled = True
        self._progress.param.update(max=len(todo), value=0, visible=True)
        try:
            for i, (method, amount) in enumerate(todo):
                self._progress_text.object = (f"Measuring {pm.METHODS[method].label} at {amount:.0%} "
                                              f"({i + 1} of {len(todo)}) on {dataset.name} …")
                acc = await asyncio.to_thread(pm.measure, model.module, method, amount, dataset, scope)
                self._add_point(model.name, method, scope, amount, acc.top1)
                self._progress.value = i + 1
        finally:
            self._curve_button.disabled = False
            self._progress.visible = False
        self._progress_text.object = f"Curves measured on {dataset.name} (cached for this model)."

    def measure_curves_now(self) -> None:
        """The curves, synchronously (tests, notebooks)."""
        model = self.state.inference.model
        dataset = held_out(model.name)
        for method in pm.METHODS:
            for amount, acc in pm.sweep_points(model.module, method, CURVE_AMOUNTS, dataset, self.scope):
                self._add_point(model.name, method, self.scope, amount, acc.top1)

    def _add_point(self, model_name: str, method: str, scope: str, amount: float, top1: float) -> None:
        xs, ys = self._curves.setdefault((model_name, method, scope), ([], []))
        if 100 * amount not in xs:
            xs.append(100 * amount)
            ys.append(100 * top1)
        if model_name == self.state.inference.model.name and scope == self.scope:
            with one_update():
                self._show_curves()
                if method == self.method:
                    self._show_accuracy_estimate()

    @param.depends("scope", watch=True)
    def _show_curves(self) -> None:
        model = self.state.inference.model
        cols: dict[str, list] = {k: [] for k in ("xs", "ys", "colour", "method")}
        points: dict[str, list] = {k: [] for k in ("x", "y", "colour", "method", "text")}
        for method, spec in pm.METHODS.items():
            xs, ys = self._curves.get((model.name, method, self.scope), ([], []))
            order = np.argsort(xs)
            xs, ys = [xs[i] for i in order], [ys[i] for i in order]
            cols["xs"].append(xs)
            cols["ys"].append(ys)
            cols["colour"].append(METHOD_COLOURS[method])
            cols["method"].append(spec.label)
            for x, y in zip(xs, ys, strict=True):
                for k, v in zip(points, (x, y, METHOD_COLOURS[method], spec.label, f"{y:.1f} %"), strict=True):
                    points[k].append(v)
        self._curve_source.data = cols
        self._curve_points.data = points
        self._curve_fig.title.text = f"{quantity(model).capitalize()} against sparsity ({pm.SCOPES[self.scope]})"

    # --- sensitivity, BatchNorm, speed ---

    async def _measure_sensitivity(self, _event=None) -> None:
        model, method, amount = self.state.inference.model, self.method, self.sparsity / 100
        dataset = held_out(model.name)
        layers = (pm.structured_layers if pm.METHODS[method].structured else pm.prunable_layers)(model.module)
        self._sensitivity_button.disabled = True
        self._progress.param.update(max=len(layers), value=0, visible=True)
        rows: list[tuple[str, float]] = []
        try:
            for i, name in enumerate(layers):
                self._progress_text.object = f"Pruning only {name} ({i + 1} of {len(layers)}) …"
                acc = await asyncio.to_thread(pm.measure, model.module, method, amount, dataset, "layer", name)
                rows.append((name, acc.top1))
                self._progress.value = i + 1
        finally:
            self._sensitivity_button.disabled = False
            self._progress.visible = False
        self._progress_text.object = ""
        self._show_sensitivity(rows, method, amount, quantity(model))

    def measure_sensitivity_now(self) -> None:
        model = self.state.inference.model
        rows = list(pm.sensitivity(model.module, self.method, self.sparsity / 100, held_out(model.name)))
        self._show_sensitivity(rows, self.method, self.sparsity / 100, quantity(model))

    def _show_sensitivity(self, rows: list[tuple[str, float]], method: str, amount: float, what: str) -> None:
        with one_update():
            self._sensitivity_fig.y_range.factors = [n for n, _ in reversed(rows)]
            self._sensitivity_fig.height = 70 + 16 * len(rows)
            self._sensitivity_source.data = dict(layer=[n for n, _ in rows], top1=[100 * a for _, a in rows],
                                                 text=[f"{100 * a:.1f} %" for _, a in rows])
            self._sensitivity_fig.title.text = (f"{what.capitalize()} when only this layer loses {amount:.0%} "
                                                f"({pm.METHODS[method].label})")
            self._sensitivity_fig.xaxis.axis_label = f"{what} (%)"

    async def _recalibrate(self, _event=None) -> None:
        await _report_off_the_loop(self._bn_button, self._bn_text, "Re-estimating the BatchNorm statistics …",
                                   self.recalibration_report)

    def recalibration_report(self) -> str:
        model = self.state.inference.model
        dataset = held_out(model.name)
        what = quantity(model)
        pruned = pm.prune(model.module, self.method, self.sparsity / 100, self.scope)
        try:
            fixed = pm.recalibrate_batchnorm(pruned, calibration_batches(model))
        except InputError as e:
            return f"{e} (Its LayerNorms compute their statistics from each token as it comes.)"
        before = pm.measure(model.module, self.method, self.sparsity / 100, dataset, self.scope)
        after = evaluate.uncached_accuracy(fixed, dataset)
        source = (f"the first {CALIBRATION_IMAGES:,} MNIST training digits" if what == "accuracy"
                  else "the same gallery photos the agreement is measured on (there is no other data here)")
        return (f"BatchNorm running mean and variance re-estimated on {source}, nothing else changed: "
                f"{what} **{before.top1:.2%} → {after.top1:.2%}** at {self.sparsity} % "
                f"({pm.METHODS[self.method].label}). Pruning shifts every later layer's statistics; the stored "
                f"ones describe the dense model.")

    async def _measure_speed(self, _event=None) -> None:
        await _report_off_the_loop(self._speed_button, self._speed_text, "Timing the dense and the pruned model …",
                                   self.speed_report)

    def speed_report(self) -> str:
        inference = self.state.inference
        model = inference.model
        # MNIST models are so small that one image times mostly Python overhead: time a batch
        x = inference.x.repeat(LATENCY_BATCH, 1, 1, 1) if model.card.preprocess == "mnist" else inference.x
        pruned = pm.prune(model.module, self.method, self.sparsity / 100, self.scope)
        dense_ms = pm.latency_ms(model.module, x)
        if not pm.METHODS[self.method].structured:
            masked_ms = pm.latency_ms(pruned, x)
            return (f"Batch of {len(x)}: dense **{dense_ms:.2f} ms**, pruned **{masked_ms:.2f} ms** (median of 20). "
                    "Unstructured zeros sit scattered inside dense weight tensors; dense kernels multiply by them "
                    "like any other number, so the time does not drop. It would need sparse kernels or hardware "
                    "that skips zeros (e.g. 2:4 sparsity on recent GPUs).")
        small = pm.shrink(pruned)
        small_ms = pm.latency_ms(small, x)
        c_dense, c_small = pm.counts(model.module, inference.x), pm.counts(small, inference.x)
        return (f"Batch of {len(x)}: dense **{dense_ms:.2f} ms**, physically smaller model **{small_ms:.2f} ms** "
                f"(speed-up ×{dense_ms / small_ms:.2f}, median of 20 runs; timings on a shared machine vary). "
                "The removed units are gone: "
                f"{c_small.params:,} instead of {c_dense.params:,} parameters, "
                f"{plots.format_si(c_small.macs, 'MACs')} instead of {plots.format_si(c_dense.macs, 'MACs')}; "
                "its outputs equal the masked model's.")

    # --- figures, built once ---

    def _build_figures(self) -> None:
        def bars(title: str, name: str) -> tuple[figure, ColumnDataSource]:
            source = ColumnDataSource(data=dict(label=[], prob=[], text=[], colour=[]), name=name)
            fig = figure(height=170, width=300, x_range=Range1d(0, 1.25), y_range=[], toolbar_location=None,
                         title=title, x_axis_label="probability")
            fig.hbar(y="label", right="prob", height=0.7, color="colour", source=source)
            fig.add_layout(LabelSet(x="prob", y="label", text="text", source=source, x_offset=4, y_offset=-7,
                                    text_font_size="11px"))
            fig.xaxis.ticker = [0, 0.5, 1]
            return fig, source

        self._dense_fig, self._dense_source = bars("Dense model", "pruning-dense")
        self._pruned_fig, self._pruned_source = bars("Pruned model", "pruning-pruned")

        self._colour_mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1)

        def weights(title: str, name: str) -> tuple[figure, ColumnDataSource]:
            source = ColumnDataSource(data=dict(image=[], dw=[], dh=[]), name=name)
            fig = figure(frame_width=240, frame_height=240, x_range=Range1d(0, 1), y_range=plots.pixel_range(1),
                         toolbar_location=None, title=title, background_fill_color=PRUNED_COLOUR,
                         x_axis_label="input (channel × kernel column)", y_axis_label="output (filter × kernel row)")
            fig.image_rgba(image="image", x=0, y=0, dw="dw", dh="dh", source=source)
            fig.grid.visible = False
            return fig, source

        self._before_fig, self._before_source = weights("Weights before", "pruning-weights-before")
        self._after_fig, self._after_source = weights("After pruning (dark: exactly 0)", "pruning-weights-after")
        self._after_fig.add_layout(ColorBar(color_mapper=self._colour_mapper, title="weight", width=10), "right")

        self._sparsity_source = ColumnDataSource(data=dict(layer=[], zero=[], text=[]), name="pruning-sparsity")
        fig = figure(width=420, height=200, x_range=Range1d(0, 118), y_range=[], toolbar_location=None,
                     title="Zero weights per layer", x_axis_label="weights that are zero (%)")
        fig.hbar(y="layer", right="zero", height=0.7, color=PRUNED_BAR, source=self._sparsity_source)
        fig.add_layout(LabelSet(x="zero", y="layer", text="text", source=self._sparsity_source, x_offset=3,
                                y_offset=-6, text_font_size="10px"))
        fig.yaxis.major_label_text_font_size = "10px"
        self._sparsity_fig = fig

        self._curve_source = ColumnDataSource(data=dict(xs=[], ys=[], colour=[], method=[]), name="pruning-curves")
        self._curve_points = ColumnDataSource(data=dict(x=[], y=[], colour=[], method=[], text=[]))
        fig = figure(width=720, height=300, x_range=Range1d(0, 100), y_range=Range1d(0, 102), toolbar_location=None,
                     title="accuracy against sparsity", x_axis_label="sparsity (%); dashed line: the slider",
                     y_axis_label="accuracy (%)")
        lines = fig.multi_line(xs="xs", ys="ys", line_color="colour", line_width=2, source=self._curve_source)
        dots = fig.scatter(x="x", y="y", color="colour", size=6, source=self._curve_points)
        fig.add_layout(Legend(items=[LegendItem(label=dict(field="method"), renderers=[lines])]), "right")
        fig.add_tools(HoverTool(renderers=[dots], tooltips=[("method", "@method"), ("sparsity", "@x %"),
                                                            ("measured", "@text")]))
        self._curve_marker = Span(location=self.sparsity, dimension="height", line_dash="dashed", line_color="black")
        fig.add_layout(self._curve_marker)
        self._curve_fig = fig

        self._sensitivity_source = ColumnDataSource(data=dict(layer=[], top1=[], text=[]), name="pruning-sensitivity")
        fig = figure(width=420, height=120, x_range=Range1d(0, 118), y_range=[], toolbar_location=None,
                     title="Per-layer sensitivity (press Measure)", x_axis_label="accuracy (%)")
        fig.hbar(y="layer", right="top1", height=0.7, color=DENSE_COLOUR, source=self._sensitivity_source)
        fig.add_layout(LabelSet(x="top1", y="layer", text="text", source=self._sensitivity_source, x_offset=3,
                                y_offset=-6, text_font_size="10px"))
        fig.yaxis.major_label_text_font_size = "10px"
        self._sensitivity_fig = fig

    def __panel__(self) -> pn.viewable.Viewable:
        bokeh = pn.pane.Bokeh
        controls = pn.Column(
            pn.pane.Markdown("**Which weights go first**", margin=(0, 10)), self._method_input,
            pn.pane.Markdown(METHODS_HELP, margin=(0, 10), width=380, styles={"font-size": "12px"}),
            pn.pane.Markdown("**Ranked**", margin=(0, 10)), self._scope_input, self._slider, self._layer_input,
            width=400)
        return pn.Column(
            pn.pane.Markdown(INTRO, sizing_mode="stretch_width", margin=(0, 10)),
            self._error,
            pn.Row(controls, self._narrative, sizing_mode="stretch_width"),
            self._prediction_text,
            pn.Row(bokeh(self._dense_fig), bokeh(self._pruned_fig)),
            self._accuracy_text,
            self._counts_text,
            pn.Row(pn.Column(pn.Row(bokeh(self._before_fig), bokeh(self._after_fig)), self._weights_text,
                             width=640), bokeh(self._sparsity_fig)),
            pn.Row(self._curve_button, self._sensitivity_button, self._progress),
            self._progress_text,
            pn.Row(bokeh(self._curve_fig), bokeh(self._sensitivity_fig)),
            pn.Row(self._bn_button, self._speed_button),
            self._bn_text,
            self._speed_text,
            sizing_mode="stretch_width")


def _label(labels: tuple[str, ...], i: int) -> str:
    return labels[i] if i < len(labels) else str(i)


INTRO = ("### Pruning: how many weights does the network need?\n"
         "Move the slider to set weights to zero in a private copy of the model (the shared one never changes). "
         "Compare the two predictions for your input, watch the weights go dark, and see what it costs in "
         "accuracy and what it buys in size and speed. " + plots.COLOUR_LEGEND)

METHODS_HELP = ("Unstructured: single weights anywhere, the smallest |w| or random ones. Structured: whole "
                "units with the smallest L1 or L2 norm of their weights: conv filters (with their BatchNorm "
                "channel), MLP neurons, attention heads. Each layer keeps at least one unit.")

STEPS = (
    Step("Small weights matter little",
         "In every layer, the 40 % of weights with the smallest |w| are now zero (dark in the picture). The "
         "prediction hardly moves, and the measured accuracy stays close to the dense model's: trained networks "
         "have many more weights than they need.",
         {"method": "magnitude", "scope": "layer", "sparsity": 40}),
    Step("Compare with random",
         "The same number of zeros, picked at random. Press *Measure accuracy curves*: the grey random curve falls "
         "far earlier than magnitude pruning. Which weights go matters, not only how many.",
         {"method": "random", "scope": "layer", "sparsity": 40}),
    Step("Push it further",
         "Eight weights in ten are gone. Look at the per-layer bars and the curves: where does accuracy collapse? "
         "Press *Measure per-layer sensitivity* to see which layer is most fragile on its own.",
         {"method": "magnitude", "scope": "layer", "sparsity": 80}),
    Step("One threshold for the whole network",
         "Global pruning ranks all weights together. Layers with small weights (often the large ones) lose most, "
         "small layers keep theirs: compare the per-layer bars with the previous step.",
         {"method": "magnitude", "scope": "global", "sparsity": 80}),
    Step("Remove whole filters",
         "Structured pruning drops entire filters (whole dark rows in the weight picture) with their BatchNorm "
         "channel. Accuracy falls sooner than with scattered zeros, but press *Measure latency*: the smaller model "
         "really is faster, unlike the unstructured one.",
         {"method": "filters-l1", "scope": "layer", "sparsity": 40}),
    Step("Repair the statistics",
         "After removing filters, the BatchNorm layers still hold the dense model's running mean and variance. "
         "Press *Re-estimate BatchNorm statistics*: recomputing them on a few images, with no training at all, "
         "often wins back much of the lost accuracy.",
         {"method": "filters-l2", "scope": "layer", "sparsity": 50}),
)


async def _report_off_the_loop(button: pn.widgets.Button, text: pn.pane.Markdown, waiting: str,
                               report: Callable[[], str]) -> None:
    """Show `waiting`, compute `report()` on a worker thread (other sessions keep being served), show its text;
    `button` is disabled meanwhile so that a second click does not start the same work again."""
    button.disabled = True
    text.object = waiting
    try:
        text.object = await asyncio.to_thread(report)
    finally:
        button.disabled = False

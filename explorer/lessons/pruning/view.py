"""The pruning lesson: a sparsity slider with the dense and the pruned model side by side.

Live, on every slider position (a private pruned copy, math.prune): both models' top classes for the
student's input, the chosen layer's weights before and after (pruned weights drawn dark), every layer's
share of zero weights, parameter, non-zero and MAC counts.

Accuracies on the held-out set are kept measurements (measured.py): the accuracy-vs-sparsity curves, the
per-layer sensitivity and the slider's accuracy are shown at once where kept (stored beside the card, or in
the on-disk cache), and whatever is missing is measured on worker threads, never on a session's event loop,
with progress shown, and kept for every session and process. The slider's accuracy is read off the curve
(interpolated, and labelled so) until its exact setting has been measured. Every result is painted only if
the student is still on the model (and setting) it was measured for, and carries that model's tag
(plots.model_tag); until a result for the current model is ready, a placeholder says so.
MobileNetV2 has no test set here: its "accuracy" is top-1 agreement with the dense model over the gallery
photos and their mirror images, and is labelled as agreement.

Figures are built once; updates replace source data and properties inside one_update().
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

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

from explorer.core import data, evaluate, zoo
from explorer.errors import InputError
from explorer.lessons import plots
from explorer.lessons.pruning import math as pm
from explorer.lessons.pruning import measured
from explorer.lessons.pruning.measured import Point
from explorer.session import background
from explorer.session.narrative import Narrative, Step
from explorer.session.state import Inference, SessionView, follows, one_update

log = logging.getLogger(__name__)

SETTLE_S = 0.25           # the slider must rest this long before the accuracy of its position is measured
LIVE_PARAMS = 1_000_000   # models up to this size re-prune while the slider is dragged; larger ones on release
TOP_K = 5
MAP_SIDE = 160            # largest side of a weight picture sent (block means beyond it)
PRUNED_COLOUR = "#3b3b3b"  # pruned weights are transparent over this background
LATENCY_BATCH = 256        # MNIST images per timed forward pass
CALIBRATION_IMAGES = 1000  # MNIST training digits used to re-estimate BatchNorm statistics
METHOD_COLOURS = {"magnitude": "#0072B2", "random": "#999999", "filters-l1": "#D55E00", "filters-l2": "#009E73"}
DENSE_COLOUR, PRUNED_BAR = "#0072B2", "#D55E00"


def quantity(model: zoo.ZooModel) -> str:
    return "accuracy" if model.card.preprocess == "mnist" else "agreement"


def calibration_batches(model: zoo.ZooModel) -> list[torch.Tensor]:
    """Images for re-estimating BatchNorm statistics: training digits, or the agreement photos (said in the view)."""
    if model.card.preprocess == "mnist":
        digits = data.mnist("train")
        x = data.normalize_digits(digits.images[:CALIBRATION_IMAGES], model.card.mean, model.card.std)
        return list(x.split(250))
    return list(measured.held_out(model.name).inputs.split(8))


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
        self._model_name = ""
        self._known: dict[str, float] = {}  # Point.key -> kept accuracy of the current model, looked up or measured
        self._request: tuple = ()          # (model, point) whose accuracy the text shows or waits for
        self._curve_job_key: tuple = ()    # (model, scope) whose missing curve points a worker measures
        self._sensitivity_job_key: tuple = ()  # (model, method, amount) whose sensitivity a worker measures
        self._curves_shown: tuple = ()       # (model, scope) of the curves on screen
        self._sensitivity_shown: tuple = ()  # (model, method, amount) of the sensitivity on screen
        self._layout: tuple[object, pm.MacLayout | None] = (None, None)  # (inference, its MAC layout)
        self._jobs: list[Future] = []
        self._paint_lock = threading.RLock()  # not served: workers paint in turn
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
        self._sensitivity_button = pn.widgets.Button(label="Measure per-layer sensitivity")
        self._bn_button = pn.widgets.Button(label="Re-estimate BatchNorm statistics")
        self._speed_button = pn.widgets.Button(label="Measure latency")
        self._sensitivity_button.on_click(self._measure_sensitivity)
        self._bn_button.on_click(self._recalibrate)
        self._speed_button.on_click(self._measure_speed)
        self._curve_progress = pn.indicators.Progress(value=0, max=1, visible=False, width=360)
        self._sensitivity_progress = pn.indicators.Progress(value=0, max=1, visible=False, width=360)

    def _texts(self) -> None:
        md = functools.partial(pn.pane.Markdown, sizing_mode="stretch_width", margin=(0, 10))
        self._error = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self._prediction_text = md("", css_classes=["pruning-prediction"])
        self._accuracy_text = md("", css_classes=["pruning-accuracy"])
        self._counts_text = md("", css_classes=["pruning-counts"])
        self._curve_text = md("", css_classes=["pruning-curve-progress"])
        self._sensitivity_text = md("", css_classes=["pruning-sensitivity-progress"])
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

    def wait(self, timeout: float | None = None) -> None:
        """Until the measurements this lesson has started are done (a notebook, a test); raises what one raised."""
        while self._jobs:
            self._jobs.pop(0).result(timeout)

    # --- model or input change ---

    @follows("state.inference")
    def _new_model(self) -> None:
        inference = self.state.inference
        model = inference.model
        if self._model_name == model.name:
            self._update()
            return
        self._model_name = model.name
        self._known = {}
        self._request = self._curve_job_key = self._sensitivity_job_key = ()
        self._curves_shown = self._sensitivity_shown = ()
        tag = plots.model_tag(model.name)
        layers = list(pm.prunable_layers(model.module))
        # the first layer after the input's: a full matrix of weights (a depthwise conv is one kernel per channel)
        default = next((n for n in layers[1:] if getattr(model.module.get_submodule(n), "groups", 1) == 1), layers[0])
        with one_update():
            # first: the new layer list may change `layer` (through its widget), which updates at once
            for pane in (self._bn_text, self._speed_text, self._curve_text, self._sensitivity_text):
                pane.param.update(object="", tags=tag)
            self._curve_progress.visible = self._sensitivity_progress.visible = False
            self._sensitivity_button.disabled = False
            self._curve_fig.yaxis.axis_label = f"{quantity(model)} (%)"
            self._sparsity_fig.y_range.factors = list(reversed(layers))
            self._sparsity_fig.height = 60 + 16 * len(layers)
            self.param.layer.objects = layers
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
        tag = plots.model_tag(model.name)
        with one_update():
            self._show_prediction(inference, probs)
            self._show_weights(model)
            self._sparsity_source.data = dict(
                layer=list(layer_sparsity), zero=[100 * s for s in layer_sparsity.values()],
                text=[f"{100 * s:.1f} %" for s in layer_sparsity.values()])
            self._sparsity_source.tags = self._sparsity_fig.tags = tag
            self._counts_text.param.update(tags=tag, object=(
                f"**Parameters** {counts.params:,} stored, **{counts.nonzeros:,} not zero** "
                f"({counts.nonzeros / counts.params:.1%}). **MACs per image**: dense kernels still do "
                f"{plots.format_si(counts.macs, 'MACs')}; only {plots.format_si(counts.macs_nonzero, 'MACs')} "
                f"multiply a non-zero weight (theoretical, {counts.macs_nonzero / dense_macs:.1%} of dense)."))
            self._curve_marker.location = self.sparsity
            if self._curves_shown != (model.name, self.scope):
                self._show_curves()
            self._show_accuracy()
            self._show_sensitivity()

    def _show_prediction(self, inference: Inference, probs: torch.Tensor) -> None:
        labels = inference.model.labels
        tag = plots.model_tag(inference.model.name)
        for source, fig, p, colour in ((self._dense_source, self._dense_fig, inference.probs, DENSE_COLOUR),
                                       (self._pruned_source, self._pruned_fig, probs, PRUNED_BAR)):
            values, indices = p.topk(min(TOP_K, len(p)))
            names = [_label(labels, int(i)) for i in indices]
            fig.y_range.factors = list(reversed(names))
            source.data = dict(label=names, prob=values.tolist(), text=[f"{v:.1%}" for v in values.tolist()],
                               colour=[colour] * len(names))
            source.tags = fig.tags = tag
        dense_top, pruned_top = int(inference.probs.argmax()), int(probs.argmax())
        same = "the same answer" if dense_top == pruned_top else "**a different answer**"
        self._prediction_text.param.update(tags=tag, object=(
            f"Dense model: **{_label(labels, dense_top)}** ({float(inference.probs[dense_top]):.1%}) · pruned at "
            f"{self.sparsity} %: **{_label(labels, pruned_top)}** ({float(probs[pruned_top]):.1%}), {same}."))

    def _show_weights(self, model: zoo.ZooModel) -> None:
        dense = model.module.get_submodule(self.layer).weight
        pruned = self._pruned.get_submodule(self.layer).weight
        before, after = pm.weight_map(dense).numpy(), pm.weight_map(pruned).numpy()
        limit = plots.max_abs(before)
        small_before, small_after = plots.downsample(before, MAP_SIDE), plots.downsample(after, MAP_SIDE)
        h, w = small_before.shape
        tag = plots.model_tag(model.name)
        for source, values in ((self._before_source, small_before), (self._after_source, small_after)):
            source.data = dict(image=[plots.to_rgba(values, signed=True, limit=limit)], dw=[w], dh=[h])
            source.tags = tag
        for fig in (self._before_fig, self._after_fig):
            fig.x_range.end, fig.y_range.start = w, h
            fig.frame_height = int(np.clip(240 * h / w, 40, 320))
            fig.tags = tag
        self._colour_mapper.low, self._colour_mapper.high = -limit, limit
        zeros = int((pruned == 0).sum())
        shape = plots.format_shape(tuple(dense.shape))
        layout = ("rows: output filter × kernel row; columns: input channel × kernel column"
                  if dense.dim() == 4 else "rows: outputs; columns: inputs")
        shrunk = "" if (h, w) == before.shape else f" Drawn at {w}×{h} (block means of the non-zero weights)."
        self._weights_text.param.update(tags=tag, object=(
            f"**{self.layer}**: weight {shape}, {zeros:,} of {dense.numel():,} are zero "
            f"({zeros / dense.numel():.1%}), drawn dark. {layout}.{shrunk}"))

    # --- kept measurements: looked up at once, the missing ones measured by workers ---

    def _kept(self, model: zoo.ZooModel, point: Point) -> float | None:
        if point.key not in self._known:
            value = measured.kept(model, point)
            if value is None:
                return None
            self._known[point.key] = value
        return self._known[point.key]

    def _painter(self) -> Callable[[Callable[[], None]], bool]:
        """How a worker shows a result: on the session's event loop when served (Bokeh documents may only be
        changed there), else at once, one worker at a time. False: the session has ended, stop measuring."""
        doc = pn.state.curdoc
        if doc is None or doc.session_context is None:
            def at_once(paint: Callable[[], None]) -> bool:
                with self._paint_lock:
                    paint()
                return True

            return at_once

        def on_the_loop(paint: Callable[[], None]) -> bool:
            try:
                doc.add_next_tick_callback(paint)
            except AttributeError:  # Bokeh has destroyed the document: the session ended, nobody is looking
                return False
            return True

        return on_the_loop

    def _start(self, work: Callable[[], None]) -> None:
        self._jobs = [job for job in self._jobs if not job.done()]
        self._jobs.append(background.submit(work, "pruning"))

    # --- the slider's accuracy ---

    def _show_accuracy(self) -> None:
        """The kept accuracy of this exact setting at once; else the value read off the curve, and a worker
        measures it once the slider has rested."""
        model = self.state.inference.model
        point, dense = Point(self.method, self.sparsity / 100, self.scope), Point(self.method, 0.0, self.scope)
        request = (model.name, point)
        top1, dense_top1 = self._kept(model, point), self._kept(model, dense)
        if top1 is not None and dense_top1 is not None:
            self._request = request
            self._show_measured(model, point, top1, dense_top1)
            return
        self._show_estimate(model)
        if request != self._request:
            self._request = request
            self._measure_accuracy(model, request)

    def _show_estimate(self, model: zoo.ZooModel) -> None:
        what = quantity(model)
        xs, ys = self._curve(self.method, self.scope)
        if len(xs) < 2 or not xs[0] <= self.sparsity <= xs[-1]:  # read off between measured points only
            text = f"Measuring the {what} at {self.sparsity} % …"
        else:
            estimate = float(np.interp(self.sparsity, xs, ys))
            text = (f"{what.capitalize()} ≈ **{estimate:.1f} %** (read off the curve; measuring this exact "
                    f"setting …)")
        self._accuracy_text.param.update(object=text, tags=plots.model_tag(model.name))

    def _measure_accuracy(self, model: zoo.ZooModel, request: tuple) -> None:
        point = request[1]
        paint = self._painter()

        def show(top1: float, dense_top1: float) -> None:
            if request != self._request:
                return  # a newer setting, or another model, is shown
            self._known[point.key] = top1
            self._known[Point(point.method, 0.0, point.scope).key] = dense_top1
            with one_update():
                self._show_measured(model, point, top1, dense_top1)

        def work() -> None:
            time.sleep(SETTLE_S)  # a dragged slider: only a position the student stays on is measured
            if request != self._request or background.exiting():
                return
            dense_top1 = measured.accuracy(model, Point(point.method, 0.0, point.scope), background.request_turn)
            top1 = measured.accuracy(model, point, background.request_turn)
            paint(functools.partial(show, top1, dense_top1))

        self._start(work)

    def _show_measured(self, model: zoo.ZooModel, point: Point, top1: float, dense_top1: float) -> None:
        what = quantity(model)
        self._accuracy_text.param.update(tags=plots.model_tag(model.name), object=(
            f"{what.capitalize()} at {round(100 * point.amount)} %: **{top1:.2%}** (measured on "
            f"{measured.dataset_name(model)}); dense model: {dense_top1:.2%}."
            + ("" if what == "accuracy" else " Agreement = the pruned model's top class equals the dense model's; "
               "there is no ImageNet test set here, so this is not accuracy.")))

    # --- curves ---

    def _curve(self, method: str, scope: str) -> tuple[list[float], list[float]]:
        """The known points of one curve, in % and by sparsity."""
        xs, ys = [], []
        for point in measured.curve_points(scope):
            if point.method == method and point.key in self._known:
                xs.append(100 * point.amount)
                ys.append(100 * self._known[point.key])
        return xs, ys

    def _show_curves(self) -> None:
        """Every kept point of this scope's curves at once; a worker measures the missing ones."""
        model, scope = self.state.inference.model, self.scope
        self._curves_shown = (model.name, scope)
        missing = list({p.key: p for p in measured.curve_points(scope) if self._kept(model, p) is None}.values())
        self._paint_curves(model)
        if missing and self._curve_job_key != (model.name, scope):
            self._measure_curves(model, scope, missing)
        elif not missing:
            self._curve_job_key = ()
            self._curve_progress.visible = False
            self._curve_text.param.update(object=_curves_source(model), tags=plots.model_tag(model.name))

    def _paint_curves(self, model: zoo.ZooModel) -> None:
        cols: dict[str, list] = {k: [] for k in ("xs", "ys", "colour", "method")}
        points: dict[str, list] = {k: [] for k in ("x", "y", "colour", "method", "text")}
        for method, spec in pm.METHODS.items():
            xs, ys = self._curve(method, self.scope)
            cols["xs"].append(xs)
            cols["ys"].append(ys)
            cols["colour"].append(METHOD_COLOURS[method])
            cols["method"].append(spec.label)
            for x, y in zip(xs, ys, strict=True):
                for k, v in zip(points, (x, y, METHOD_COLOURS[method], spec.label, f"{y:.1f} %"), strict=True):
                    points[k].append(v)
        tag = plots.model_tag(model.name)
        self._curve_source.data = cols
        self._curve_points.data = points
        self._curve_source.tags = self._curve_points.tags = self._curve_fig.tags = tag
        self._curve_fig.title.text = f"{quantity(model).capitalize()} against sparsity ({pm.SCOPES[self.scope]})"

    def _measure_curves(self, model: zoo.ZooModel, scope: str, missing: list[Point]) -> None:
        key = (model.name, scope)
        self._curve_job_key = key
        dataset = measured.dataset_name(model)
        tag = plots.model_tag(model.name)
        self._curve_progress.param.update(max=len(missing), value=0, visible=True)
        self._curve_text.param.update(tags=tag, object=(
            f"Measuring the curves: {len(missing)} points on {dataset} (kept for every later visit) …"))

        def current() -> bool:
            return self._curve_job_key == key and (self._model_name, self.scope) == key

        def show(point: Point, top1: float, done: int) -> None:
            if not current():
                return  # the student has left this model or scope: the point is kept, not shown
            self._known[point.key] = top1
            with one_update():
                self._paint_curves(model)
                self._curve_progress.value = done
                if done == len(missing):
                    self._curve_job_key = ()
                    self._curve_progress.visible = False
                    self._curve_text.param.update(object=_curves_source(model), tags=tag)
                if not self._error.visible:  # (a setting that could not be pruned has no accuracy to show)
                    self._show_accuracy()  # the estimate read off the curve, or this very point

        self._measure_in_turn(model, missing, current, show)

    # --- sensitivity, BatchNorm, speed ---

    def _show_sensitivity(self, again: bool = False) -> None:
        """The kept per-layer sensitivity at the slider's setting, or a placeholder that says what to press;
        `again`: also if that setting is on screen already."""
        model, method, amount = self.state.inference.model, self.method, self.sparsity / 100
        if self._sensitivity_shown == (model.name, method, round(amount, 4)) and not again:
            return
        self._sensitivity_shown = (model.name, method, round(amount, 4))
        what, label = quantity(model), pm.METHODS[method].label
        tag = plots.model_tag(model.name)
        points = measured.sensitivity_points(model, method, amount) if amount > 0 else ()
        values = [self._kept(model, p) for p in points]
        if points and None not in values:
            rows = [(p.only, v) for p, v in zip(points, values, strict=True)]
            title = f"{what.capitalize()} when only this layer loses {self.sparsity} % ({label})"
        else:
            rows = []
            measuring = self._sensitivity_job_key == (model.name, method, round(amount, 4))
            title = ("Per-layer sensitivity at 0 %: nothing is pruned" if not points else
                     f"Per-layer sensitivity at {self.sparsity} % ({label}): "
                     + ("measuring …" if measuring else "press Measure"))
        self._sensitivity_fig.y_range.factors = [n for n, _ in reversed(rows)]
        self._sensitivity_fig.height = 70 + 16 * len(rows)
        self._sensitivity_source.data = dict(layer=[n for n, _ in rows], top1=[100 * a for _, a in rows],
                                             text=[f"{100 * a:.1f} %" for _, a in rows])
        self._sensitivity_fig.title.text = title
        self._sensitivity_fig.xaxis.axis_label = f"{what} (%)"
        self._sensitivity_source.tags = self._sensitivity_fig.tags = tag

    def _measure_sensitivity(self, _event=None) -> None:
        model, method, amount = self.state.inference.model, self.method, self.sparsity / 100
        key = (model.name, method, round(amount, 4))
        points = measured.sensitivity_points(model, method, amount) if amount > 0 else ()
        missing = [p for p in points if self._kept(model, p) is None]
        if not missing or self._sensitivity_job_key == key or self._error.visible:
            return
        self._sensitivity_job_key = key
        tag = plots.model_tag(model.name)
        self._sensitivity_progress.param.update(max=len(missing), value=0, visible=True)
        self._sensitivity_text.param.update(object=f"Pruning one layer at a time: {len(missing)} to measure …",
                                            tags=tag)
        self._show_sensitivity(again=True)

        def current() -> bool:
            return self._sensitivity_job_key == key and self._model_name == model.name

        def show(point: Point, top1: float, done: int) -> None:
            if not current():
                return
            self._known[point.key] = top1
            with one_update():
                self._sensitivity_progress.value = done
                self._sensitivity_text.param.update(object=(
                    f"Pruning only {point.only} ({done} of {len(missing)}) …" if done < len(missing) else ""),
                    tags=tag)
                if done == len(missing):
                    self._sensitivity_job_key = ()
                    self._sensitivity_progress.visible = False
                    self._show_sensitivity(again=True)

        self._measure_in_turn(model, missing, current, show)

    def _measure_in_turn(self, model: zoo.ZooModel, missing: list[Point], current: Callable[[], bool],
                         show: Callable[[Point, float, int], None]) -> None:
        """Measure the `missing` points on a worker, one evaluation per turn, while `current()`; `show(point,
        accuracy, how many done)` paints each."""
        paint = self._painter()

        def work() -> None:
            for done, point in enumerate(missing, 1):
                if not current() or background.exiting():
                    return
                top1 = measured.accuracy(model, point, background.sweep_turn)
                if not paint(functools.partial(show, point, top1, done)):
                    return

        self._start(work)

    async def _recalibrate(self, _event=None) -> None:
        await self._report_off_the_loop(self._bn_button, self._bn_text, "Re-estimating the BatchNorm statistics …",
                                        self._recalibration_text_for)

    def recalibration_report(self) -> str:
        return self._recalibration_text_for(self._snapshot())

    def _snapshot(self) -> tuple[Inference, str, str, int]:
        return self.state.inference, self.method, self.scope, self.sparsity

    @staticmethod
    def _recalibration_text_for(snapshot: tuple[Inference, str, str, int]) -> str:
        inference, method, scope, sparsity = snapshot
        model = inference.model
        dataset = measured.held_out(model.name)
        what = quantity(model)
        pruned = pm.prune(model.module, method, sparsity / 100, scope)
        try:
            fixed = pm.recalibrate_batchnorm(pruned, calibration_batches(model))
        except InputError as e:
            return f"{e} (Its LayerNorms compute their statistics from each token as it comes.)"
        before = measured.accuracy(model, Point(method, sparsity / 100, scope), background.request_turn)
        after = evaluate.uncached_accuracy(fixed, dataset)
        source = (f"the first {CALIBRATION_IMAGES:,} MNIST training digits" if what == "accuracy"
                  else "the same gallery photos the agreement is measured on (there is no other data here)")
        return (f"BatchNorm running mean and variance re-estimated on {source}, nothing else changed: "
                f"{what} **{before:.2%} → {after.top1:.2%}** at {sparsity} % "
                f"({pm.METHODS[method].label}). Pruning shifts every later layer's statistics; the stored "
                f"ones describe the dense model.")

    async def _measure_speed(self, _event=None) -> None:
        await self._report_off_the_loop(self._speed_button, self._speed_text, "Timing the dense and the pruned model …",
                                        self._speed_text_for)

    def speed_report(self) -> str:
        return self._speed_text_for(self._snapshot())

    @staticmethod
    def _speed_text_for(snapshot: tuple[Inference, str, str, int]) -> str:
        inference, method, scope, sparsity = snapshot
        model = inference.model
        # MNIST models are so small that one image times mostly Python overhead: time a batch
        x = inference.x.repeat(LATENCY_BATCH, 1, 1, 1) if model.card.preprocess == "mnist" else inference.x
        pruned = pm.prune(model.module, method, sparsity / 100, scope)
        dense_ms = pm.latency_ms(model.module, x)
        if not pm.METHODS[method].structured:
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

    async def _report_off_the_loop(self, button: pn.widgets.Button, text: pn.pane.Markdown, waiting: str,
                                   report: Callable[[tuple[Inference, str, str, int]], str]) -> None:
        """Show `waiting`, compute `report` of the current setting on a worker thread (other sessions keep being
        served), and show its text if the student is still on the same model; `button` is disabled meanwhile
        so that a second click does not start the same work again."""
        snapshot = self._snapshot()
        name = snapshot[0].model.name
        tag = plots.model_tag(name)
        button.disabled = True
        text.param.update(object=waiting, tags=tag)
        try:
            result = await asyncio.to_thread(report, snapshot)
        finally:
            button.disabled = False
        if self._model_name == name:
            text.param.update(object=result, tags=tag)

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
                     title="Per-layer sensitivity", x_axis_label="accuracy (%)")
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
            pn.Row(pn.Column(bokeh(self._curve_fig), self._curve_progress, self._curve_text, width=740),
                   pn.Column(self._sensitivity_button, bokeh(self._sensitivity_fig), self._sensitivity_progress,
                             self._sensitivity_text, width=440)),
            pn.Row(self._bn_button, self._speed_button),
            self._bn_text,
            self._speed_text,
            sizing_mode="stretch_width")


def _curves_source(model: zoo.ZooModel) -> str:
    return f"Each point: the pruned model's {quantity(model)} on {measured.dataset_name(model)}."


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
         "The same number of zeros, picked at random. In the curves below, the grey random curve falls far "
         "earlier than magnitude pruning. Which weights go matters, not only how many.",
         {"method": "random", "scope": "layer", "sparsity": 40}),
    Step("Push it further",
         "Eight weights in ten are gone. Look at the per-layer bars and the curves: where does accuracy collapse? "
         "The per-layer sensitivity shows which layer is most fragile on its own (press *Measure per-layer "
         "sensitivity* where it is not measured yet).",
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



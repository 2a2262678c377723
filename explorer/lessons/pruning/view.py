"""The pruning lesson: a sparsity slider with the dense and the pruned model side by side.

Live, on every slider position (a private pruned copy, math.prune): both models' top classes for the
student's input, the chosen layer's weights before and after (pruned weights drawn dark), every layer's
share of zero weights, parameter, non-zero and MAC counts. Models above LIVE_PARAMS parameters re-prune when
the slider is released.

Accuracies on the held-out set are kept measurements (measured.py), shown by view_measured.py: the curves, the
per-layer sensitivity and the slider's accuracy at once where kept, and whatever is missing measured through the
lesson's slow work (Lesson.slow), never on a session's event loop, with progress shown. So are the latency and
BatchNorm reports of the buttons. Every result carries its model's tag (plots.model_tag). MobileNetV2 has no test
set here: its "accuracy" is top-1 agreement with the dense model over the gallery photos in several versions each
(core/agreement.py), and is labelled as agreement. Every measured accuracy or agreement is shown with its 95 %
Wilson interval and its n; latencies as medians of interleaved runs with their interquartile range.

Figures are built once (view_figures.py); updates replace source data and properties inside one_update().
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import panel as pn
import param
import torch

from explorer.core import evaluate, zoo
from explorer.core.names import labelled_name
from explorer.errors import InputError
from explorer.lessons import plots
from explorer.lessons.pruning import math as pm
from explorer.lessons.pruning import measured
from explorer.lessons.pruning.measured import Point
from explorer.lessons.pruning.view_figures import Figures, label
from explorer.lessons.pruning.view_measured import Measurements
from explorer.session import background
from explorer.session.in_step import keep_in_step
from explorer.session.later import Later
from explorer.session.lesson import Lesson
from explorer.session.narrative import Step
from explorer.session.state import Inference, follows, one_update

LIVE_PARAMS = 1_000_000   # models up to this size re-prune while the slider is dragged; larger ones on release
LATENCY_BATCH = 256       # MNIST images per timed forward pass
SLIDER_LABEL = "Sparsity (% of weights, or of units when structured)"
MAIN_WIDTH = 700      # the weights before and after side by side, with the after picture's colour bar
CHOICES_WIDTH = 300   # the column of choices beside them

Snapshot = tuple[Inference, str, str, int]  # (inference, method, scope, sparsity) a report is made for


class PruningLesson(Lesson):
    """Prune a private copy of the model and see what it changes: prediction, weights, counts, accuracy, speed."""

    tour_title = "Guided tour: pruning"
    url_settings = {"prune": "method", "scope": "scope", "sparsity": "sparsity"}

    method = param.Selector(default="magnitude", objects={m.label: k for k, m in pm.METHODS.items()},
                            doc="Which weights go first.")
    scope = param.Selector(default="layer", objects={v: k for k, v in pm.SCOPES.items()},
                           doc="Rank weights within each layer, or all layers together.")
    sparsity = param.Integer(default=50, bounds=(0, 99), doc="Percent of weights (or units) set to zero.")

    def __init__(self, model: str | None = None, **params):
        super().__init__(model=model, **params)
        self._pruned: torch.nn.Module | None = None
        self._pruned_for: tuple | None = None  # (model, method, sparsity, scope) of the pruned copy
        self._model_name = ""
        self._layers: tuple[str, ...] = ()  # the model's prunable layers, and the one drawn when the session's
        self._default_layer = ""            # layer is none of them
        self._layout: tuple[object, pm.MacLayout | None] = (None, None)  # ((model, input shape), its MAC layout)
        self.figures = Figures(self.sparsity)
        self.measurements = Measurements(self, self.figures)
        self._controls()
        self._texts()
        self._follow_state()

    def steps(self) -> tuple[Step, ...]:
        return STEPS

    # --- widgets and text ---

    def _controls(self) -> None:
        self._method_input = pn.widgets.RadioButtonGroup.from_param(self.param.method, color="light",
                                                                    orientation="vertical", width=220)
        self._scope_input = pn.widgets.RadioButtonGroup.from_param(self.param.scope, color="light",
                                                                   orientation="vertical", width=260)
        # on the page: the live slider for small models, the one that sets `sparsity` on release for large ones
        self._live_slider = pn.widgets.IntSlider.from_param(self.param.sparsity, name=SLIDER_LABEL, width=360)
        self._released_slider = pn.widgets.IntSlider.from_param(self.param.sparsity, name=SLIDER_LABEL, width=360,
                                                                throttled=True)
        self._slider = pn.Column(self._live_slider, margin=0)
        # shows `layer` (the session's, among this model's prunable layers); a pick sets the session's layer
        self._layer_input = keep_in_step(pn.widgets.Select(label="Weights of layer", width=260))
        self._layer_input.param.watch(self._layer_picked, "value")
        self._sensitivity_button = pn.widgets.Button(label="Measure per-layer sensitivity")
        self._bn_button = pn.widgets.Button(label="Re-estimate BatchNorm statistics")
        self._speed_button = pn.widgets.Button(label="Measure latency")
        self._sensitivity_button.on_click(lambda _: self.measurements.measure_sensitivity())
        self._bn_button.on_click(lambda _: self._report("recalibration", self._bn_button, self._bn_text,
                                                        "Re-estimating the BatchNorm statistics …",
                                                        _recalibration_text))
        self._speed_button.on_click(lambda _: self._report("speed", self._speed_button, self._speed_text,
                                                           "Timing the dense and the pruned model …", _speed_text))

    def _texts(self) -> None:
        md = functools.partial(pn.pane.Markdown, sizing_mode="stretch_width", margin=(0, 10))
        self._prediction_text = md("", css_classes=["pruning-prediction"])
        self._counts_text = md("", css_classes=["pruning-counts"])
        self._bn_text = md("", css_classes=["pruning-bn"])
        self._speed_text = md("", css_classes=["pruning-speed"])
        self._weights_text = md("")

    def wait(self, timeout: float | None = None) -> None:
        """Until the slow work this lesson has asked for is shown (a notebook, a test); a failure is in `errors`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while any(work.busy for work in self._slow.values()):
            jobs = [w.job for w in self._slow.values() if w.busy and w.job is not None and not w.job.done()]
            for job in jobs:
                job.result(None if deadline is None else max(deadline - time.monotonic(), 0))
            if not jobs:  # an answer between its worker and the page: the page's loop shows it
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"the pruning lesson's slow work was not shown within {timeout} s")
                time.sleep(0.01)

    # --- model or input change ---

    @property
    def layer(self) -> str:
        """The layer whose weights are drawn: the session's, where it is a prunable layer of this model."""
        return self.state.layer if self.state.layer in self._layers else self._default_layer

    def _layer_picked(self, event) -> None:
        if event.new in self._layers and event.new != self.layer:
            self.state.layer = event.new

    @follows("state.inference", "state.layer")
    def _follow_state(self) -> None:
        model = self.state.inference.model
        if self._model_name == model.name:
            with one_update():
                self._layer_input.value = self.layer
                self._update()
            return
        self._model_name = model.name
        self.measurements.new_model(model)
        tag = plots.model_tag(model.name)
        self._layers = pm.prunable_layers(model.module)
        # the first layer after the input's: a full matrix of weights (a depthwise conv is one kernel per channel)
        self._default_layer = next((n for n in self._layers[1:]
                                    if getattr(model.module.get_submodule(n), "groups", 1) == 1), self._layers[0])
        live = sum(p.numel() for p in model.module.parameters()) <= LIVE_PARAMS
        with one_update():
            for pane in (self._bn_text, self._speed_text):
                pane.param.update(object="", tags=tag)
            slider = self._live_slider if live else self._released_slider
            if self._slider.objects[0] is not slider:
                self._slider.objects = [slider]
            self._sensitivity_button.disabled = self._bn_button.disabled = self._speed_button.disabled = False
            self.figures.new_model(list(self._layers), measured.quantity(model))
            self._layer_input.param.update(options={labelled_name(model.module, n): n for n in self._layers},
                                           value=self.layer)
            self._update()

    # --- the live update ---

    @param.depends("method", "scope", "sparsity", watch=True)
    def _update(self) -> None:
        inference = self.state.inference
        model = inference.model
        setting = (model, self.method, self.sparsity, self.scope)
        if self._pruned_for != setting:  # a new input alone keeps the pruned copy: only the prediction changes
            try:
                self._pruned = pm.prune(model.module, self.method, self.sparsity / 100, self.scope)
                self._pruned_for = setting
            except InputError as e:
                self._pruned_for = None
                self.show_error(str(e))
                return
        self.clear_error()
        shape = (model, tuple(inference.x.shape))  # what the MAC layout depends on
        if self._layout[0] != shape:
            self._layout = (shape, pm.mac_layout(model.module, inference.x))
        tag = plots.model_tag(model.name)
        with one_update():
            if self.changed("prediction", (inference, self._pruned)):  # not on a layer change
                self._show_prediction(inference, tag)
            if self.changed("weights", (self._pruned, self.layer)):
                self._show_weights(model, tag)
            if not self.changed("counts", (self._pruned, self._layout[1])):
                return  # the same pruned copy, and an input of the same shape
            counts = pm.counts(self._pruned, self._layout[1])
            self.figures.show_sparsity(pm.sparsity(self._pruned), tag)
            # the pruned copy keeps every weight's storage: its dense count is the model's
            self._counts_text.param.update(tags=tag, object=(
                f"**Parameters** {counts.params:,} stored, **{counts.nonzeros:,} not zero** "
                f"({counts.nonzeros / counts.params:.1%}). **MACs per image**: dense kernels still do "
                f"{plots.format_si(counts.macs, 'MACs')}; only {plots.format_si(counts.macs_nonzero, 'MACs')} "
                f"multiply a non-zero weight (theoretical, {counts.macs_nonzero / counts.macs:.1%} of dense)."))
            self.figures.curve_marker.location = self.sparsity
            self.measurements.show_curves()
            self.measurements.show_accuracy()
            self.measurements.show_sensitivity()

    def _show_prediction(self, inference: Inference, tag: list[str]) -> None:
        with torch.no_grad():
            probs = self._pruned(inference.x.to(next(self._pruned.parameters()).device)).softmax(-1)[0].cpu()
        labels = inference.model.labels
        self.figures.show_prediction(labels, inference.probs, probs, tag)
        dense_top, pruned_top = int(inference.probs.argmax()), int(probs.argmax())
        same = "the same answer" if dense_top == pruned_top else "**a different answer**"
        self._prediction_text.param.update(tags=tag, object=(
            f"Dense model: **{label(labels, dense_top)}** ({float(inference.probs[dense_top]):.1%}) · pruned at "
            f"{self.sparsity} %: **{label(labels, pruned_top)}** ({float(probs[pruned_top]):.1%}), {same}."))

    def _show_weights(self, model: zoo.ZooModel, tag: list[str]) -> None:
        dense = model.module.get_submodule(self.layer).weight
        pruned = self._pruned.get_submodule(self.layer).weight
        before = pm.weight_map(dense).numpy()
        h, w = self.figures.show_weights(before, pm.weight_map(pruned).numpy(), tag)
        zeros = int((pruned == 0).sum())
        layout = ("rows: output filter × kernel row; columns: input channel × kernel column"
                  if dense.dim() == 4 else "rows: outputs; columns: inputs")
        shrunk = "" if (h, w) == before.shape else f" Drawn at {w}×{h} (block means of the non-zero weights)."
        self._weights_text.param.update(tags=tag, object=(
            f"**{self.layer}**: weight {plots.format_shape(tuple(dense.shape))}, {zeros:,} of {dense.numel():,} are "
            f"zero ({zeros / dense.numel():.1%}), drawn dark. {layout}.{shrunk}"))

    # --- the buttons' reports: BatchNorm statistics, latency ---

    def recalibration_report(self) -> str:
        return _recalibration_text(self._snapshot())

    def speed_report(self) -> str:
        return _speed_text(self._snapshot())

    def _snapshot(self) -> Snapshot:
        return self.state.inference, self.method, self.scope, self.sparsity

    def _report(self, name: str, button: pn.widgets.Button, text: pn.pane.Markdown, waiting: str,
                report: Callable[[Snapshot], str]) -> None:
        """Show `waiting`, make `report` of the current setting through the slow work, and show it if the student is
        still on the same model; `button` is disabled meanwhile so that a second click does not start it again."""
        snapshot = self._snapshot()
        model = snapshot[0].model.name
        button.disabled = True
        text.param.update(object=waiting, tags=plots.model_tag(model))

        def show(result: str) -> None:
            button.disabled = False
            if self._model_name == model:
                text.param.update(object=result, tags=plots.model_tag(model))

        self.slow(name).request(snapshot, lambda: report(snapshot), show)

    def _slow_failed(self, error: Exception) -> None:
        self._bn_button.disabled = self._speed_button.disabled = False
        super()._slow_failed(error)

    def __panel__(self) -> pn.viewable.Viewable:
        bokeh, f, m = pn.pane.Bokeh, self.figures, self.measurements
        # The first screen is the main figure, the weights before and after, with the slider that empties them right
        # above and the prediction it changes under it; the other choices beside it, or under it where the lesson is
        # too narrow for both (a phone), where seeing the weights go dark matters more than the ranking's options.
        # Rows that wrap (plots.WRAPS), not FlexBoxes: Bokeh figures inside a FlexBox built in a hidden tab were laid
        # out 0 px wide. Each picture exactly as wide as drawn: stretched by the wrapping row, its frame grew past its
        # canvas, which was cut at the right.
        pictures = pn.Row(bokeh(f.before_fig), bokeh(f.after_fig), margin=0, css_classes=["main-figure"],
                          stylesheets=[plots.WRAPS, ".bk-Figure { flex: none !important; }"])
        main = pn.Column(self._slider, pictures, self._weights_text, self._prediction_text, margin=0,
                         max_width=MAIN_WIDTH, **plots.share_of_row(340))
        choices = pn.Column(
            self._layer_input, pn.pane.Markdown("**Which weights go first**", margin=(0, 10)), self._method_input,
            pn.pane.Markdown(METHODS_HELP, margin=(0, 10), width=CHOICES_WIDTH - 20, styles={"font-size": "12px"}),
            pn.pane.Markdown("**Ranked**", margin=(0, 10)), self._scope_input, width=CHOICES_WIDTH)
        return pn.Column(
            pn.pane.Markdown(INTRO, sizing_mode="stretch_width", margin=(0, 10), css_classes=["explanation"]),
            self.errors,
            pn.Row(main, choices, margin=0, sizing_mode="stretch_width", stylesheets=[plots.WRAPS]),
            pn.Row(bokeh(f.dense_fig), bokeh(f.pruned_fig), stylesheets=[plots.WRAPS]),
            m.accuracy_text,
            self._counts_text,
            # below the first screen: placed when the student scrolls to it (explorer/session/later.py). Figures as
            # wide as the lesson up to their own width, so that a phone does not scroll them sideways
            Later(bokeh(f.sparsity_fig, sizing_mode="stretch_width", max_width=f.sparsity_fig.max_width), height=350),
            Later(pn.Column(bokeh(f.curve_fig, sizing_mode="stretch_width", max_width=f.curve_fig.max_width),
                            m.curve_progress, m.curve_text, sizing_mode="stretch_width", max_width=740),
                  pn.Column(self._sensitivity_button,
                            bokeh(f.sensitivity_fig, sizing_mode="stretch_width",
                                  max_width=f.sensitivity_fig.max_width),
                            m.sensitivity_progress, m.sensitivity_text, sizing_mode="stretch_width", max_width=440),
                  pn.Row(self._bn_button, self._speed_button, stylesheets=[plots.WRAPS]),
                  self._bn_text,
                  self._speed_text, height=900),
            sizing_mode="stretch_width")


def _recalibration_text(snapshot: Snapshot) -> str:
    inference, method, scope, sparsity = snapshot
    model = inference.model
    what = measured.quantity(model)
    try:
        before, after = measured.recalibrated(model, Point(method, sparsity / 100, scope), background.request_turn)
    except InputError as e:
        return f"{e} (Its LayerNorms compute their statistics from each token as it comes.)"
    source = (f"the first {measured.CALIBRATION_IMAGES:,} MNIST training digits" if what == "accuracy"
              else "the same gallery photos the agreement is measured on (there is no other data here)")
    n = measured.sample_size(model)
    return (f"BatchNorm running mean and variance re-estimated on {source}, nothing else changed: "
            f"{what} **{before:.2%} → {after:.2%}** at {sparsity} % ({pm.METHODS[method].label}; before: "
            f"{evaluate.interval_text(before, n)}; after: {evaluate.interval_text(after, n)}). Pruning shifts every "
            "later layer's statistics; the stored ones describe the dense model.")


def _speed_text(snapshot: Snapshot) -> str:
    inference, method, scope, sparsity = snapshot
    model = inference.model
    # MNIST models are so small that one image times mostly Python overhead: time a batch
    x = inference.x.repeat(LATENCY_BATCH, 1, 1, 1) if model.card.preprocess == "mnist" else inference.x
    pruned = pm.prune(model.module, method, sparsity / 100, scope)
    return speed_words(pm.speed(model.module, pruned, x, pm.METHODS[method].structured))


def timing_words(t: evaluate.Timing) -> str:
    """"**21.3 ms** (middle half 20.9–22.0 ms)": a median and its interquartile range."""
    q1, q3 = t.quartiles
    return f"**{t.median:.2f} ms** (middle half {q1:.2f}–{q3:.2f} ms)"


def speed_words(s: pm.Speed) -> str:
    """What the timings of `pm.speed` say, with "no measurable difference" where their ranges overlap."""
    runs = (f"Batch of {s.batch}, each model timed {len(s.dense.times_ms)} times, alternating, after a warm-up; "
            "medians:")
    if s.dense.overlaps(s.pruned):
        verdict = ("**no measurable difference**: the middle halves of the two sets of timings overlap (timings "
                   "on a shared machine vary)")
    else:
        verdict = f"**×{s.speedup:.2f}** ({'faster' if s.speedup > 1 else 'slower'} when pruned)"
    if s.shrunk_counts is None:
        return (f"{runs} dense {timing_words(s.dense)}, pruned {timing_words(s.pruned)}: {verdict}. "
                "Unstructured zeros sit scattered inside dense weight tensors; dense kernels multiply by them "
                "like any other number, so the time does not drop (the masked copy even multiplies each weight "
                "tensor by its mask on every pass). It would need sparse kernels or hardware that skips zeros "
                "(e.g. 2:4 sparsity on recent GPUs).")
    return (f"{runs} dense {timing_words(s.dense)}, physically smaller model {timing_words(s.pruned)}: {verdict}. "
            "The removed units are gone: "
            f"{s.shrunk_counts.params:,} instead of {s.dense_counts.params:,} parameters, "
            f"{plots.format_si(s.shrunk_counts.macs, 'MACs')} instead of "
            f"{plots.format_si(s.dense_counts.macs, 'MACs')}; its outputs equal the masked model's.")


INTRO = ("### Pruning: how many weights does the network need?\n"
         "Move the slider to set weights to zero in a private copy of the model (the shared one never changes): "
         "watch them go dark, compare the two predictions for your input, and see below what it costs in accuracy "
         "and what it buys in size and speed.")

METHODS_HELP = ("Unstructured: single weights anywhere, the smallest |w| or random ones. Structured: whole "
                "units with the smallest L1 or L2 norm of their weights: conv filters (with their BatchNorm "
                "channel), MLP neurons, attention heads. Each layer keeps at least one unit.")

CLOSE = 0.02  # within two points of the dense model's accuracy (or agreement): "close"
BEHIND = 0.05  # five points below: "falls far earlier"


def kept_pair(lesson: PruningLesson, first: Point, second: Point) -> tuple[float, float] | None:
    """The kept values of two points (what the curves below draw), None while either is not measured: a step states
    no trend the curves do not show."""
    model = lesson.state.inference.model
    values = measured.kept(model, first), measured.kept(model, second)
    return None if None in values else values


def not_measured(lesson: PruningLesson) -> str:
    return (f"The curves below compare the measured {measured.quantity(lesson.state.inference.model)} once it is "
            "measured.")


def small_weights_text(lesson: PruningLesson) -> str:
    said = "In every layer, the 40 % of weights with the smallest |w| are now zero (dark in the picture). "
    pair = kept_pair(lesson, Point("magnitude", 0.4), Point("magnitude", 0.0))
    if pair is None:
        return said + not_measured(lesson)
    pruned, dense = pair
    said += (f"Measured {measured.quantity(lesson.state.inference.model)}: {pruned:.1%}, against {dense:.1%} for "
             "the dense model")
    return said + (": trained networks have many more weights than they need." if dense - pruned < CLOSE else ".")


def random_text(lesson: PruningLesson) -> str:
    said = "The same number of zeros, picked at random (the grey curve below). "
    pair = kept_pair(lesson, Point("random", 0.4), Point("magnitude", 0.4))
    if pair is None:
        return said + not_measured(lesson)
    random, magnitude = pair
    said += (f"Measured {measured.quantity(lesson.state.inference.model)} at 40 %: {random:.1%} at random, against "
             f"{magnitude:.1%} for the smallest |w|")
    return said + (": which weights go matters, not only how many." if magnitude - random > BEHIND else ".")


def filters_text(lesson: PruningLesson) -> str:
    said = ("Structured pruning drops entire filters (whole dark rows in the weight picture) with their BatchNorm "
            "channel. ")
    latency = ("The removed filters are really gone: press *Measure latency* to see whether the smaller model is "
               "measurably faster on this machine (scattered zeros never are).")
    pair = kept_pair(lesson, Point("filters-l1", 0.4), Point("magnitude", 0.4))
    if pair is None:
        return said + latency
    filters, scattered = pair
    said += (f"Measured {measured.quantity(lesson.state.inference.model)} at 40 %: {filters:.1%} with whole filters, "
             f"against {scattered:.1%} with scattered zeros")
    return said + (": it falls sooner. " if filters < scattered else ". ") + latency


STEPS = (
    Step("Small weights matter little", small_weights_text,
         {"method": "magnitude", "scope": "layer", "sparsity": 40}, section="pruning-prediction"),
    Step("Compare with random", random_text,
         {"method": "random", "scope": "layer", "sparsity": 40}, section="pruning-accuracy"),
    Step("Push it further",
         "Eight weights in ten are gone. Look at the per-layer bars and the curves: where do they collapse? "
         "The per-layer sensitivity shows which layer is most fragile on its own (press *Measure per-layer "
         "sensitivity* where it is not measured yet).",
         {"method": "magnitude", "scope": "layer", "sparsity": 80}, section="pruning-counts"),
    Step("One threshold for the whole network",
         "Global pruning ranks all weights together: layers whose weights are small lose more than 80 %, layers "
         "whose weights are large keep more. Compare the per-layer bars with the previous step.",
         {"method": "magnitude", "scope": "global", "sparsity": 80}, section="pruning-counts"),
    Step("Remove whole filters", filters_text,
         {"method": "filters-l1", "scope": "layer", "sparsity": 40}, section="pruning-accuracy"),
    Step("Repair the statistics",
         "After removing filters, the BatchNorm layers still hold the dense model's running mean and variance. "
         "Press *Re-estimate BatchNorm statistics*: they are recomputed on a few images, with no training at all; "
         "read how much of the lost accuracy comes back.",
         {"method": "filters-l2", "scope": "layer", "sparsity": 50}, section="pruning-bn"),
)



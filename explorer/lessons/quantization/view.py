"""The quantization lesson: what rounding weights and activations to fewer bits does, with the arithmetic.

Compute lives in math.py (measured.py for the accuracies, int8.py for onnxruntime's real int8); the figures are in
view_figures.py, the words in view_text.py; this module binds them to the session's state and the controls.

The layer and channel are the session's: `state.layer`, shown in the layer menu as the quantizable layer that explains
it (math.explained_layer), and `state.channel`, the output channel whose grid is drawn (within the layer's channels,
math.explain); the controls write the state, never the other way round. Every figure and pane is made once;
a change feeds them data inside one `one_update()`.

Slow work runs on the Lesson base's strands (explorer/session/work.py), off the event loop in a served page, newest
answer only, dropped when the session ends:
- "result": the quantized copy of the model on the input (the MSE clip of a large model takes seconds);
- "accuracy": float32 and the student's setting, measured under `background.request_turn()`;
- "sweep": the curves, one point per request, under `background.sweep_turn()`; each answer paints its point and
  asks for the next missing one, so the curves fill in as they are measured;
- "int8 MODEL": export, quantize and measure with onnxruntime, one step per request, each answer showing progress.
Measured accuracies are kept under their full key (model, setting), so an answer that arrives after the student
moved on is still true, and what is shown is always read for the current state. Accuracies kept beside the card
or in the on-disk cache are shown at once. Every figure, source and pane that shows a result carries the model tag
of its model (explorer.session.tags), set together with its content.
"""

from __future__ import annotations

import logging
import threading
from functools import partial

import panel as pn
import param

from explorer.core import zoo
from explorer.errors import InputError, choice
from explorer.lessons import plots
from explorer.lessons.quantization import int8, measured
from explorer.lessons.quantization import math as qm
from explorer.lessons.quantization import view_text as text
from explorer.lessons.quantization.view_figures import Curves, Histogram, LayerSqnr, Predictions
from explorer.session import background
from explorer.session.in_step import keep_in_step
from explorer.session.later import Later
from explorer.session.lesson import Lesson
from explorer.session.narrative import Step
from explorer.session.state import Inference, follows, one_update
from explorer.session.tags import tag_results

log = logging.getLogger(__name__)

ACT_CHOICES = {"float (not quantized)": 0, **{f"{b} bits": b for b in range(8, 1, -1)}}  # 0: float
INT8_STEPS = ("◔ 1/3: exporting the float32 model to ONNX …",
              "◔ 2/3: calibrating on {calibration} and quantizing to int8 …",
              "◔ 3/3: measuring {what} on {dataset} and latency …")
INT8_INTRO = text.INT8_INTRO
CONTROLS_WIDTH = 300      # the column of controls beside the figures
MAIN_LEAST_WIDTH = 480    # the figures' narrowest beside the controls; narrower, they go under them
PREDICTIONS_WIDTH = 420   # the five classes' bars at their widest
HALF_LEAST_WIDTH = 340    # a figure's narrowest beside another; narrower, it goes under it


class QuantizationLesson(Lesson):
    """What rounding weights (and activations) to fewer bits does to them, to the prediction and to accuracy."""

    tour_title = "Quantization, step by step"
    url_settings = {"bits": "bits", "act_bits": "act_bits", "granularity": "granularity", "scheme": "scheme",
                    "clip": "clip"}

    bits = param.Integer(default=measured.DEFAULT.weight_bits, bounds=(1, 8),
                         doc="Bits per weight; 1 bit is XNOR-Net's sign · mean |w|.")
    act_bits = param.Selector(default=measured.DEFAULT.act_bits or 0, objects=list(ACT_CHOICES.values()),
                              doc="Bits per activation (each layer's input), or 0 to keep them float.")
    granularity = param.Selector(default=measured.DEFAULT.granularity, objects=list(qm.GRANULARITIES))
    scheme = param.Selector(default=measured.DEFAULT.scheme, objects=list(qm.SCHEMES))
    clip = param.Selector(default=measured.DEFAULT.clip, objects=list(qm.CLIPS),
                          doc="How the ends of the range are chosen.")

    def __init__(self, model: str | None = None, **params):
        super().__init__(model=model, **params)
        self.result: qm.Explained | None = None  # what the figures show
        self._copy: qm.QuantizedCopy | None = None  # this lesson's private copy of the model (made off the loop)
        self._copy_lock = threading.Lock()
        self._measured: dict[tuple[str, qm.Setting | None], float] = {}  # (model, setting) → top-1, None: float32
        self._int8: dict[str, tuple[int, str]] = {}  # model → (step under way, 3 when done; what it says)
        self.histogram, self.predictions, self.layer_sqnr = Histogram(), Predictions(), LayerSqnr()
        self.curves = Curves()
        # Least heights that hold the text beside the controls: text that grows or shrinks by a line would make the
        # browser lay out the whole page again on every change (docs/performance.md measured that cost for a
        # figure's height); only on a phone, where the text takes more lines, do they grow.
        self.summary = pn.pane.Markdown("", sizing_mode="stretch_width", min_height=64, margin=(0, 10),
                                        css_classes=["quantization-summary"])
        self.accuracy = pn.pane.Markdown("", sizing_mode="stretch_width", min_height=72, margin=(0, 10),
                                         css_classes=["quantization-accuracy"])
        # Its full height, no inner scroll box: "one weight, end to end", "one activation" and the SQNR stay in view
        self.arithmetic = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10),
                                           css_classes=["quantization-arithmetic"])
        self.progress = pn.indicators.Progress(value=0, max=len(qm.sweep_settings(measured.DEFAULT)), width=260,
                                               bar_color="primary", visible=False)
        self.progress_text = pn.pane.Markdown("", css_classes=["quantization-progress"])
        self.int8_button = pn.widgets.Button(label="Build real int8 with onnxruntime", color="primary", width=300)
        self.int8_button.on_click(self.build_int8)
        self.int8_progress = pn.indicators.Progress(value=0, max=len(INT8_STEPS), width=260, visible=False)
        self.int8_text = pn.pane.Markdown(INT8_INTRO, sizing_mode="stretch_width", css_classes=["quantization-int8"])
        self.layer_menu = keep_in_step(pn.widgets.Select(label="Layer", options=[], width=260))
        self.layer_menu.param.watch(self._pick_layer, "value")
        self._update()

    def steps(self) -> tuple[Step, ...]:
        return text.steps()

    # --- state -------------------------------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.state.inference.model.name

    @property
    def layers(self) -> list[str]:
        """The layers whose weights are quantized: the layer menu's choices."""
        return qm.quantizable_layers(self.state.inference.model.module)

    @property
    def layer(self) -> str:
        """The layer explained: the session's layer, or the quantizable layer before it (math.explained_layer)."""
        return qm.explained_layer(self.layers, self.state.inference.trace.names, self.state.layer)

    @layer.setter
    def layer(self, name: str) -> None:
        self.state.layer = choice(name, self.layers, "quantizable layer")

    @property
    def setting(self) -> qm.Setting:
        """The current choices as a complete, hashable description (a cache key)."""
        return qm.Setting(weight_bits=max(self.bits, 2), scheme=self.scheme, granularity=self.granularity,
                          clip=self.clip, act_bits=self.act_bits or None,
                          format="binary" if self.bits == 1 else "integer")

    def _pick_layer(self, event: param.parameterized.Event) -> None:
        """The student picked a layer in the menu: it becomes the session's (the menu already shows it)."""
        if event.new != self.layer:
            self.state.layer = event.new

    # --- the one update ----------------------------------------------------------------------------------------

    @follows("state.inference", "state.layer", "bits", "act_bits", "granularity", "scheme", "clip", "state.channel")
    def _update(self) -> None:
        inference, setting, layer = self.state.inference, self.setting, self.layer
        model = inference.model
        with one_update():
            if self.changed("layer menu", (model, layer)):
                self.layer_menu.param.update(options=self.layers, value=layer)
            if self.changed("model", model.name):
                self._show_int8()
            if self.changed("curves", (model.name, setting.clip, setting.act_bits)):
                self._look_up(model, [None, *qm.sweep_settings(setting)])
                self._sweep()
            # a new input changes no accuracy; a new measurement is shown as it comes (_keep)
            if self.changed("measured", (model.name, setting)):
                self._look_up(model, [None, setting])
                self._show_measured()
        key = (inference, layer, setting, self.state.channel)  # math.explain keeps the channel within the layer's
        if self.changed("result", key):
            self.slow("result").request(key, partial(self._explain, *key), partial(self._show_result, inference))
        missing = [s for s in (None, setting) if (model.name, s) not in self._measured]
        if missing:
            accuracy = self.slow("accuracy", background=True)
            accuracy.request((model.name, setting), partial(_measure, model, missing, urgent=True),
                             partial(self._keep, model.name))

    def _explain(self, inference: Inference, layer: str, setting: qm.Setting, channel: int
                 ) -> qm.Explained | InputError:
        """Off the loop: the quantized copy on the input, and the layer's weights."""
        model = inference.model
        calibration = measured.calibration(model.name) if setting.act_bits is not None else None
        try:
            return qm.explain(self._copy_of(model), inference.trace, inference.x, layer, setting, channel, calibration)
        except InputError as e:  # the student's to read, in the error pane
            return e

    def _copy_of(self, model: zoo.ZooModel) -> qm.QuantizedCopy:
        """This lesson's private copy of `model`, made on first use (one at a time: the model shown)."""
        with self._copy_lock:
            if self._copy is None or self._copy.shared is not model.module:
                self._copy = qm.QuantizedCopy(model.module)
            return self._copy

    def _show_result(self, inference: Inference, e: qm.Explained | InputError) -> None:
        name = inference.model.name
        if isinstance(e, InputError):
            self.show_error(str(e))
            return
        self.clear_error()
        self.result = e
        self.histogram.show(e, name)
        self.arithmetic.object = text.arithmetic(e, inference.trace[e.layer].input)
        self.predictions.show(inference.probs, e.probs, inference.model.labels, name)
        self.layer_sqnr.show(e.layer_sqnr, name)
        self.summary.object = text.summary(e, inference.description, inference.model.labels, inference.probs)
        tag_results(name, self.arithmetic, self.summary)

    # --- accuracies: kept ones at once, the others measured off the loop ------------------------------------------

    def _look_up(self, model: zoo.ZooModel, settings: list[qm.Setting | None]) -> None:
        """Fill in what is kept (stored beside the card, or in the on-disk cache)."""
        for setting in settings:
            if (model.name, setting) not in self._measured:
                value = measured.known(model, setting)
                if value is not None:
                    self._measured[(model.name, setting)] = value

    def _keep(self, model_name: str, values: dict[qm.Setting | None, float]) -> None:
        """Keep measured accuracies under their model, and show what the current state has of them."""
        self._measured.update({(model_name, setting): top1 for setting, top1 in values.items()})
        self._show_measured()

    def _sweep(self) -> None:
        """Ask for the first point of the curves on screen not measured yet; its answer asks for the next."""
        model = self.state.inference.model
        missing = [s for s in qm.sweep_settings(self.setting) if (model.name, s) not in self._measured]
        if missing:
            sweep = self.slow("sweep", background=True)
            sweep.request((model.name, missing[0]), partial(_measure, model, missing[:1], urgent=False),
                          partial(self._swept, model.name))

    def _swept(self, model_name: str, values: dict[qm.Setting | None, float]) -> None:
        self._keep(model_name, values)
        self._sweep()

    def _show_measured(self) -> None:
        """The accuracy, the curves and the progress of the current model and setting, as far as measured."""
        model, setting = self.state.inference.model, self.setting
        mine = {s: top1 for (name, s), top1 in self._measured.items() if name == model.name}
        settings = qm.sweep_settings(setting)
        n, meaning = measured.sample_size(model), measured.meaning(model)
        self.curves.show(mine, settings, model.name, meaning, n)
        self.curves.show_current(setting, mine.get(setting), model.name)
        done = sum(s in mine for s in settings)
        dataset = measured.dataset_name(model)
        self.progress.param.update(value=done, max=len(settings), visible=done < len(settings))
        self.progress_text.object = text.progress(done, len(settings), dataset, setting)
        self.accuracy.object = text.accuracy(meaning, dataset, n, mine.get(None), mine.get(setting))
        tag_results(model.name, self.progress, self.progress_text, self.accuracy)

    # --- real int8 ---------------------------------------------------------------------------------------------

    def build_int8(self, _event=None) -> None:
        """Export, quantize with onnxruntime and measure, off the loop, one step per request, with progress."""
        self._int8_step(self.state.inference.model, 0)

    def _int8_step(self, model: zoo.ZooModel, step: int, answer: object = None) -> None:
        if isinstance(answer, Exception):
            del self._int8[model.name]
            self.show_error(f"**The int8 model could not be built:** {answer}")
        elif step == len(INT8_STEPS):
            float_bytes, int8_bytes, result = answer
            self._int8[model.name] = (step, text.int8_table(float_bytes, int8_bytes, result, measured.meaning(model)))
        else:
            said = INT8_STEPS[step].format(calibration=measured.calibration_name(model), what=measured.meaning(model),
                                           dataset=measured.dataset_name(model))
            self._int8[model.name] = (step, said)
            int8 = self.slow(f"int8 {model.name}", background=True)
            int8.request((model.name, step), partial(_int8_work, model, step),
                         partial(self._int8_step, model, step + 1))
        with one_update():
            self._show_int8()  # the current model's: another model's build goes on unseen

    def _show_int8(self) -> None:
        model_name = self.model_name
        step, said = self._int8.get(model_name, (len(INT8_STEPS), INT8_INTRO))
        self.int8_progress.param.update(value=step, visible=step < len(INT8_STEPS))
        self.int8_button.disabled = step < len(INT8_STEPS)
        self.int8_text.object = said
        tag_results(model_name, self.int8_text)

    # --- layout ------------------------------------------------------------------------------------------------

    def controls(self) -> pn.Column:
        act = pn.widgets.Select(label="Activation bits", options=ACT_CHOICES, value=self.act_bits, width=260)
        act.link(self, value="act_bits", bidirectional=True)
        return pn.Column(
            self.layer_menu,
            pn.widgets.IntSlider.from_param(self.param.bits, label="Weight bits (1 = binary)", width=260),
            act,
            pn.widgets.RadioButtonGroup.from_param(self.param.granularity, width=260),
            pn.widgets.RadioButtonGroup.from_param(self.param.scheme, width=260),
            pn.pane.Markdown("Clipping (where the ends go)", margin=(5, 10, 0, 10)),
            pn.widgets.RadioButtonGroup.from_param(self.param.clip, width=260),
            keep_in_step(pn.widgets.IntInput.from_param(self.state.param.channel, label="Output channel shown",
                                                        width=260)),
            width=290)

    def __panel__(self) -> pn.viewable.Viewable:
        half = plots.share_of_row(HALF_LEAST_WIDTH)
        curves = pn.Column(pn.pane.Bokeh(self.curves.fig, sizing_mode="stretch_width"),
                           pn.Row(self.progress, self.progress_text, stylesheets=[plots.WRAPS]),
                           sizing_mode="stretch_width", css_classes=["quantization-curves"])
        main = pn.Column(
            self.errors, self.summary, self.accuracy,
            # the histogram across the whole width, its arithmetic under it
            pn.pane.Bokeh(self.histogram.fig, sizing_mode="stretch_width"), self.arithmetic,
            # the prediction beside the SQNR bars, or above them on a phone
            pn.Row(pn.Column(pn.pane.Bokeh(self.predictions.fig), max_width=PREDICTIONS_WIDTH, **half),
                   pn.Column(pn.pane.Bokeh(self.layer_sqnr.fig), **half), stylesheets=[plots.WRAPS]),
            Later(curves, height=450),  # below the first screen: placed when scrolled to (explorer/session/later.py)
            pn.pane.Markdown("### Real integers: int8 with onnxruntime", margin=(15, 10, 0, 10)),
            pn.Row(self.int8_button, self.int8_progress, stylesheets=[plots.WRAPS]), self.int8_text,
            **plots.share_of_row(MAIN_LEAST_WIDTH))
        # The controls beside the figures, or above them where the lesson is too narrow for both (a phone, a tablet
        # upright): a row that wraps (plots.WRAPS), not a FlexBox, in which BokehJS laid the stretching figures out
        # without end (the page threw "Maximum call stack size exceeded" as the lesson opened)
        return pn.Row(pn.Column(self.controls(), width=CONTROLS_WIDTH), main, sizing_mode="stretch_width",
                      stylesheets=[plots.WRAPS])


def _measure(model: zoo.ZooModel, settings: list[qm.Setting | None], urgent: bool) -> dict[qm.Setting | None, float]:
    """Off the loop: the kept top-1 of each setting, measured now where nobody has yet, one evaluation per turn of the
    shared slots (at most two evaluations at once over all sessions; a student's own request before a sweep's)."""
    turn = background.request_turn if urgent else background.sweep_turn
    return {setting: measured.measure(model, setting, turn()) for setting in settings}


def _int8_work(model: zoo.ZooModel, step: int) -> object:
    """Off the loop: step `step` of INT8_STEPS; the last returns (float file bytes, int8 file bytes, measurement).
    A failure is returned, so that the lesson says so and offers the button again."""
    files = int8.files_for(model.name, model.card.sha256)
    try:
        if step == 0:
            return int8.export_float(model.module, files, measured.calibration(model.name))
        if step == 1:
            with background.request_turn():
                return int8.quantize_int8(files, measured.calibration(model.name))
        evalset = measured.heldout(model.name)
        with background.request_turn():
            return files.float_bytes, files.int8_bytes, int8.measure(files, evalset)
    except Exception as e:  # shown to the student by _int8_step
        log.exception("building int8 for %s failed at step %d", model.name, step)
        return e

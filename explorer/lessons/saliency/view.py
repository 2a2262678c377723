"""The saliency lesson: what the model looks at, by five methods, and whether to believe them.

Sections: (1) the student's input with each method's map over it (view_maps.py), for a class of the student's choice
(the predicted one by default) and the methods' settings; Integrated Gradients' completeness gap; (2) deletion and
insertion curves per method with their areas and which method is most faithful here (view_faithfulness.py); (3) the
model-randomisation sanity check (view_sanity.py). Every number comes from math.py, faithfulness.py and sanity.py.

Grad-CAM's layer is a setting of the lesson, like SmoothGrad's noise: the session's layer (which the overview sets
and which opens on the first convolution) is where the other lessons look, while Grad-CAM is most useful on a deep
layer (math.default_grad_cam_layer), where it opens.

Slow work (explorer/session/work.py; off the event loop when served, newest answer only): a map takes from a few
milliseconds (MNIST) to seconds (Integrated Gradients on MobileNetV2). A change asks for the maps it made stale, one
request per map, then their curves, one request per method; each answer paints its part and the progress, then
asks for the next. A map is recomputed only when a setting it reads changed (READS). The sanity check runs on its
button, one request per randomisation step, and is dropped when a map changes. Each computation takes one of the
process's few turns (explorer/session/background.py): every student's maps before anyone's curves or sanity steps,
and never more at once than the cores can run. A map, the student's answer, runs at the server's own priority; the
curves and the sanity check measure, at background priority. Every figure and pane that shows a result carries its
model's tag (explorer.session.tags), set together with the result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import panel as pn
import param

from explorer.core.shared_results import RESULTS, input_digest, model_token
from explorer.errors import InputError
from explorer.lessons import plots
from explorer.lessons.saliency import faithfulness as fm
from explorer.lessons.saliency import math as sm
from explorer.lessons.saliency.view_faithfulness import Faithfulness
from explorer.lessons.saliency.view_maps import Maps
from explorer.lessons.saliency.view_sanity import Sanity
from explorer.session import background
from explorer.session.in_step import keep_in_step
from explorer.session.later import heading_then_later
from explorer.session.lesson import Lesson
from explorer.session.narrative import Step
from explorer.session.state import Inference, follows, one_update
from explorer.session.tags import tag_results

PREDICTED = -1  # the class menu's value for "the predicted class"
# The settings each method's map depends on, besides the class: a map is recomputed only when one of them changes.
READS: dict[str, tuple[str, ...]] = {
    "gradient": (),
    "gradient_x_input": (),
    "smoothgrad": ("noise", "samples", "seed"),
    "integrated_gradients": ("baseline", "steps", "seed", "black"),
    "grad_cam": ("layer",),
}

INTRO = (
    "### Saliency: what the model looks at, and whether to believe it\n"
    "A saliency map colours each pixel of your input by how much it matters to the model's score for one class. "
    "Five methods explain the same decision below, and they disagree; then two tests ask whether to believe them: "
    "do the pixels they point at really change the prediction, and does a map change at all when the model's "
    "weights are made random?")


class SaliencyLesson(Lesson):
    """Five saliency methods on the student's input, their faithfulness, and the randomisation sanity check."""

    tour_title = "Guided tour: saliency"
    url_settings = {"target": "target", "baseline": "baseline", "ig_steps": "ig_steps", "noise": "noise",
                    "samples": "samples"}

    target = param.Integer(default=None, allow_None=True, bounds=(0, None),
                           doc="Class explained; None: the class the model predicts.")
    noise = param.Number(default=0.15, bounds=(0.0, 0.5), step=0.01,
                         doc="SmoothGrad's noise σ, as a fraction of the input's range.")
    samples = param.Integer(default=16, bounds=(1, 64), doc="SmoothGrad's number of noisy copies.")
    baseline = param.Selector(default="black", objects=list(sm.BASELINES), doc="Integrated Gradients' start image.")
    ig_steps = param.Integer(default=32, bounds=(2, 128), doc="Integrated Gradients' number of steps.")
    cam_layer = param.Selector(default=None, objects=[], allow_None=True, doc="Grad-CAM's layer.")
    opacity = param.Number(default=0.7, bounds=(0.1, 1.0), step=0.05, doc="Opacity of the maps over the input.")

    def __init__(self, model: str | None = None, **params):
        super().__init__(model=model, **params)
        self.attributions: dict[str, sm.Attribution] = {}  # method -> the map shown
        self._map_keys: dict[str, object] = {}    # method -> the key its shown map was computed for
        self._curve_keys: dict[str, object] = {}  # method -> the key its shown curves were computed for
        self._model_name = ""
        self._wanted: tuple | None = None  # the (input, settings) the chain of slow work is computing for
        self._labels: tuple[str, ...] = ()  # the model's class names, to keep a chosen class across MNIST models
        self.maps, self.faithfulness = Maps(self.opacity), Faithfulness()
        self.sanity = Sanity(self.slow("sanity", background=True), self._sanity_work)
        self.sanity.on_flags = self._flag_maps
        self.progress = pn.indicators.Progress(value=0, max=1, width=300)
        plots.show_in_place(self.progress, False)
        self.progress_text = pn.pane.Markdown("", margin=(0, 10), css_classes=["saliency-progress"])
        self._widgets()
        self._page = self._layout()
        self._update()

    def steps(self) -> tuple[Step, ...]:
        return STEPS

    def __panel__(self) -> pn.viewable.Viewable:
        return self._page

    # --- settings ---

    @property
    def explained(self) -> int:
        """The class explained: the chosen one, else the predicted one (the state's traced probabilities' largest)."""
        return predicted(self.state.inference) if self.target is None else self.target

    def settings(self) -> sm.Settings:
        card = self.state.inference.model.card
        return sm.Settings(target=self.explained, noise=self.noise, samples=self.samples, baseline=self.baseline,
                           steps=self.ig_steps, layer=self.cam_layer, black=sm.black_pixel(card.mean, card.std))

    def runner_up(self) -> int:
        """The model's second most likely class for the input (a tour step explains it)."""
        return int(self.state.inference.probs.topk(2).indices[1])

    def _widgets(self) -> None:
        self._class_menu = keep_in_step(pn.widgets.Select(label="Class explained", options={}, width=220))
        self._class_menu.param.watch(self._class_chosen, "value")
        self._controls = pn.FlexBox(
            self._class_menu,
            pn.widgets.Select.from_param(self.param.cam_layer, name="Grad-CAM layer", width=200),
            pn.widgets.FloatSlider.from_param(self.param.noise, name="SmoothGrad noise", width=180, throttled=True,
                                              format="0%"),
            pn.widgets.IntSlider.from_param(self.param.samples, name="SmoothGrad samples", width=180,
                                            throttled=True),
            pn.widgets.Select.from_param(self.param.baseline, name="IG baseline", width=120),
            pn.widgets.IntSlider.from_param(self.param.ig_steps, name="IG steps", width=180, throttled=True),
            pn.widgets.FloatSlider.from_param(self.param.opacity, name="Map opacity", width=160, format="0%"),
            sizing_mode="stretch_width", css_classes=["saliency-controls"])

    def _class_chosen(self, event: param.parameterized.Event) -> None:
        chosen = None if event.new == PREDICTED else event.new
        if chosen != self.target:
            self.target = chosen

    @param.depends("opacity", watch=True)
    def _opacity_changed(self) -> None:
        for f in self.maps.figures.values():
            f.set_opacity(self.opacity)

    # --- the one update ---

    @follows("state.inference", "target", "noise", "samples", "baseline", "ig_steps", "cam_layer")
    def _update(self) -> None:
        self._refresh()

    def _refresh(self) -> None:
        """Ask for what the settings and the input need and is not shown yet (at once, also when the curves' part
        has just been placed)."""
        inference = self.state.inference
        name = inference.model.name
        if name != self._model_name and self._new_model(inference):
            return  # the model's own settings were set: their watchers ran this update
        with one_update():
            if self.changed("input", inference):
                self._new_input(inference)
            settings = self.settings()
            self._show_target(inference, settings.target)
            stale = [m for m in sm.METHODS if self._map_keys.get(m) != map_key(inference, m, settings)]
            if stale:
                self.sanity.clear(name)
            for m in sm.METHODS:  # (back to settings whose maps are shown: nothing is on its way any more)
                self.maps.figures[m].waiting(m in stale)
            # the deletion and insertion curves once the student has scrolled to them: a measurement each
            redraw = [m for m in sm.METHODS if self._curve_keys.get(m) != map_key(inference, m, settings)
                      and self._curves_part.placed]
            digest = input_digest(inference.x)  # once per update, for every job's shared key
            jobs = [self._map_job(inference, digest, m, settings) for m in stale]
            jobs += [self._curve_job(inference, digest, m, settings) for m in redraw]
            if redraw:
                self.faithfulness.computing(name)
            # (no jobs: a chain still on its way computes for other settings, and its answers are dropped)
            self._run((inference, settings), jobs, 0)

    def _new_model(self, inference: Inference) -> bool:
        """Grad-CAM's layers and the classes of this model; True where a setting changed (its watcher updates)."""
        model = inference.model
        same_classes, self._labels = self._labels == model.labels, model.labels
        self._model_name = model.name
        self.sanity.new_model(model)
        layers = list(sm.grad_cam_layers(model.module))
        self.param.cam_layer.objects = layers
        # a class chosen for another model's labels means something else here: back to the predicted one
        settings = dict(cam_layer=sm.default_grad_cam_layer(model.module) if layers else None,
                        target=self.target if same_classes else None)
        changed = {k: v for k, v in settings.items() if getattr(self, k) != v}
        self.param.update(**changed)
        return bool(changed)

    def _new_input(self, inference: Inference) -> None:
        self.attributions, self._map_keys, self._curve_keys = {}, {}, {}
        self.clear_error()
        self.maps.new_input(inference.view, inference.model.name)
        self.faithfulness.clear(inference.model.name)

    def _show_target(self, inference: Inference, target: int) -> None:
        labels, top = inference.model.labels, predicted(inference)
        if self.changed("classes", (inference.model.name, top)):  # 1000 names for MobileNetV2: sent when they change
            self._class_menu.options = {f"the predicted class ({labels[top]})": PREDICTED} | {
                f"{i}: {label}" if label != str(i) else label: i for i, label in enumerate(labels)}
        self._class_menu.value = PREDICTED if self.target is None else self.target
        which = "the predicted class" if target == top else f"not the predicted class, {labels[top]}"
        self.maps.target_text.object = (
            f"Explaining class **{labels[target]}** ({which}), which the model gives probability "
            f"**{float(inference.probs[target]):.1%}** for {inference.description}.")
        tag_results(inference.model.name, self.maps.target_text)

    # --- slow work: a chain of jobs, each painting its part and asking for the next ---

    def _map_job(self, inference: Inference, digest: tuple, method: str, settings: sm.Settings) -> Job:
        def attribute() -> sm.Attribution | InputError:
            try:
                return sm.attribute(inference.model.module, inference.x, method, settings)
            except InputError as e:  # this method cannot explain this model or setting: the others go on
                return e.with_traceback(None)  # kept for the class: without the frames of this computation

        key = shared_key("saliency map", inference, digest, method, settings)

        def show(a: sm.Attribution | InputError) -> None:
            self._map_keys[method] = map_key(inference, method, settings)
            if isinstance(a, InputError):
                self.attributions.pop(method, None)
                self.maps.figures[method].unavailable(inference.model.name)
                self.show_error(f"**{sm.METHODS[method]}:** {a}")
            else:
                self.attributions[method] = a
                self.maps.show(a, inference.model.name)
            self.sanity.ready(self._maps_current(inference, settings))

        return Job(f"the {sm.METHODS[method]} map", key, lambda: RESULTS.get(key, attribute), show,
                   measurement=False)

    def _curve_job(self, inference: Inference, digest: tuple, method: str, settings: sm.Settings) -> Job:
        def curves() -> tuple[fm.Curve, fm.Curve]:
            heat = self.attributions[method].heat
            model, x, target = inference.model.module, inference.x, settings.target
            return (fm.deletion_curve(model, x, heat, target, black=settings.black),
                    fm.insertion_curve(model, x, heat, target, black=settings.black))

        key = shared_key("saliency curves", inference, digest, method, settings)

        def compute() -> tuple[fm.Curve, fm.Curve] | None:
            if method not in self.attributions:  # the method could not explain this model
                return None
            return RESULTS.get(key, curves)

        def show(curves: tuple[fm.Curve, fm.Curve] | None) -> None:
            self._curve_keys[method] = map_key(inference, method, settings)
            if curves is not None:
                self.faithfulness.show(method, *curves, inference.model.name)

        return Job(f"the {sm.METHODS[method]} deletion and insertion curves", key, compute, show,
                   measurement=True)

    def _run(self, wanted: tuple, jobs: list[Job], done: int) -> None:
        self._wanted = wanted
        with one_update():  # what the class has computed already is shown at once, in one message
            while done < len(jobs) and (kept := RESULTS.kept(jobs[done].key)) is not None:
                jobs[done].show(kept[0])
                done += 1
            if done == len(jobs):
                plots.show_in_place(self.progress, False)
                self.progress_text.object = ""
                return
        job = jobs[done]
        self.progress.max = len(jobs)  # first: the value's bounds follow the max (a chain may start past the old max)
        self.progress.value = done
        plots.show_in_place(self.progress, True)
        self.progress_text.object = f"◔ Computing {job.what} ({done + 1} of {len(jobs)}) …"

        def compute():
            if self._wanted != wanted:  # the student moved on before this started (maybe on the other strand)
                return None
            # one of the process's few turns (explorer/session/background.py): students' maps before anyone's
            # curves, and no more computations at once than the cores can run
            with background.sweep_turn() if job.measurement else background.request_turn():
                if self._wanted != wanted:  # the student moved on while this waited: its answer would be dropped
                    return None
                return job.compute()

        def shown(result) -> None:
            if self._wanted != wanted:  # asked for settings the student has left (the newest request of the strand)
                return
            job.show(result)
            self._run(wanted, jobs, done + 1)

        strand = self.slow("curves", background=True) if job.measurement else self.slow("maps")
        strand.request((wanted, done), compute, shown)

    def _flag_maps(self, survives: dict[str, bool | None]) -> None:
        for method, flag in survives.items():
            self.maps.figures[method].flag(flag)

    def _maps_current(self, inference: Inference, settings: sm.Settings) -> bool:
        """Whether every map shown was computed for this input and these settings."""
        return all(self._map_keys.get(m) == map_key(inference, m, settings) for m in sm.METHODS)

    def _sanity_work(self) -> tuple[Inference, sm.Settings, tuple[str, ...]] | None:
        """What the sanity check explains: the input, the settings and the methods whose maps are shown (None while
        a map is on its way)."""
        inference, settings = self.state.inference, self.settings()
        if not self._maps_current(inference, settings):
            return None
        return inference, settings, tuple(m for m in sm.METHODS if m in self.attributions)

    # --- layout ---

    def _layout(self) -> pn.Column:
        # below the first screen: placed when the student scrolls to it (explorer/session/later.py)
        faithfulness = heading_then_later(self.faithfulness.layout(), height=500)
        self._curves_part = faithfulness[1]
        self._curves_part.param.watch(lambda _: self._refresh(), "placed")
        return pn.Column(
            pn.pane.Markdown(INTRO, sizing_mode="stretch_width", margin=(0, 10), css_classes=["explanation"]),
            self.errors,
            pn.Row(self.progress, self.progress_text, stylesheets=[plots.WRAPS]),  # under each other on a phone
            *self.maps.layout(self._controls),
            *faithfulness,
            *heading_then_later(self.sanity.layout(), height=450),
            sizing_mode="stretch_width")


@dataclass(frozen=True)
class Job:
    """One request of the lesson's chain of slow work."""

    what: str                                         # for the progress text
    key: Hashable                                     # of its result in shared_results.RESULTS
    compute: Callable[[], object]                     # off the event loop
    show: Callable[[object], None]                    # on it, with compute's result
    # Curves measure: a sweep's turn, at background priority. A map is what the student waits for: a request's turn,
    # at the server's own priority (at background priority it waited behind the browsers and every sweep, as the
    # convolution lesson's follow-up did)
    measurement: bool


def predicted(inference: Inference) -> int:
    return int(inference.probs.argmax())


def map_key(inference: Inference, method: str, settings: sm.Settings) -> tuple:
    """What a method's map depends on: the input, the class, and the settings the method reads (READS)."""
    defaults = sm.Settings(target=settings.target)
    read = {name: getattr(settings, name) for name in READS[method]}
    return inference, method, dataclasses.replace(defaults, **read)


def shared_key(what: str, inference: Inference, digest: tuple, method: str, settings: sm.Settings) -> tuple:
    """map_key for every session of the process (explorer/core/shared_results.py): the model's token and the
    input's digest (input_digest of inference.x) in place of this session's Inference, and the black pixel the
    curves paint with."""
    _, method, read = map_key(inference, method, settings)
    return what, model_token(inference.model), digest, method, read, settings.black


STEPS = (
    Step("Five answers to one question",
         "Section 1 explains the class the model predicts for your input, five ways. The **vanilla gradient** says "
         "how much the class score would change if one pixel changed a little; **gradient × input** weighs that by "
         "the pixel itself; **SmoothGrad** averages the gradient over noisy copies of the input; **Integrated "
         "Gradients** adds gradients up along a path from a black image to yours; **Grad-CAM** weighs a deep "
         "layer's feature maps. Red raises the class score, blue lowers it.",
         {"target": None, "noise": 0.15, "samples": 16, "baseline": "black", "ig_steps": 32},
         section="saliency-target"),
    Step("Explain another class",
         "The class menu now asks about the model's second most likely class. The maps change: each now shows the "
         "pixels that speak for and against *that* class. A map always explains one class, never the image.",
         {"target": lambda lesson: lesson.runner_up()}, section="saliency-target"),
    Step("SmoothGrad: more noise, more samples",
         "SmoothGrad now adds noise of 30 % of the input's range to 48 copies and averages their gradients. "
         "Compare its map with the vanilla gradient's: averaging smooths out the speckle of single gradients.",
         {"target": None, "noise": 0.3, "samples": 48}, section="saliency-target"),
    Step("Integrated Gradients: the completeness check",
         "With only 4 steps the integral from the black image to yours is coarse. The completeness gap under the "
         "maps says by how much the attributions miss the rise in the class score; drag *IG steps* up and watch "
         "the gap shrink.",
         {"noise": 0.15, "samples": 16, "baseline": "black", "ig_steps": 4}, section="saliency-target"),
    Step("Faithfulness",
         "Section 2 removes the pixels each map calls most important, and separately puts them back into the "
         "baseline, and follows the class probability. The table and the sentence under the curves say which "
         "method's pixels mattered most to the model on this input.",
         {"ig_steps": 32}, section="saliency-part-2"),
    Step("Sanity check: does the map depend on the model?",
         "Section 3 replaces the model's weights with random ones, layer by layer from the output down, and "
         "compares each new map with the original (rank correlation; 1 = the same ranking of pixels). Press *Run "
         "the sanity check*: a map that stays the same although the model is destroyed shows the input, not what "
         "the model learned, and is flagged.",
         {}, section="saliency-part-3"),
)

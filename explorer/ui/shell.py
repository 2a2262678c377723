"""The app: template, sidebar (model, input, device), prediction, overview, and the lesson frame.

Lessons are known through one explicit table (STYLE C14) and imported only when their tab first
opens. A lesson whose issue has not landed has no target: its tab says what is coming, and
nothing in it pretends to work.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import panel as pn
import param

from explorer.core import trace
from explorer.session.narrative import Narrative, Step
from explorer.session.state import LESSON_NAMES, ExplorerState, SessionView, first_layer, one_update
from explorer.ui.after_paint import AfterPaint

TITLE = "Neural network explorer"
URL_PARAMS = {"model": "model", "lesson": "lesson", "layer": "layer"}


@dataclass(frozen=True)
class Lesson:
    title: str
    target: str | None   # "module:Class" of its Viewer, None until the lesson's issue lands
    coming: str          # what the lesson will show, for its placeholder


LESSONS: dict[str, Lesson] = {
    "convolution": Lesson("Convolution", "explorer.lessons.convolution.view:ConvolutionLesson", (
        "The kernel window sliding over **your** image with the arithmetic at every position (patch × weights, "
        "sum, plus bias, then BatchNorm and ReLU), a kernel playground with presets, receptive fields drawn on "
        "the input, and an atlas of every filter.")),
    "normalization": Lesson("Normalization", "explorer.lessons.normalization.view:NormalizationLesson", (
        "Which numbers share one mean and variance in BatchNorm, LayerNorm, GroupNorm and InstanceNorm; live "
        "statistics of the model's norm layers on your input; batch size and train vs eval; folding BatchNorm "
        "into the convolution before it.")),
    "attention": Lesson("Attention", "explorer.lessons.attention.view:AttentionLesson", (
        "Your input cut into patches, attention maps per layer and head, one head computed step by step "
        "(Q, K, V, softmax), attention rollout and attention distance (ViT models).")),
    "pruning": Lesson("Pruning", "explorer.lessons.pruning.view:PruningLesson", (
        "A sparsity slider with the measured accuracy: magnitude, random and structured pruning, layer by "
        "layer or global, per-layer sensitivity, and what really gets faster.")),
    "quantization": Lesson("Quantization", "explorer.lessons.quantization.view:QuantizationLesson", (
        "Scale and zero-point spelled out for one layer, a bits slider, per-tensor vs per-channel, binary and "
        "ternary weights, and real int8 with onnxruntime.")),
}
assert tuple(LESSONS) == LESSON_NAMES, "the state's lesson names and the table must agree"

TOUR = (
    Step("Pick an input", "Choose a digit from the gallery, upload a picture or draw a digit in the sidebar. "
         "The bars show what the model believes, as probabilities that add up to 1."),
    Step("The first layer", "The strip below shows every layer of the network, in order, with what it computed "
         "for your input. The first convolution is selected: each small square is one of its channels, one "
         "filter's response to your image (red above zero, blue below).",
         {"layer": lambda state: first_layer(state.ensure().trace), "channel": 0}),
    Step("Deeper layers", "Further in, the maps get smaller and there are more of them: each channel now "
         "combines many channels of the layer before. Click any layer in the strip to see its channels.",
         {"layer": lambda state: deepest_map(state.ensure().trace), "channel": 0}),
    Step("The decision", "The last layer turns everything into one score per class; the softmax turns the "
         "scores into the probabilities in the bar chart. Try drawing a digit badly and watch them change.",
         {"layer": lambda state: state.ensure().trace.records[-1].name}),
)


def deepest_map(t: trace.Trace) -> str:
    """The last layer whose output is still a stack of 2-D maps (or tokens), before the classifier."""
    spatial = [r for r in t.records if r.output.dim() >= 3 and r.kind in ("conv", "norm", "activation", "pool")]
    return (spatial[-1] if spatial else t.records[-1]).name


class LessonFrame(pn.viewable.Viewer):
    """Tabs for the lessons, synced with `state.lesson`; each lesson is built on first opening."""

    state = param.ClassSelector(class_=ExplorerState, constant=True)

    def __init__(self, **params):
        super().__init__(**params)
        self._bodies = {name: pn.Column(pn.pane.Markdown("Loading the lesson…"), sizing_mode="stretch_width")
                        for name in LESSONS}
        self._built: dict[str, pn.viewable.Viewable] = {}
        self._tabs = pn.Tabs(*((lesson.title, self._bodies[name]) for name, lesson in LESSONS.items()),
                             sizing_mode="stretch_width", dynamic=False, css_classes=["lesson-tabs"])
        self._tabs.param.watch(self._tab_clicked, "active")
        self._tabs.active = LESSON_NAMES.index(self.state.lesson)
        # The open lesson is built once the page has been sent, so the first paint does not wait for it
        # (outside a server, at once).
        pn.state.onload(self._show_lesson)

    def _tab_clicked(self, event) -> None:
        self.state.lesson = LESSON_NAMES[event.new]

    @param.depends("state.lesson", watch=True)
    def _lesson_chosen(self) -> None:
        if self.state.after_paint is None:
            self._show_lesson()
        else:  # the control's own answer (the overview, the tab header) is painted first
            self.state.after_paint.run((id(self), "lesson"), self._show_lesson)

    def _show_lesson(self) -> None:
        name = self.state.lesson
        if name not in self._built:  # outside one_update(): Bokeh's validation converts values while models are made
            self._built[name] = build_lesson(name, self.state)
            self._bodies[name].objects = [self._built[name]]
        with one_update():
            self._tabs.active = LESSON_NAMES.index(name)
            for built_name, lesson in self._built.items():  # a lesson in a closed tab does not follow the state
                if isinstance(lesson, SessionView):
                    lesson.shown = built_name == name

    def __panel__(self) -> pn.viewable.Viewable:
        return self._tabs


def build_lesson(name: str, state: ExplorerState) -> pn.viewable.Viewable:
    """The lesson's Viewer, or the honest placeholder of a lesson that has not landed yet."""
    lesson = LESSONS[name]
    if lesson.target is None:
        return pn.pane.Markdown(f"### {lesson.title}: coming soon\n\nThis lesson is not built yet. It will show: "
                                f"{lesson.coming}", css_classes=["lesson-coming"], sizing_mode="stretch_width")
    module, cls = lesson.target.split(":")
    return getattr(importlib.import_module(module), cls)(state=state)


def apply_link(state: ExplorerState, values: dict[str, object]) -> None:
    """Apply what a shared link asks for one value at a time, and say which values could not be used."""
    refused = []
    for name, value in values.items():
        try:
            state.param.update(**{name: value})
        except ValueError:
            refused.append(f"{name}={value}")
    if refused:
        state.error = (f"The link asked for {', '.join(refused)}, which is not available here; "
                       f"showing {state.model} instead.")


def build_app(state: ExplorerState | None = None) -> pn.template.BootstrapTemplate:
    """One session's page around `state` (a new one by default). Heavier views are imported here."""
    from explorer.ui.inputs import InputPicker
    from explorer.ui.models import ModelPicker
    from explorer.ui.overview import Overview
    from explorer.ui.predictions import Predictions

    state = state or ExplorerState()
    after_paint = state.after_paint = AfterPaint()
    if pn.state.location is not None:
        pn.state.location.sync(state, URL_PARAMS, on_error=lambda values: apply_link(state, values))
    state.ensure()
    tour = Narrative(TOUR, state, title="Guided tour")
    # Bootstrap rather than Fast: the Fast design loads its font from Google's CDN, and the app must work offline.
    # busy_indicator=None: Panel's spinner cost every click a message before its work (docs/performance.md);
    # the model picker has its own, the one slow choice.
    template = pn.template.BootstrapTemplate(
        title=TITLE, sidebar_width=360, header_background="#0072B2", busy_indicator=None,
        # One root each for sidebar and main: Bokeh recomputes the whole document once per root added.
        sidebar=[pn.Column(pn.pane.Markdown("### Model"), ModelPicker(state=state), pn.pane.Markdown("### Input"),
                           InputPicker(state=state), sizing_mode="stretch_width")],
        main=[pn.Column(pn.Row(Predictions(state=state), tour, sizing_mode="stretch_width"),
                        Overview(state=state), LessonFrame(state=state), after_paint, sizing_mode="stretch_width")])
    return template

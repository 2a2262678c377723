"""The app: template, sidebar (model, input, device), lesson strip, prediction, overview, and the lesson frame.

Lessons are known through one explicit table (STYLE C14) and imported only when their tab first
opens. A lesson whose issue has not landed has no target: its tab says what is coming, and
nothing in it pretends to work.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import panel as pn
import param
from panel.custom import JSComponent

from explorer.core import trace
from explorer.session.narrative import Narrative, Step
from explorer.session.state import LESSON_NAMES, ExplorerState, SessionView, first_layer, one_update
from explorer.ui.after_paint import AfterPaint

TITLE = "Neural network explorer"
URL_PARAMS = {"model": "model", "lesson": "lesson", "layer": "layer"}
PAGE_CSS = Path(__file__).with_name("page.css")  # the narrow-window layout of the template's page
VIEWPORT = "width=device-width, initial-scale=1"  # phones draw the page at their own width, not zoomed out from 980 px


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
    "saliency": Lesson("Saliency", "explorer.lessons.saliency.view:SaliencyLesson", (
        "What the model looks at in your input, by five attribution methods side by side (gradient, gradient × "
        "input, SmoothGrad, Integrated Gradients, Grad-CAM), and whether to believe them: deletion and insertion "
        "curves, and the model-randomisation sanity check.")),
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


class LessonStrip(JSComponent):
    """Every lesson by title, the open one marked: links (`?lesson=name`, so they can be opened in a new tab or
    shared) that, clicked, open the lesson in this page and bring it into view."""

    lessons = param.List(default=[], doc="[name, title] per lesson, in the table's order.")
    value = param.String(default="", doc="The open lesson's name.")

    _esm = """
    export function render({ model }) {
      const nav = document.createElement("nav")
      nav.className = "lesson-links"
      nav.setAttribute("aria-label", "Lessons")
      const heading = document.createElement("span")
      heading.className = "heading"
      nav.append(heading)
      let links = []
      function href(name) {  // this page's link with the other settings kept
        const url = new URL(window.location.href)
        url.searchParams.set("lesson", name)
        return url.search
      }
      function mark() {
        for (const a of links) {
          const current = a.dataset.name === model.value
          if (current) a.setAttribute("aria-current", "page")
          else a.removeAttribute("aria-current")
          a.href = href(a.dataset.name)
        }
      }
      function build() {
        heading.textContent = `${model.lessons.length} lessons:`
        for (const a of links) a.remove()
        links = model.lessons.map(([name, title]) => {
          const a = document.createElement("a")
          a.dataset.name = name
          a.textContent = title
          const refresh = () => { a.href = href(name) }  // the page's URL follows the model and layer too
          a.addEventListener("pointerenter", refresh)
          a.addEventListener("focus", refresh)
          a.addEventListener("click", (e) => {
            if (e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return  // a new tab or window
            e.preventDefault()
            model.value = name
          })
          nav.append(a)
          return a
        })
        mark()
      }
      model.on("lessons", build)
      model.on("value", mark)
      build()
      return nav
    }
    """

    _stylesheets = ["""
    .lesson-links { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; font-size: 15px; }
    .lesson-links .heading { font-weight: 600; margin-right: 4px; }
    .lesson-links a { padding: 4px 12px; border: 1px solid #0072B2; border-radius: 16px; color: #0072B2;
                      text-decoration: none; white-space: nowrap; }
    .lesson-links a:hover { background: rgba(0, 114, 178, 0.1); }
    .lesson-links a:focus-visible { outline: 2px solid #1f6feb; outline-offset: 2px; }
    .lesson-links a[aria-current="page"] { background: #0072B2; color: #fff; font-weight: 600; }
    """]


class LessonStripView(pn.viewable.Viewer):
    """The lesson strip, bound to `state.lesson` both ways."""

    state = param.ClassSelector(class_=ExplorerState, constant=True)

    def __init__(self, **params):
        super().__init__(**params)
        self._strip = LessonStrip(lessons=[[name, lesson.title] for name, lesson in LESSONS.items()],
                                  value=self.state.lesson, sizing_mode="stretch_width", margin=(5, 10))
        self._strip.param.watch(self._clicked, "value")

    def _clicked(self, event) -> None:
        self.state.lesson = event.new

    @param.depends("state.lesson", watch=True)
    def _follow(self) -> None:
        self._strip.value = self.state.lesson

    def __panel__(self) -> pn.viewable.Viewable:
        return self._strip


class Reveal(JSComponent):
    """An empty line that scrolls itself to the top of the window, smoothly, each time `count` grows."""

    count = param.Integer(default=0, doc="Times asked to come into view.")

    _esm = """
    export function render({ model }) {
      const mark = document.createElement("div")
      model.on("count", () => mark.scrollIntoView({ behavior: "smooth", block: "start" }))
      return mark
    }
    """


class LessonFrame(pn.viewable.Viewer):
    """Tabs for the lessons, synced with `state.lesson`; each lesson is built on first opening. A lesson opened
    from elsewhere on the page (the overview, the lesson strip) is scrolled into view: it sits below the fold."""

    state = param.ClassSelector(class_=ExplorerState, constant=True)

    def __init__(self, **params):
        super().__init__(**params)
        self._bodies = {name: sideways_box(pn.pane.Markdown("Loading the lesson…")) for name in LESSONS}
        self._built: dict[str, pn.viewable.Viewable] = {}
        self._tabs = pn.Tabs(*((lesson.title, self._bodies[name]) for name, lesson in LESSONS.items()),
                             sizing_mode="stretch_width", dynamic=False, css_classes=["lesson-tabs"],
                             stylesheets=[".bk-headers-wrapper { flex-wrap: wrap; }"])  # titles on two lines on a phone
        self._reveal = Reveal(height=0, margin=0, sizing_mode="stretch_width")
        self._tabs.param.watch(self._tab_clicked, "active")
        self._tabs.active = LESSON_NAMES.index(self.state.lesson)
        # The open lesson is built once the page has been sent, so the first paint does not wait for it
        # (outside a server, at once).
        pn.state.onload(self._show_lesson)

    def _tab_clicked(self, event) -> None:
        self.state.lesson = LESSON_NAMES[event.new]

    @param.depends("state.lesson", watch=True)
    def _lesson_chosen(self) -> None:
        # A click on the tab header has already switched the tabs: that lesson is in view
        reveal = self._tabs.active != LESSON_NAMES.index(self.state.lesson)
        if self.state.after_paint is None:
            self._show_lesson(reveal)
        else:  # the control's own answer (the overview, the tab header) is painted first
            self.state.after_paint.run((id(self), "lesson"), lambda: self._show_lesson(reveal))

    def _show_lesson(self, reveal: bool = False) -> None:
        name = self.state.lesson
        if name not in self._built:  # outside one_update(): Bokeh's validation converts values while models are made
            self._built[name] = build_lesson(name, self.state)
            self._bodies[name].objects = [self._built[name]]
        with one_update():
            self._tabs.active = LESSON_NAMES.index(name)
            for built_name, lesson in self._built.items():  # a lesson in a closed tab does not follow the state
                if isinstance(lesson, SessionView):
                    lesson.shown = built_name == name
            if reveal:
                self._reveal.count += 1

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self._reveal, self._tabs, sizing_mode="stretch_width", margin=0)


def sideways_box(*objects: pn.viewable.Viewable) -> pn.Column:
    """A column as wide as the page that scrolls sideways when its content is wider (a narrow window), so that the
    page itself never does. Fixed, then stretched by CSS: a stretching column takes its content's width as its
    least width, and would widen the page."""
    return pn.Column(*objects, scroll="x-auto", width=300, sizing_mode="fixed", margin=0,
                     stylesheets=[":host { width: 100% !important; }"])


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
        title=TITLE, sidebar_width=360, header_background="#0072B2", busy_indicator=None, meta_viewport=VIEWPORT,
        # One root each for sidebar and main: Bokeh recomputes the whole document once per root added.
        sidebar=[pn.Column(pn.pane.Markdown("### Model"), ModelPicker(state=state), pn.pane.Markdown("### Input"),
                           InputPicker(state=state), sizing_mode="stretch_width")],
        # The prediction and the tour side by side where there is room, one above the other on a phone
        main=[pn.Column(LessonStripView(state=state),
                        pn.FlexBox(side_by_side(Predictions(state=state)), side_by_side(tour), flex_wrap="wrap",
                                   sizing_mode="stretch_width"),
                        sideways_box(Overview(state=state)), LessonFrame(state=state), after_paint,
                        sizing_mode="stretch_width")])
    template.config.raw_css.append(PAGE_CSS.read_text())
    return template


def side_by_side(view: pn.viewable.Viewer) -> pn.Column:
    """`view` as one item of a wrapping row: an equal share of the width, or a line of its own where two items of
    340 px do not fit (a phone)."""
    return pn.Column(view, styles={"flex": "1 1 340px"}, sizing_mode="stretch_width", margin=0)

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
from bokeh.themes import Theme
from panel.custom import JSComponent

from explorer.lessons import plots
from explorer.session.in_step import keep_in_step, watch_crossings

# Every custom component the lessons use is defined before any page is sent: Bokeh sends the definitions of those
# that exist with each page; one defined later, by a lesson module imported when its tab first opens, reaches only
# the page that imported it (Panel sends it once per process, holoviz/panel#8432), and every other page fails with
# "could not resolve type". tests/ui/test_shell.py checks that opening the lessons defines none.
from explorer.session.later import compiled_at_load
from explorer.session.lesson import Lesson as LessonView
from explorer.session.narrative import Reveal, input_noun
from explorer.session.state import LESSON_NAMES, ExplorerState, SessionView, follows, making_models, one_update
from explorer.session.work import served_document
from explorer.ui.after_paint import AfterPaint
from explorer.ui.link import link_lesson, link_page
from explorer.ui.presentation import PresentationDesign, add_presentation_mode
from explorer.ui.saving import make_savable

TITLE = "Neural network explorer"
PAGE_CSS = Path(__file__).with_name("page.css")  # the narrow-window layout of the template's page
VIEWPORT = "width=device-width, initial-scale=1"  # phones draw the page at their own width, not zoomed out from 980 px
# Bokeh draws tick labels at 11 px unless a figure says otherwise: no text on the page is under 12 px
READABLE_TICKS = {"attrs": {"Axis": {"major_label_text_font_size": "12px"},
                            "CategoricalAxis": {"group_text_font_size": "12px", "subgroup_text_font_size": "12px"},
                            "ColorBar": {"major_label_text_font_size": "12px"}}}


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



class PageIntro(SessionView):
    """How to read the page, in three sentences worded for the loaded model. A text, not a tour: the one tour on
    the page is the open lesson's (LessonFrame), so that two sets of Prev / Next never compete."""

    def __init__(self, **params):
        super().__init__(**params)
        self._text = pn.pane.Markdown("", sizing_mode="stretch_width", css_classes=["page-intro", "explanation"])
        self._follow()

    @follows("state.inference")
    def _follow(self) -> None:
        self._text.object = intro_text(self.state)

    def __panel__(self) -> pn.viewable.Viewable:
        return self._text


BETWEEN_STEPS_MS = 20  # long enough for the messages that arrived during a lesson's first step to be handled first
WHERE_INPUT = "in the sidebar; on a phone, after the lessons"  # page.css puts the main area first on a phone


def intro_text(state: ExplorerState) -> str:
    """What to do first and where to look, true of the loaded model's inputs."""
    if input_noun(state) == "digit":
        pick = f"Pick a handwritten digit under **Input** ({WHERE_INPUT}), upload a photo of one, or draw one"
        change = "Draw a digit badly and watch them change."
    else:
        pick = f"Pick a photo under **Input** ({WHERE_INPUT}), upload your own, or draw something"
        change = "Upload a photo of something else and watch them change."
    return (f"**How to read this page.** {pick}: the bars show what the model believes, as probabilities that add "
            f"up to 1. {change} Below them, the strip holds every layer of the network in order with what it "
            "computed for your input; click one to see its channels. Each lesson further down has a guided tour, "
            "held at the bottom of the window while the lesson is in view: **Next ▶** sets the controls and brings "
            "into view what a step talks about.")


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


class LessonFrame(pn.viewable.Viewer):
    """Tabs for the lessons, synced with `state.lesson`; each lesson is built on first opening. A lesson opened
    from elsewhere on the page (the overview, the lesson strip) is scrolled into view: it sits below the fold.

    The open lesson's tour (its open part's, in a lesson with parts) is the only one on the page, in one place:
    under the lesson, held at the bottom of the window while the lesson is in view. A step scrolls to the figure it
    talks about, often far below the lesson's top; the tour stays in sight, so Next is always one click away and the
    step's words stay beside the figure. At the top of the window it covered the lesson's tab headers.

    A served lesson is built in two steps, each one callback on the server's loop: the lesson itself (its numbers,
    its figures), then, BETWEEN_STEPS_MS later, its place on the page (its Bokeh models, written to the page). The
    loop runs one callback at a time for every student: between the two, the other students' messages are read and
    answered, instead of waiting for the whole build."""

    state = param.ClassSelector(class_=ExplorerState, constant=True)

    def __init__(self, **params):
        super().__init__(**params)
        self._bodies = {name: sideways_box(pn.pane.Markdown("Loading the lesson…")) for name in LESSONS}
        self._built: dict[str, pn.viewable.Viewable] = {}
        self._building: dict[str, pn.viewable.Viewable] = {}  # built, not yet placed on the page
        # kept in step: a layer click opens its lesson once the page has painted the click's answer, and a tab
        # clicked meanwhile crosses that switch on the wire
        self._tabs = keep_in_step(pn.Tabs(*((lesson.title, self._bodies[name]) for name, lesson in LESSONS.items()),
                                          sizing_mode="stretch_width", dynamic=False, css_classes=["lesson-tabs"],
                                          stylesheets=[plots.WRAPPING_TAB_HEADERS]), "active")
        self._reveal = Reveal(height=0, margin=0, sizing_mode="stretch_width")
        self._tour = pn.Column(sizing_mode="stretch_width", margin=0, css_classes=["lesson-tour"],
                               styles={"position": "sticky", "bottom": "0", "z-index": "10", "background": "white",
                                       "border-top": "1px solid #ddd", "box-shadow": "0 -2px 6px rgba(0, 0, 0, 0.08)"})
        self._tour_boxes: dict[int, pn.Column] = {}  # id of a tour -> the box that shows it in self._tour
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
        if name in self._building:
            return  # built, to be placed in a moment: placing it shows it if it is still the open lesson
        if name in self._built:
            with one_update():
                self._show(name, reveal)
            return
        with one_update(), making_models():  # a link's settings may change the session's state
            self._building[name] = build_lesson(name, self.state)
        document = served_document()
        if document is None:
            self._place(name, reveal)
        else:
            document.add_timeout_callback(lambda: self._place(name, reveal), BETWEEN_STEPS_MS)

    def _place(self, name: str, reveal: bool) -> None:
        """Put the lesson built in `_show_lesson` on the page: its Bokeh models, sent to the page with its tour."""
        with one_update(adding_views=True):
            with making_models():
                self._built[name] = lesson = self._building.pop(name)
                self._bodies[name].objects = [lesson]
            if isinstance(lesson, LessonView):
                lesson.param.watch(lambda _: self._show_tour(), "open_tour")
            if name == self.state.lesson:
                self._show(name, reveal)
            elif isinstance(lesson, SessionView):  # the student opened another meanwhile
                lesson.shown = False

    def _show(self, name: str, reveal: bool) -> None:
        self._show_tour()
        self._tabs.active = LESSON_NAMES.index(name)
        for built_name, lesson in self._built.items():  # a lesson in a closed tab does not follow the state
            if isinstance(lesson, SessionView):
                lesson.shown = built_name == name
        if reveal:
            self._reveal.count += 1

    @property
    def open_tour(self):
        """The tour shown: the open lesson's (or its open part's); None before the lesson is built."""
        lesson = self._built.get(self.state.lesson)
        return lesson.open_tour if isinstance(lesson, LessonView) else None

    def step_tour(self, delta: int) -> None:
        """Step the open lesson's tour by `delta` (the first step forward starts it): Prev / Next, or ←/→."""
        if self.open_tour is not None:
            self.open_tour.step(delta)

    def _show_tour(self) -> None:
        """Show the open tour and hide the others. Each tour joins the column the first time it is shown and stays:
        put back into the page on every lesson switch, its widgets would be made anew (new Bokeh models)."""
        tour = self.open_tour
        if tour is not None and id(tour) not in self._tour_boxes:
            self._tour_boxes[id(tour)] = box = pn.Column(tour, sizing_mode="stretch_width", margin=0)
            self._tour.append(box)
        for key, box in self._tour_boxes.items():
            box.visible = tour is not None and key == id(tour)
        self._tour.visible = tour is not None

    def __panel__(self) -> pn.viewable.Viewable:
        # the lessons' placeholders for their lower parts (explorer/session/later.py) are ready when a lesson arrives
        return pn.Column(self._reveal, compiled_at_load(), self._tabs, self._tour, sizing_mode="stretch_width",
                         margin=0)


def sideways_box(*objects: pn.viewable.Viewable) -> pn.Column:
    """A column as wide as the page that scrolls sideways when its content is wider (a narrow window), so that the
    page itself never does. Of fixed width, then stretched by CSS: a stretching column takes its content's width as
    its least width, and would widen the page. Its height follows its content: a fixed width policy, not Bokeh's
    "fixed" sizing mode, which wants a height too (warning W-1005 in the server's log for every page)."""
    return pn.Column(*objects, scroll="x-auto", width=300, width_policy="fixed", margin=0,
                     stylesheets=[":host { width: 100% !important; }"])


def build_lesson(name: str, state: ExplorerState) -> pn.viewable.Viewable:
    """The lesson's Viewer, or the honest placeholder of a lesson that has not landed yet."""
    lesson = LESSONS[name]
    if lesson.target is None:
        return pn.pane.Markdown(f"### {lesson.title}: coming soon\n\nThis lesson is not built yet. It will show: "
                                f"{lesson.coming}", css_classes=["lesson-coming"], sizing_mode="stretch_width")
    module, cls = lesson.target.split(":")
    view = getattr(importlib.import_module(module), cls)(state=state)
    make_savable(view, name)  # every figure, also those its parts make later
    link_lesson(view, state, pn.state.location)  # what the URL asks of the lesson applies now that it is built
    return view


def build_app(state: ExplorerState | None = None) -> pn.template.BootstrapTemplate:
    """One session's page around `state` (a new one by default). Heavier views are imported here."""
    from explorer.ui.inputs import InputPicker
    from explorer.ui.models import ModelPicker
    from explorer.ui.overview import Overview
    from explorer.ui.predictions import Predictions

    state = state or ExplorerState()
    state.document = served_document()  # the page being built is this session's: its slow work answers here
    if state.document is not None:
        watch_crossings(state.document)
    after_paint = state.after_paint = AfterPaint()
    link_page(state, pn.state.location)
    state.ensure()
    frame = LessonFrame(state=state)
    # Bootstrap rather than Fast: the Fast design loads its font from Google's CDN, and the app must work offline.
    # busy_indicator=None: Panel's spinner cost every click a message before its work (docs/performance.md);
    # the model picker has its own, the one slow choice.
    template = pn.template.BootstrapTemplate(
        title=TITLE, sidebar_width=360, header_background="#0072B2", busy_indicator=None, meta_viewport=VIEWPORT,
        design=PresentationDesign,  # Bootstrap's, with presentation mode's rule inside every Markdown pane
        # One root each for sidebar and main: Bokeh recomputes the whole document once per root added.
        sidebar=[pn.Column(pn.pane.Markdown("### Model"), ModelPicker(state=state), pn.pane.Markdown("### Input"),
                           InputPicker(state=state), sizing_mode="stretch_width")],
        # The prediction and how to read the page side by side where there is room, one above the other on a phone
        main=[pn.Column(LessonStripView(state=state),
                        pn.FlexBox(side_by_side(Predictions(state=state)), side_by_side(PageIntro(state=state)),
                                   flex_wrap="wrap", sizing_mode="stretch_width"),
                        sideways_box(Overview(state=state)), frame, after_paint,
                        sizing_mode="stretch_width")])
    template.config.raw_css.append(PAGE_CSS.read_text())
    if pn.state.curdoc is not None:  # every figure of the session's document, also those its lessons make later
        pn.state.curdoc.theme = Theme(json=READABLE_TICKS)
    add_presentation_mode(template, frame.step_tour)
    return template


def side_by_side(view: pn.viewable.Viewer) -> pn.Column:
    """`view` as one item of a wrapping row: an equal share of the width, or a line of its own where two items of
    340 px do not fit (a phone)."""
    return pn.Column(view, margin=0, **plots.share_of_row(340))

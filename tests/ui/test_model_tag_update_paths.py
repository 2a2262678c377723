"""After a model switch, everything on screen describes the new model: every figure, data source and text that shows
a number computed for a model carries `explorer-model=NAME` (explorer.session.tags.model_tag), set together with
its content, and no layer menu lists another model's layers.

Deterministic (no timing): each view is attached to a Bokeh document as a served session's would be
(tests/ui/doc_events.py), and the page's models are read as the browser shows them: not below a hidden model,
only the open tab of a Tabs.
"""

from __future__ import annotations

import functools

import pytest
from bokeh.models import Select

from explorer.core import zoo
from explorer.lessons.attention.view import AttentionLesson
from explorer.lessons.convolution.view import ConvolutionLesson
from explorer.lessons.normalization.view import NormalizationLesson
from explorer.lessons.quantization.view import QuantizationLesson
from explorer.lessons.saliency.view import SaliencyLesson
from explorer.session.state import ExplorerState
from explorer.ui.inputs import InputPicker
from explorer.ui.overview import Overview
from explorer.ui.predictions import Predictions
from explorer.ui.shell import LessonFrame
from tests.ui.doc_events import Page

MODELS = [m for m in ("mnist-cnn", "mnist-vit", "mobilenet_v2") if zoo.is_available(m)]
SWITCHES = [*MODELS[1:], MODELS[0]]  # from the first model through every other one and back


@functools.cache
def layer_names() -> frozenset[str]:
    """Every module name of every model here: what a layer menu lists (trace records are named after modules)."""
    return frozenset(name for m in MODELS for name, _ in zoo.load(m).module.named_modules() if name)


def convolution(tab: str):
    def make(state: ExplorerState) -> ConvolutionLesson:
        lesson = ConvolutionLesson(state=state)
        lesson.tab = tab
        return lesson
    return make


VIEWS = {
    "overview": Overview,
    "predictions": Predictions,
    "input picker": InputPicker,
    "convolution, step through": convolution("Step through"),
    "convolution, playground": convolution("Playground"),
    "convolution, receptive field": convolution("Receptive field"),
    "convolution, filter atlas": convolution("Filter atlas"),
    "normalization": NormalizationLesson,
    "attention": AttentionLesson,
    "quantization": QuantizationLesson,
    "saliency": SaliencyLesson,
}


def check_describes(page: Page, state: ExplorerState, what: str) -> None:
    """Every tag on screen names the state's model, there is one at least, and no layer menu on screen lists a layer
    that the model does not have."""
    # a layer is a traced record, or a module of the model (Grad-CAM's menu lists a ViT's blocks, not traced alone)
    model = state.model
    names = set(state.inference.trace.names) | {n for n, _ in state.inference.model.module.named_modules()}
    tags = page.model_tags()
    assert tags, f"{what}: nothing on screen is tagged {model}, so nothing says which model it shows"
    stale = sorted({f"{where} says {name}" for name, where in tags if name != model})
    assert stale == [], f"{what}, after switching to {model}: {stale}"
    for menu in (m for m in page.on_screen() if isinstance(m, Select)):
        # a menu's values are the layers' names (a dict of options labels each by what it does)
        options = list(menu.options.values()) if isinstance(menu.options, dict) else \
            [o if isinstance(o, str) else o[0] for o in menu.options]
        layers = [o for o in options if o in layer_names()]
        assert layers == [o for o in layers if o in names], f"{what}: the menu {menu.title!r} lists {options}"


@pytest.mark.parametrize("view", VIEWS)
def test_every_result_on_screen_names_the_model_after_each_switch(view):
    state = ExplorerState(model=MODELS[0])
    page = Page(VIEWS[view](state=state))
    check_describes(page, state, view)
    for model in SWITCHES:
        page.act(lambda model=model: setattr(state, "model", model))
        check_describes(page, state, view)


def test_attention_on_a_cnn_shows_only_its_message_tagged_with_the_cnn():
    state = ExplorerState(model="mnist-vit")
    lesson = AttentionLesson(state=state)
    page = Page(lesson)
    state.model = "mnist-cnn"
    assert lesson.errors.visible and not lesson._content.visible
    assert lesson.errors.tags == ["explorer-model=mnist-cnn"] and "mnist-cnn" in lesson.errors.object
    assert {name for name, _ in page.model_tags()} == {"mnist-cnn"}


def test_a_lesson_in_a_closed_tab_catches_up_with_every_switch_it_missed():
    state = ExplorerState(model=MODELS[0])
    frame = LessonFrame(state=state)
    page = Page(frame)
    convolution = frame._built["convolution"]
    convolution.tab = "Receptive field"
    for lesson in ("normalization", "attention", "convolution"):  # open during a round of switches, the others closed
        for model in SWITCHES:
            state.lesson = lesson
            state.model = model
        for shown in ("normalization", "convolution"):
            state.lesson = shown
            check_describes(page, state, f"{shown}, opened again after {lesson} was open")


def test_a_part_in_a_closed_tab_of_the_convolution_lesson_catches_up():
    state = ExplorerState(model=MODELS[0])
    lesson = ConvolutionLesson(state=state)
    page = Page(lesson)
    for part in ("Receptive field", "Filter atlas"):
        lesson.tab = part
        lesson.tab = "Step through"
        for model in SWITCHES:
            state.model = model
        lesson.tab = part
        check_describes(page, state, f"{part}, opened again")

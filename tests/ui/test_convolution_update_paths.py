"""Every control of the convolution lesson patches data and properties of existing Bokeh models; none makes new ones.

Deterministic (no timing): the lesson is attached to a Bokeh document as a served session's would be
(tests/ui/doc_events.py). Also checks what the page holds after a change: the arithmetic of the first
window matches F.conv2d, and a playground error is shown as text.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch.nn.functional as F

from explorer.core import zoo
from explorer.core.gallery import mnist_gallery
from explorer.lessons.convolution.view import ConvolutionLesson
from explorer.session.state import ExplorerState
from tests.ui.doc_events import Page


@pytest.fixture
def session():
    state = ExplorerState()
    lesson = ConvolutionLesson(state=state, parts=())  # this file's parts: step through and playground
    lesson.tab = "Playground"  # its figures are made when the tab first opens
    return state, lesson, Page(lesson)


def test_the_playground_is_made_when_its_tab_first_opens():
    lesson = ConvolutionLesson(state=ExplorerState(), parts=())
    page = Page(lesson)
    assert not lesson.playground_built
    assert not [m for m in page.doc.models if getattr(m, "name", None) == "convolution-playground-output"]
    lesson.param.update(preset="Gaussian", stride=2)  # settings before it opens: drawn when it does
    page.act(lambda: setattr(lesson, "tab", "Playground"))
    assert lesson.playground_built and "Output: 14×14" in lesson._play_output_fig.title.text
    assert page.model_named("convolution-playground-output").data["image"]


def shown(page: Page, source_name: str) -> dict[str, bytes]:
    """A named source's columns, every value included (a repr shortens long arrays)."""
    data = page.model_named(source_name).data
    return {k: b"".join(np.asarray(item).tobytes() for item in v) if isinstance(v, list) else np.asarray(v).tobytes()
            for k, v in data.items()}


def interactions(state: ExplorerState, lesson: ConvolutionLesson, round_: int):
    """(name, action, the named source or model it must change)"""
    digits = mnist_gallery()
    yield "layer", lambda: setattr(lesson.layer_menu, "value", ("features.4", "features.8")[round_]), \
        "convolution-positions"
    yield "channel", lambda: setattr(lesson.channel_input, "value", 3 + round_), "convolution-positions"
    yield "shown input", lambda: setattr(lesson, "shown_input", lesson.param.shown_input.objects[2 + round_]), \
        "convolution-input"
    yield "state layer", lambda: setattr(state, "layer", ("features.0", "features.4")[round_]), "convolution-positions"
    yield "input", lambda: state.set_input(digits[4 + round_].source, digits[4 + round_].description), \
        "convolution-positions"
    # an MNIST digit's border is black, so that every padding mode pads it alike: a photo from here on
    yield "picture", lambda: setattr(lesson, "picture", ("camera", "coins")[round_]), "convolution-playground-input"
    yield "preset", lambda: setattr(lesson, "preset", ("Gaussian", "box blur")[round_]), "convolution-playground-kernel"
    yield "size", lambda: setattr(lesson, "size", (5, 7)[round_]), "convolution-playground-kernel"
    kernel = "convolution-playground-kernel"
    yield "angle", lambda: lesson.param.update(preset="Gabor", angle=(45.0, 90.0)[round_]), kernel
    yield "frequency", lambda: lesson.param.update(preset="Gabor", frequency=(0.1, 0.3)[round_]), kernel
    yield "kernel text", lambda: setattr(lesson, "kernel_text", ("1 0 -1\n2 0 -2", "0 1\n1 0")[round_]), \
        "convolution-playground-kernel"
    yield "stride", lambda: setattr(lesson, "stride", (2, 3)[round_]), "convolution-playground-output"
    yield "padding", lambda: setattr(lesson, "padding", (2, 1)[round_]), "convolution-playground-output"
    yield "padding mode", lambda: setattr(lesson, "padding_mode", ("reflect", "circular")[round_]), \
        "convolution-playground-output"
    yield "dilation", lambda: setattr(lesson, "dilation", (2, 1)[round_]), "convolution-playground-output"
    yield "model", lambda: setattr(state, "model", "mnist-vit"), "convolution-positions"
    yield "model back", lambda: setattr(state, "model", "mnist-cnn"), "convolution-positions"


def test_lesson_controls_only_patch_existing_models(session):
    state, lesson, page = session
    for round_ in (0, 1):
        for name, act, part in interactions(state, lesson, round_):
            page.check(name, act, lambda part=part: shown(page, part), round_)


def test_tabs_and_narrative_only_patch_existing_models(session):
    _, lesson, page = session
    for round_ in (0, 1):
        for index in range(len(lesson.tour._steps)):
            created = page.act(lambda i=index: setattr(lesson.tour, "index", i))
            if round_ == 1:
                assert created == [], f"narrative step {index}: created {created}"
        assert page.act(lambda: setattr(lesson, "tab", "Playground")) == [] or round_ == 0


def test_first_window_shown_matches_conv2d(session):
    state, lesson, page = session
    state.param.update(layer="features.4", channel=7)
    assert (lesson.layer, lesson.channel) == ("features.4", 7)
    record = state.inference.trace["features.4"]
    conv = state.inference.model.module.get_submodule("features.4")
    expected = F.conv2d(record.input, conv.weight, conv.bias, conv.stride, conv.padding)[0, 7, 0, 0]
    text = page.model_named("convolution-arithmetic").text
    shown = float(re.search(r'class="conv-value">([^<]+)<', text).group(1).replace("−", "-"))
    assert shown == pytest.approx(float(expected), rel=5e-3, abs=1e-3)  # 3 significant digits
    assert "Window position 0</b> (of 0–195)" in text
    assert "BatchNorm2d (features.5)" in text and "ReLU (features.6)" in text


def test_playground_shows_impossible_settings_as_text(session):
    _, lesson, _ = session
    lesson.param.update(padding=0, kernel_text="\n".join(["1 " * 30] * 30))
    assert "the kernel spans 30 pixels" in lesson._play_error.object and lesson._play_error.visible
    lesson.kernel_text = "1 0\n0 1"
    assert not lesson._play_error.visible and "⌊(28 + 2·0 − 1·(2 − 1) − 1) / 1⌋ + 1 = 27" in lesson._play_formula.object


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
def test_mobilenet_depthwise_layer_shows_its_one_input_channel(session):
    state, lesson, page = session
    state.model = "mobilenet_v2"
    figures = {m.id for m in page.doc.models if type(m).__name__ == "figure"}
    created = page.act(lambda: state.param.update(layer="features.2.conv.1.0", channel=5))
    assert created == []
    assert lesson.param.shown_input.objects == [5]
    assert "only input channel 5 (1 of 96)" in lesson._layer_text.object
    assert figures == {m.id for m in page.doc.models if type(m).__name__ == "figure"}


def test_optional_tabs_open_once_and_then_only_patch():
    """The receptive-field and filter-atlas tabs (built beside this lesson) are made when first opened."""
    state = ExplorerState()
    lesson = ConvolutionLesson(state=state)
    extra = [title for title in lesson.param.tab.objects if title not in ("Step through", "Playground")]
    assert extra == ["Receptive field", "Filter atlas"]
    page = Page(lesson)
    for title in extra:
        page.act(lambda t=title: setattr(lesson, "tab", t))  # builds the tab's Viewer: new models, once
        assert lesson._tabs.active == lesson.param.tab.objects.index(title)
    for round_ in (0, 1):
        for title in ("Step through", *extra):
            created = page.act(lambda t=title: setattr(lesson, "tab", t))
            layer = ("features.4", "features.8")[round_]
            created += page.act(lambda layer=layer: setattr(lesson.layer_menu, "value", layer))
            if round_ == 1:
                assert created == [], f"{title}: created {created}"


def test_lesson_follows_the_state_and_leaves_other_layers_selected():
    state = ExplorerState()
    lesson = ConvolutionLesson(state=state, parts=())
    state.param.update(layer="features.4", channel=20)
    assert (lesson.layer, lesson.channel) == ("features.4", 20)
    state.param.update(layer="features.9", channel=40)  # a BatchNorm of 64 channels, picked in the overview
    assert (state.layer, state.channel) == ("features.9", 40)  # not taken back by the lesson
    assert lesson.layer == "features.4" and lesson.channel == 20  # keeps its convolution; 40 is past its 32
    assert (lesson.layer_menu.value, lesson.channel_input.value) == ("features.4", 20)
    lesson.layer_menu.value = "features.8"  # the student picks here: the state follows, and the lesson the state
    lesson.channel_input.value = 5
    assert (state.layer, state.channel) == ("features.8", 5)
    assert (lesson.layer, lesson.channel) == ("features.8", 5)


def test_every_number_the_page_writes_is_formatted_by_python(session):
    """The browser only picks a position's strings: each is plots.format_value of the value beside it. Each kind of
    string comes as one text of lines (a list of strings would cost the server one serializer step per string)."""
    from explorer.lessons.plots import format_value

    state, _, page = session
    state.param.update(layer="features.0", channel=3)  # 3×3 cells of one channel: the numbers are written
    strings = page.model_named("convolution-strings").data
    assert all(len(column) == 1 and isinstance(column[0], str) for column in strings.values())
    lines = {name: column[0].split("\n") for name, column in strings.items()}
    positions = page.model_named("convolution-positions").data
    assert lines["value"] == [format_value(float(v)) for v in positions["value"]]
    assert lines["sum"] == [format_value(float(v)) for v in positions["sum"]]
    following = page.model_named("convolution-following").data
    assert len(following["value"]) > 0
    assert lines["following"] == [format_value(float(v)) for v in following["value"]]
    patches, labels = page.model_named("convolution-patches").data, page.model_named("convolution-patch-labels").data
    for column in ("patch", "product"):
        assert len(labels[column]) == len(patches[column]) > 0
        assert [lines["labels"][i] for i in labels[column]] == [format_value(float(v)) for v in patches[column]]

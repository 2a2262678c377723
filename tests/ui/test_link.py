"""The URL both ways: the state's input named for a link, and the one mechanism that syncs the page and each lesson
(with a real panel Location, as a served page has)."""

from __future__ import annotations

import importlib

import param
import pytest
from panel.io.location import Location

from explorer.core import images, input_link
from explorer.core.gallery import mnist_gallery
from explorer.lessons.pruning.view import PruningLesson
from explorer.session.lesson import Lesson
from explorer.session.narrative import Step
from explorer.session.state import ExplorerState
from explorer.ui import link, shell
from explorer.ui.inputs import InputPicker

A_ONE = images.Strokes([[(140, 40 + 10 * i) for i in range(21)]], 280, 280)


@pytest.fixture
def state() -> ExplorerState:
    s = ExplorerState()
    s.ensure()
    return s


def lesson_classes() -> dict[str, type[Lesson]]:
    classes = {}
    for name, lesson in shell.LESSONS.items():
        module, cls = lesson.target.split(":")
        classes[name] = getattr(importlib.import_module(module), cls)
    return classes


def test_the_input_is_named_as_it_changes(state):
    item = mnist_gallery()[7]
    state.set_input(item.source, item.description)
    assert state.input == f"gallery:{item.key}"
    state.set_input(A_ONE, input_link.DRAWING_DESCRIPTION)
    assert state.input == "drawing:" + input_link.drawing_code(A_ONE)
    state.set_input(b"not even an image", "upload: x.png")  # refused: the drawing stays, and its name
    assert state.input.startswith("drawing:")
    assert state.set_input(mnist_gallery()[0].source.copy(), "upload: zero.png")
    assert state.input == ""  # an upload: a link cannot hold it


def test_a_named_input_is_shown_with_its_prediction(state):
    state.input = "drawing:" + input_link.drawing_code(A_ONE)
    assert state.inference.description == "your drawing" and state.error == ""
    assert state.inference.source.strokes == A_ONE.strokes
    assert state.inference.top(1)[0][0] == "1"


@pytest.mark.parametrize("name, expected", [
    ("gallery:chelsea", "The link's input cannot be shown: no gallery image named 'chelsea'"),
    ("drawing:AAAA", "The link's input cannot be shown: the drawing in the link is damaged"),
])
def test_a_bad_input_name_keeps_the_input_and_says_why(state, name, expected):
    shown, named = state.inference, state.input
    state.input = name
    assert state.inference is shown and state.input == named
    assert state.error.startswith(expected)


def test_a_bad_input_name_on_a_new_page_shows_the_default_and_keeps_the_message():
    fresh = ExplorerState()  # as a served page: the link is applied before the first input
    fresh.input = "gallery:mnist-999999"
    assert fresh.inference is not None and fresh.input == f"gallery:{mnist_gallery()[0].key}"
    assert "no gallery image named 'mnist-999999'" in fresh.error


@pytest.mark.parametrize("order", [("model", "input"), ("input", "model")])
def test_model_and_input_from_one_link_apply_in_either_order(state, order):
    item = mnist_gallery()[12]
    values = {"model": "mnist-vit", "input": f"gallery:{item.key}"}
    state.param.update(**{name: values[name] for name in order})
    assert state.inference.model.name == "mnist-vit" and state.inference.source is item.source
    assert state.input == values["input"] and state.error == ""


def test_a_linked_drawing_is_put_back_on_the_canvas_in_the_draw_tab(state):
    picker = InputPicker(state=state)
    state.input = "drawing:" + input_link.drawing_code(A_ONE)
    assert picker.mode.value == "Draw"
    assert picker.canvas.strokes == [[list(p) for p in A_ONE.strokes[0]]]
    assert picker.input_label.object == "**Input:** your drawing"


def test_the_page_applies_the_url_then_writes_every_change_to_it():
    item = mnist_gallery()[20]
    location = Location(search=f"?model=mnist-vit&lesson=attention&channel=2&input=gallery:{item.key}")
    page = ExplorerState()
    link.link_page(page, location)
    assert (page.model, page.lesson, page.channel) == ("mnist-vit", "attention", 2)
    assert page.inference.source is item.source and page.error == ""
    page.channel = 3
    assert location.query_params["channel"] == 3
    page.set_input(A_ONE, "your drawing")
    assert location.query_params["input"] == "drawing:" + input_link.drawing_code(A_ONE)
    assert location.query_params["layer"] == page.layer


def test_a_link_with_an_unknown_model_applies_the_rest_and_says_so():
    location = Location(search="?model=resnet-9000&lesson=pruning&channel=two")
    page = ExplorerState()
    link.link_page(page, location)
    assert page.model == "mnist-cnn" and page.lesson == "pruning" and page.channel == 0
    assert page.error == ("The link asked for model=resnet-9000, channel=two, which is not available here; "
                          "showing model=mnist-cnn, channel=0 instead.")
    assert page.inference is not None


def test_a_lesson_built_later_takes_its_settings_from_the_url_then_writes_them(state):
    location = Location(search="?lesson=pruning&sparsity=70&prune=random&scope=global")
    link.link_page(state, location)
    lesson = PruningLesson(state=state)
    link.link_lesson(lesson, state, location)
    assert (lesson.sparsity, lesson.method, lesson.scope) == (70, "random", "global")
    lesson.sparsity = 85
    assert location.query_params["sparsity"] == 85
    assert location.query_params["lesson"] == "pruning"


def test_a_bad_lesson_setting_is_skipped_and_named(state):
    location = Location(search="?sparsity=500&scope=global")
    lesson = PruningLesson(state=state)
    link.link_lesson(lesson, state, location)
    assert lesson.scope == "global" and lesson.sparsity == 50
    assert state.error == ("The link asked for sparsity=500, which is not available here; "
                           "showing sparsity=50 instead.")


class ClassChoice(Lesson):
    """A lesson with one setting that may be None, as the saliency lesson's class (None: the predicted one)."""

    url_settings = {"target": "target"}
    target = param.Integer(default=None, allow_None=True, bounds=(0, None))

    def steps(self) -> tuple[Step, ...]:
        return (Step("The class", "Which class is explained."),)


def test_a_setting_the_url_writes_as_null_comes_back_as_none(state):
    view = ClassChoice(state=state)
    location = Location(search="?target=3")
    link.link_lesson(view, state, location)
    assert view.target == 3
    view.target = None
    assert location.query_params["target"] == "null"
    again = ClassChoice(state=state)
    link.link_lesson(again, state, Location(search=location.search))
    assert again.target is None and state.error == ""


def test_url_names_are_unique_across_the_page_and_every_lesson_and_name_real_settings():
    seen = {url_name: "page" for url_name in link.PAGE_SETTINGS.values()}
    for name, cls in lesson_classes().items():
        assert cls.url_settings, f"{name} keeps nothing in a link"
        for url_name, setting in cls.url_settings.items():
            assert setting in cls.param, f"{name}.url_settings names {setting!r}, which is no parameter of it"
            assert url_name not in seen, f"{url_name!r} is used by {seen[url_name]} and {name}"
            seen[url_name] = name

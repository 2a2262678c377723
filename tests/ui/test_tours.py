"""One tour at a time, headless: the frame shows the open lesson's tour (the open part's) and no other; each step
scrolls to a section its lesson really has; the words follow the model; what a step says of the curves is what the
curves show."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import panel as pn
import pytest
import torch

from explorer.core import zoo
from explorer.core.gallery import mnist_gallery
from explorer.lessons import plots
from explorer.lessons.normalization import math as nm
from explorer.lessons.pruning import measured as pruning_measured
from explorer.lessons.pruning import view as pruning_view
from explorer.lessons.pruning.measured import Point
from explorer.lessons.quantization import measured as quantization_measured
from explorer.session.narrative import Narrative, Step, input_noun
from explorer.session.state import LESSON_NAMES, ExplorerState
from explorer.ui import shell

MNIST_MODELS = ("mnist-cnn", "mnist-vit")
PHOTO_MODEL = "mobilenet_v2"
needs_photo_model = pytest.mark.skipif(not zoo.is_available(PHOTO_MODEL), reason="MobileNetV2 weights not installed")


@pytest.fixture
def state() -> ExplorerState:
    s = ExplorerState()
    s.ensure()
    return s


def with_class(root: pn.viewable.Viewable, css_class: str) -> list:
    """Every object under `root` (through lessons and their parts) that carries `css_class`."""
    return root.select(lambda o: css_class in (getattr(o, "css_classes", None) or []))


def tours_on_page(frame: shell.LessonFrame) -> list:
    """The tours a student sees: the shown ones of the frame's tour column, and any placed inside a lesson."""
    column = frame._tour
    shown = [box for box in column.objects if box.visible] if column.visible else []
    return [tour for box in shown for tour in with_class(box, "narrative")] + with_class(frame._tabs, "narrative")


def shown_tours(frame: shell.LessonFrame) -> list:
    """The tours the frame's column shows (each stays in it once shown, hidden while another is open)."""
    column = frame._tour
    return [box.objects[0] for box in column.objects if box.visible] if column.visible else []


def test_the_frame_shows_only_the_open_lessons_tour(state):
    state.model = "mnist-vit"  # a model every lesson, attention included, has a tour for
    frame = shell.LessonFrame(state=state)
    for name in LESSON_NAMES:
        state.lesson = name
        lesson = frame._built[name]
        assert frame.open_tour is lesson.open_tour is lesson.tour
        assert shown_tours(frame) == [pn.panel(lesson.tour)]
        assert len(tours_on_page(frame)) == 1, f"{name}: more than one tour on the page"
    # the search reaches into every lesson built so far: each has its error pane there
    assert len(with_class(pn.panel(frame), "lesson-error")) == len(LESSON_NAMES)


def test_a_lesson_without_a_tour_for_this_model_shows_none(state):
    frame = shell.LessonFrame(state=state)  # mnist-cnn: no attention, so no attention tour
    state.lesson = "attention"
    assert frame.open_tour is None and shown_tours(frame) == [] and tours_on_page(frame) == []
    state.model = "mnist-vit"
    assert frame.open_tour is frame._built["attention"].tour and len(tours_on_page(frame)) == 1


def test_a_sub_tab_shows_its_own_tour_in_place_of_the_lessons(state):
    frame = shell.LessonFrame(state=state)
    convolution = frame._built["convolution"]
    for tab in ("Receptive field", "Filter atlas"):
        convolution.tab = tab
        part = convolution._built[tab]
        assert shown_tours(frame) == [pn.panel(part.tour)] and len(tours_on_page(frame)) == 1
    convolution.tab = "Playground"
    assert shown_tours(frame) == [pn.panel(convolution.tour)] and len(tours_on_page(frame)) == 1


def test_the_lessons_tour_stays_shown_through_all_its_steps(state):
    frame = shell.LessonFrame(state=state)
    convolution = frame._built["convolution"]
    for _ in convolution.tour.steps:
        frame.step_tour(+1)
        assert shown_tours(frame) == [pn.panel(convolution.tour)], "a step opened a tab with a tour of its own"
    assert convolution.tour.index == len(convolution.tour.steps) - 1
    frame.step_tour(+1)  # past the end: stays on the last step
    assert convolution.tour.index == len(convolution.tour.steps) - 1
    frame.step_tour(-2)
    assert convolution.tour.index == len(convolution.tour.steps) - 3


@pytest.mark.parametrize("lesson_name", LESSON_NAMES)
def test_every_step_names_a_section_its_lesson_shows(state, lesson_name):
    state.model = "mnist-vit" if lesson_name == "attention" else "mnist-cnn"
    frame = shell.LessonFrame(state=state)
    state.lesson = lesson_name
    lesson = frame._built[lesson_name]
    tours = [lesson.tour] + [part.tour for part in _parts(lesson)]
    for tour in tours:
        for index, step in enumerate(tour.steps):
            assert step.section, f"{step.title}: a step brings its section into view"
            tour.index = index
            tour._show()
            assert len(with_class(pn.panel(lesson), step.section)) >= 1, f"{step.title}: no .{step.section}"
            assert tour._reveal.section == step.section


def _parts(lesson) -> list:
    """The convolution lesson's optional parts, each opened once (they are built on first opening)."""
    if not hasattr(lesson, "_pending"):
        return []
    for title in list(lesson._pending):
        lesson.tab = title
    parts = list(lesson._built.values())
    lesson.tab = "Step through"
    return parts


def test_each_step_asks_to_scroll_once_on_arrival_and_none_before_the_tour_starts(state):
    settings: dict[str, object] = {}
    target = type("Target", (), {"param": type("P", (), {"update": staticmethod(settings.update)})()})()
    tour = Narrative((Step("one", "first", {"a": 1}, section="part-one"), Step("two", "second", {"a": 2}),
                      Step("three", "third", {"a": 3}, section="part-three")), target)
    assert tour._reveal.count == 0 and settings == {}
    tour.step(+1)
    assert (settings, tour._reveal.section, tour._reveal.count) == ({"a": 1}, "part-one", 1)
    tour.step(+1)  # no section: no scroll
    assert (settings, tour._reveal.count) == ({"a": 2}, 1)
    tour.step(+1)
    assert (settings, tour._reveal.section, tour._reveal.count) == ({"a": 3}, "part-three", 2)


def test_a_steps_text_is_worded_for_the_target_once_its_settings_are_applied():
    seen: dict[str, object] = {}
    target = type("Target", (), {"param": type("P", (), {"update": staticmethod(seen.update)})()})()
    tour = Narrative((Step("batch", lambda t: f"batch is {seen['batch']}", {"batch": 256}),), target)
    tour.step(+1)
    assert "batch is 256" in tour._text.object


@needs_photo_model
def test_the_page_intro_says_digit_only_on_a_digit_model(state):
    intro = shell.PageIntro(state=state)
    assert input_noun(state) == "digit" and "Draw a digit badly" in intro._text.object
    state.model = PHOTO_MODEL
    assert input_noun(state) == "picture"
    assert "digit" not in intro._text.object and "Pick a photo" in intro._text.object


@needs_photo_model
@pytest.mark.parametrize("lesson_name", [n for n in LESSON_NAMES if n != "attention"])
def test_no_step_speaks_of_digits_on_a_photo_model_unless_it_says_which_models(state, lesson_name):
    lesson = shell.build_lesson(lesson_name, state)
    tours = [lesson.tour] + [part.tour for part in _parts(lesson)]
    lesson.shown = False  # the words are the subject, not the figures: the lesson need not redraw for MobileNetV2
    state.model = PHOTO_MODEL
    for tour in tours:
        for step in tour.steps:
            words = tour.text(step)
            assert "digit" not in words.replace("on the digit models", ""), f"{step.title}: {words}"


def test_the_attention_steps_name_the_input_as_the_model_sees_it(state):
    state.model = "mnist-vit"
    lesson = shell.build_lesson("attention", state)
    step = next(s for s in lesson.tour.steps if s.title == "Where the class token looks")
    assert "over your digit" in lesson.tour.text(step)
    # a ViT for photos (none ships): the same step, with a card whose inputs are photos
    photo_card = dataclasses.replace(state.inference.model.card, preprocess="imagenet")
    photo_state = SimpleNamespace(ensure=lambda: SimpleNamespace(model=SimpleNamespace(card=photo_card)))
    words = step.text(SimpleNamespace(lesson=SimpleNamespace(state=photo_state)))
    assert "over your picture" in words and "digit" not in words


def test_the_large_batch_step_reads_the_curve_on_screen(state):
    lesson = shell.build_lesson("normalization", state)
    lesson._model_changed()
    tour = lesson.tour
    index = next(i for i, s in enumerate(tour.steps) if s.title == "Large batches and eval mode")
    lesson.layer = next(n for n in lesson.layers if nm.is_batch_norm(state.inference.model.module.get_submodule(n)))
    tour.index = index
    assert lesson.batch == nm.BATCH_SIZES[-1]
    curve = lesson._batch_part.source.data  # what the figure draws
    drawn = dict(zip(curve["size"], curve["batch"], strict=True))
    words = tour._text.object
    assert plots.format_value(drawn[nm.BATCH_SIZES[-1]]) in words and plots.format_value(drawn[1]) in words
    lowest = min(drawn, key=drawn.get)
    if lowest == nm.BATCH_SIZES[-1]:
        assert "The curve is lowest here" in words
    else:
        assert f"lowest at batch {lowest} ({plots.format_value(drawn[lowest])})" in words


@pytest.mark.parametrize("name", MNIST_MODELS)
def test_the_pruning_steps_say_what_the_stored_curves_show(state, name):
    state.model = name
    lesson = shell.build_lesson("pruning", state)
    model = zoo.load(name)
    kept = {p: pruning_measured.kept(model, p) for p in (Point("magnitude", 0.0), Point("magnitude", 0.4),
                                                         Point("random", 0.4), Point("filters-l1", 0.4))}
    # shipped models ship their curves: a missing point is a defect, not a skip
    assert None not in kept.values(), f"the stored curves of {name} are incomplete (run `explorer measure {name}`)"
    dense, magnitude = kept[Point("magnitude", 0.0)], kept[Point("magnitude", 0.4)]
    random, filters = kept[Point("random", 0.4)], kept[Point("filters-l1", 0.4)]
    small = pruning_view.small_weights_text(lesson)
    assert f"{magnitude:.1%}, against {dense:.1%} for the dense model" in small
    assert dense - magnitude < pruning_view.CLOSE and "many more weights than they need" in small
    assert magnitude - random > pruning_view.BEHIND and "which weights go matters" in pruning_view.random_text(lesson)
    assert filters < magnitude and "it falls sooner" in pruning_view.filters_text(lesson)


def test_a_pruning_step_claims_no_trend_before_the_curves_are_measured(state, monkeypatch):
    lesson = shell.build_lesson("pruning", state)
    monkeypatch.setattr(pruning_measured, "kept", lambda model, point: None)
    for text in (pruning_view.small_weights_text, pruning_view.random_text, pruning_view.filters_text):
        words = text(lesson)
        assert "%," not in words and "matters" not in words and "falls sooner" not in words and "%:" not in words


@pytest.mark.parametrize("name", MNIST_MODELS)
def test_binary_and_ternary_weights_do_not_survive_as_the_tour_says(name):
    model = zoo.load(name)
    dense = quantization_measured.known(model, None)
    for form in ("binary", "ternary"):
        top1 = quantization_measured.known(model, dataclasses.replace(quantization_measured.DEFAULT, format=form))
        assert top1 is not None and top1 < dense / 2  # "does not survive": below half of float32's accuracy


@pytest.mark.parametrize("name", MNIST_MODELS)
def test_the_first_receptive_field_step_gives_the_first_kernels_size(state, name):
    state.model = name
    frame = shell.LessonFrame(state=state)
    frame._built["convolution"].tab = "Receptive field"
    panel = frame._built["convolution"]._built["Receptive field"]
    frame.step_tour(+1)
    first = state.inference.model.module.get_submodule(panel.layer)  # the layer the step opened
    assert isinstance(first, torch.nn.Conv2d) and panel.layer == state.inference.trace.records[0].name
    height, width = first.kernel_size  # a first layer's unit sees exactly its kernel's window
    assert f"sees only its kernel's window: {height}×{width} pixels" in panel.tour._text.object


def test_a_step_rewords_for_a_new_input_and_the_tour_starts_over_for_a_new_model(state):
    target = type("Target", (), {"param": type("P", (), {"update": staticmethod(lambda **_: None)})()})()
    tour = Narrative((Step("input", lambda _: f"about {state.inference.description}"),), target, state=state)
    tour.step(+1)
    assert f"about {state.inference.description}" in tour._text.object
    item = mnist_gallery()[5]
    assert state.set_input(item.source, item.description)
    assert tour.index == 0 and f"about {item.description}" in tour._text.object
    state.model = "mnist-vit"  # the step's settings were chosen for mnist-cnn
    assert tour.index == -1 and "Next ▶** starts the tour" in tour._text.object

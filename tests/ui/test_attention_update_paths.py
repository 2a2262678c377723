"""Every control of the attention lesson patches data and properties of existing Bokeh models; none makes new ones.

Deterministic (no timing): the lesson is attached to a Bokeh document as a served session's would be, and the
document's own change events are recorded (tests/ui/doc_events.py).
"""

from __future__ import annotations

import pytest
from bokeh.events import Tap

from explorer.core import zoo
from explorer.core.architectures import MnistViT
from explorer.core.gallery import mnist_gallery
from explorer.lessons.attention.view import AttentionLesson
from explorer.session.state import ExplorerState
from tests.lessons.test_attention_math import random_vit, randomized, with_timm_attention
from tests.ui.doc_events import Page

needs_vit = pytest.mark.skipif(not zoo.is_available("mnist-vit"), reason="mnist-vit is not trained here")


@pytest.fixture
def session():
    lesson = AttentionLesson(state=ExplorerState(model="mnist-vit"))
    return lesson, Page(lesson)


def tap(figure, x: float, y: float) -> None:
    """What a click on the canvas sends: a Tap event in data coordinates."""
    figure._trigger_event(Tap(figure, x=x, y=y))


def interactions(lesson: AttentionLesson, round_: int):
    """(name, action, the source it must change)"""
    digit, state = mnist_gallery()[3 + round_], lesson.state
    patch = lesson._analysis.grid.patch
    yield "input", lambda: state.set_input(digit.source, digit.description), "attention-picture"
    menu, slider = lesson._widgets["layer"], lesson._widgets["head"]
    yield "layer", lambda: setattr(menu, "value", ("blocks.2.attn", "blocks.1.attn")[round_]), "attention-step-x"
    yield "head", lambda: setattr(slider, "value", 2 + round_), "attention-map"
    overview = ("blocks.3.mlp.0", "blocks.0.attn")[round_]  # a layer the overview picks: its block's attention
    yield "state layer", lambda: setattr(state, "layer", overview), "attention-step-v"
    yield "state channel", lambda: setattr(state, "channel", round_), "attention-step-q"
    yield "patch click", lambda: tap(lesson._patches.picture_fig, (1.5 + round_) * patch, 2.5 * patch), "attention-grid"
    yield "grid click", lambda: tap(lesson._heads.grid_fig, *grid_point(lesson, 3, 1, 0, 3 - round_)), "attention-map"
    yield "query", lambda: setattr(lesson, "query", (0, 5)[round_]), "attention-rollout"
    yield "temperature", lambda: setattr(lesson, "temperature", (0.4, 2.5)[round_]), "attention-step-probs"
    yield "head fusion", lambda: setattr(lesson, "head_fusion", ("max", "min")[round_]), "attention-rollout"
    yield "discard ratio", lambda: setattr(lesson, "discard_ratio", (0.5, 0.8)[round_]), "attention-rollout"


def grid_point(lesson: AttentionLesson, layer: int, head: int, row: int, col: int) -> tuple[float, float]:
    """Data coordinates of the middle of patch (row, col) in the grid picture of (layer, head)."""
    _, _, x, y, scale = lesson._heads.cell_geometry(layer, head)
    side = lesson._analysis.grid.patch * scale
    return x + (col + 0.5) * side, y + (row + 0.5) * side


@needs_vit
def test_every_control_only_patches_existing_models(session):
    lesson, page = session
    for round_ in (0, 1):
        for name, act, part in interactions(lesson, round_):
            page.check(name, act, lambda part=part: page.data(part), round_)


@needs_vit
def test_clicks_select_what_was_clicked(session):
    lesson, _ = session
    grid = lesson._analysis.grid
    tap(lesson._patches.picture_fig, 2.5 * grid.patch, 1.5 * grid.patch)
    assert lesson.query == grid.token(1, 2)
    tap(lesson._heads.grid_fig, *grid_point(lesson, 2, 3, 3, 0))
    assert (lesson.layer, lesson.head, lesson.query) == ("blocks.2.attn", 3, grid.token(3, 0))
    assert (lesson.state.layer, lesson.state.channel) == ("blocks.2.attn", 3)  # the overview follows
    assert (lesson._widgets["layer"].value, lesson._widgets["head"].value) == ("blocks.2.attn", 3)


@needs_vit
def test_the_layer_menu_and_head_slider_show_the_state_and_set_it(session):
    lesson, _ = session
    state, menu, slider = lesson.state, lesson._widgets["layer"], lesson._widgets["head"]
    assert menu.options == ["blocks.0.attn", "blocks.1.attn", "blocks.2.attn", "blocks.3.attn"] and slider.end == 3
    state.param.update(layer="blocks.1.mlp.0", channel=2)  # the overview picks a layer of block 1
    assert (lesson.layer, lesson.head, menu.value, slider.value) == ("blocks.1.attn", 2, "blocks.1.attn", 2)
    assert state.layer == "blocks.1.mlp.0"  # showing the state does not change it
    assert lesson._stepper.step.head == 2 and "Head 2 of blocks.1.attn" in lesson._stepper.text.object
    state.channel = 40  # a channel of a wider layer: the last head is shown, the state is left alone
    assert (lesson.head, slider.value, state.channel) == (3, 3, 40)
    menu.value = "blocks.3.attn"
    slider.value = 1
    assert (state.layer, state.channel) == ("blocks.3.attn", 1)
    assert lesson._stepper.step.head == 1 and "Head 1 of blocks.3.attn" in lesson._stepper.text.object


@needs_vit
def test_the_tour_sets_the_states_layer_and_head_and_the_lessons_settings(session):
    lesson, _ = session
    lesson.select(layer="blocks.2.attn", head=3, temperature=2.0)
    lesson.tour.index = 1  # the class token in the last layer
    assert (lesson.state.layer, lesson.state.channel, lesson.query) == ("blocks.3.attn", 0, 0)
    lesson.tour.index = 2  # the inkiest patch
    assert lesson.query == lesson.inkiest_patch() != 0 and lesson.state.layer == "blocks.0.attn"
    lesson.tour.index = 4
    assert lesson.temperature == 0.3 and lesson._stepper.step.temperature == 0.3


@needs_vit
def test_a_model_without_readable_attention_says_so_and_keeps_the_figures(session):
    lesson, page = session
    figures = {m.id for m in page.doc.models if type(m).__name__ == "figure"}
    lesson.state.model = "mnist-cnn"
    assert not lesson._content.visible and lesson.errors.visible
    assert "has no attention layers" in lesson.errors.object and "pick mnist-vit" in lesson.errors.object
    lesson.state.model = "mnist-vit"
    assert lesson._content.visible and not lesson.errors.visible
    assert figures == {m.id for m in page.doc.models if type(m).__name__ == "figure"}


@needs_vit
def test_the_lesson_stands_alone_in_a_notebook():
    lesson = AttentionLesson(model="mnist-vit")
    assert lesson.state.model == "mnist-vit" and lesson.layer == "blocks.0.attn"
    assert len(lesson._heads.grid_source.data["image"]) == 4 * 5  # 4 layers × (4 heads + their mean)


@pytest.fixture
def own_model():
    """Register a model of one's own for one test (bring your own model), and forget it afterwards."""
    names = []

    def register(module, name: str) -> str:
        zoo.from_module(module, (1, 28, 28), [str(i) for i in range(10)], (0.1307,), (0.3081,), name=name, family="vit")
        names.append(name)
        return name

    yield register
    for name in names:
        zoo.unregister(name)


def test_a_vit_of_ones_own_with_another_grid_and_head_count(own_model, rng):
    name = own_model(randomized(MnistViT(patch=4, dim=48, depth=2, heads=6), rng), "attention-test-vit")
    lesson = AttentionLesson(model=name)
    assert lesson._content.visible and lesson._widgets["layer"].options == ["blocks.0.attn", "blocks.1.attn"]
    assert lesson._widgets["head"].end == 5
    assert len(lesson._heads.grid_source.data["image"]) == 2 * 7  # 2 layers × (6 heads + their mean)
    assert lesson.param.query.objects["patch (row 6, column 6)"] == 49  # 7×7 patches after the class token
    lesson.select(head=5, query=20, temperature=2.0)
    assert lesson.state.channel == 5
    assert lesson._stepper.step.head == 5 and lesson._stepper.step.probs.shape == (50, 50)


def test_fused_attention_gets_a_message_not_a_traceback(own_model, rng):
    name = own_model(with_timm_attention(random_vit(rng), fused=True), "attention-test-fused")
    lesson = AttentionLesson(model=name)
    assert lesson._content is None and lesson.errors.visible  # no figures are made for a model they cannot show
    assert "cannot be read" in lesson.errors.object and "fused_attn=False" in lesson.errors.object


@needs_vit
def test_opened_on_a_cnn_the_lesson_makes_no_attention_figures_until_a_vit_is_chosen():
    lesson = AttentionLesson(model="mnist-cnn")
    page = Page(lesson)
    assert lesson.errors.visible and "has no attention layers" in lesson.errors.object
    # only section 6's two figures, which compare this CNN with the ViT
    assert len([m for m in page.doc.models if type(m).__name__ == "figure"]) == 2
    lesson.state.model = "mnist-vit"
    assert lesson._content.visible and not lesson.errors.visible
    assert len([m for m in page.doc.models if type(m).__name__ == "figure"]) > 10

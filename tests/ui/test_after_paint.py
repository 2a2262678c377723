"""AfterPaint: waiting work runs once the page answers the newest ticket; the lessons' `follows` methods use it."""

from __future__ import annotations

import io

import numpy as np
import panel as pn
import pytest
from bokeh.document import Document
from PIL import Image

from explorer.core import zoo
from explorer.core.gallery import mnist_gallery
from explorer.lessons.attention.view import AttentionLesson
from explorer.lessons.convolution.view import ConvolutionLesson
from explorer.session.state import ExplorerState
from explorer.ui import shell
from explorer.ui.after_paint import AfterPaint
from explorer.ui.inputs import InputPicker, markdown_text
from explorer.ui.overview import Overview


def answer(after_paint: AfterPaint, ticket: int | None = None) -> None:
    """What the page does one frame after a ticket arrived: send it back."""
    sent = after_paint._ticket.data["ticket"][0]
    after_paint._painted.data = {"ticket": [sent if ticket is None else ticket]}


@pytest.fixture
def live() -> AfterPaint:
    after_paint = AfterPaint()
    after_paint.live = True  # as a served page that has loaded
    return after_paint


def test_outside_a_served_page_work_runs_at_once():
    after_paint = AfterPaint()  # outside a server onload runs at once, and there is no session: not live
    done = []
    after_paint.run("a", lambda: done.append("a"))
    assert done == ["a"] and not after_paint.live


def test_work_waits_for_the_answer_to_the_newest_ticket_and_runs_once_per_key(live):
    done = []
    live.run("lesson", lambda: done.append("lesson 1"))
    first = live._ticket.data["ticket"][0]
    live.run("frame", lambda: done.append("frame"))
    assert live._ticket.data["ticket"][0] == first  # one ticket per interaction, however much work waits
    assert done == []
    answer(live)  # the page painted it
    assert done == ["lesson 1", "frame"]
    live.run("lesson", lambda: done.append("lesson 2"))
    live.run("lesson", lambda: done.append("lesson 3"))  # a newer interaction before the page answered
    answer(live, first)  # an answer to an old ticket runs nothing
    assert done == ["lesson 1", "frame"]
    answer(live)
    assert done == ["lesson 1", "frame", "lesson 3"]  # only the newest work for a key


def test_a_failing_view_does_not_keep_the_others_from_following(live, caplog):
    done = []
    live.run("broken", lambda: 1 / 0)
    live.run("fine", lambda: done.append("fine"))
    answer(live)
    assert done == ["fine"] and "a view failed to follow the state" in caplog.text


def test_work_asked_for_by_waiting_work_runs_in_the_same_round(live):
    done = []
    live.run("outer", lambda: (done.append("outer"), live.run("inner", lambda: done.append("inner"))))
    answer(live)
    assert done == ["outer", "inner"] and not live._waiting


@pytest.fixture
def lesson(live) -> ConvolutionLesson:
    """A lesson in a served page that has loaded, after a new input whose message has not been painted yet."""
    state = ExplorerState()
    lesson = ConvolutionLesson(state=state, parts=())
    state.after_paint = live
    lesson.shown_before = lesson._memo.get("steps")
    item = mnist_gallery()[6]
    state.set_input(item.source, item.description)
    return lesson


def test_a_lesson_follows_the_state_after_the_page_has_painted(live, lesson):
    assert lesson._memo.get("steps") == lesson.shown_before  # the interaction's own message goes first
    answer(live)
    assert lesson._memo["steps"][0] is lesson.state.inference


def test_a_lesson_hidden_before_the_answer_puts_its_work_off(live, lesson):
    lesson.shown = False  # e.g. the student opened another lesson meanwhile
    answer(live)
    assert lesson._memo.get("steps") == lesson.shown_before
    lesson.shown = True  # shown again: it catches up, after this interaction's own message too
    answer(live)
    assert lesson._memo["steps"][0] is lesson.state.inference


def test_a_lessons_own_control_answers_at_once(live, lesson):
    lesson.tab = "Playground"  # its figures are made when the tab first opens
    answer(live)  # the lesson has followed the new input
    before = lesson._play_output.data["image"][0].copy()
    lesson.kernel_text = "0 0 0\n0 2 0\n0 0 0"  # the playground's kernel: the lesson's own control
    assert not live._waiting
    assert not np.array_equal(lesson._play_output.data["image"][0], before)


def test_a_layer_click_opens_its_lesson_after_the_page_painted_the_overview(live):
    state = ExplorerState()
    state.ensure()
    state.after_paint = live
    frame = shell.LessonFrame(state=state)
    overview = Overview(state=state)
    overview.select_layer("features.1")  # a BatchNorm: the normalization lesson explains it
    assert state.layer == "features.1" and state.lesson == "normalization"
    assert "normalization" not in frame._built  # the overview's answer goes to the page first
    answer(live)
    normalization = frame._built["normalization"]  # built (new Bokeh models) while the page waited
    assert normalization.shown and not frame._built["convolution"].shown
    assert normalization.layer == "features.1"
    assert len(normalization._stats.source.data["x"]) == 16  # filled: one mean and variance per channel


def test_a_layer_clicked_while_the_lesson_waits_for_its_first_paint_stays_selected(live):
    state = ExplorerState()
    state.ensure()
    state.after_paint = live
    lesson = ConvolutionLesson(state=state, parts=())  # built in a served page: it follows the state after the paint
    pn.panel(lesson).get_root(Document())  # on the page: its widgets have models
    Overview(state=state).select_layer("features.4")  # the student clicks before that
    answer(live)
    # the lesson's layer menu got its entries only now; taking its first one was not the student's choice
    assert state.layer == "features.4" and lesson.layer == "features.4"


@pytest.mark.skipif(not zoo.is_available("mnist-vit"), reason="mnist-vit weights are not installed")
def test_an_attention_layer_clicked_while_the_attention_lesson_waits_stays_selected(live):
    state = ExplorerState(model="mnist-vit")
    state.ensure()
    state.after_paint = live
    lesson = AttentionLesson(state=state)
    pn.panel(lesson).get_root(Document())
    Overview(state=state).select_layer("blocks.2.attn")
    answer(live)
    assert state.layer == "blocks.2.attn" and lesson.layer == "blocks.2.attn"


def test_the_picture_of_what_the_model_sees_follows_after_the_page_painted_the_prediction(live):
    state = ExplorerState()
    picker = InputPicker(state=state)
    state.after_paint = live
    before = picker.view_image.object
    item = mnist_gallery()[3]
    assert picker.pick(item.key)
    assert picker.input_label.object.endswith(markdown_text(item.description))  # the click's own answer: at once
    assert picker.view_image.object is before and live._waiting
    answer(live)
    shown = np.asarray(Image.open(io.BytesIO(picker.view_image.object)))
    np.testing.assert_array_equal(shown, state.inference.view)
    assert item.description in picker.view_image.alt_text

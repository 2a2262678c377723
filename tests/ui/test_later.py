"""Later: a part below the first screen joins a served page when the page says the student scrolled to it
(explorer/session/later.py); outside a server it is there at once."""

from __future__ import annotations

import panel as pn
import torch.nn as nn
from bokeh.document import Document
from bokeh.plotting import figure
from panel.io.state import set_curdoc

from explorer.lessons.normalization.view import NormalizationLesson
from explorer.session.later import InView, Later
from explorer.session.state import ExplorerState
from explorer.session.tags import model_tag
from tests.ui.doc_events import as_served


def a_part() -> tuple[pn.pane.Markdown, figure]:
    fig = figure(width=200, height=150, name="later-figure")
    fig.line(x=[0, 1], y=[0, 1])
    return pn.pane.Markdown("the part's text"), fig


def test_outside_a_server_the_items_are_there_at_once():
    text, fig = a_part()
    later = Later(text, pn.pane.Bokeh(fig), height=300)
    assert later.placed
    assert pn.panel(later).select(InView) == []
    assert pn.panel(later).select(pn.pane.Markdown) == [text]


def test_served_the_page_gets_a_placeholder_then_the_items_in_one_message_once_it_says_seen():
    doc = Document()
    context = as_served(doc)  # noqa: F841  (the document holds its context weakly)
    with set_curdoc(doc):
        text, fig = a_part()
        later = Later(text, pn.pane.Bokeh(fig), height=300)
        root = pn.panel(later)
        root.server_doc(doc)
        [mark] = root.select(InView)
        assert not later.placed and mark.height == 300
        assert doc.get_model_by_name("later-figure") is None  # not sent: the student has not scrolled there
        fig.title.text = "changed while waiting"  # the owner keeps it current; nothing is sent meanwhile

        mark.seen = True  # what the page does when the placeholder comes into view
        assert later.placed
        shown = doc.get_model_by_name("later-figure")
        assert shown is fig and shown.title.text == "changed while waiting"
        assert root.select(pn.pane.Markdown) == [text]
        placed = list(root.objects)
        mark.seen = False
        mark.seen = True  # a placeholder that is gone cannot bring them twice
        assert root.objects == placed


def test_a_served_lesson_sends_its_lower_sections_when_scrolled_to_with_the_current_models_numbers():
    doc = Document()
    context = as_served(doc)  # noqa: F841
    with set_curdoc(doc):
        lesson = NormalizationLesson(state=ExplorerState(model="mnist-cnn"))
        root = pn.panel(lesson)
        root.server_doc(doc)
        marks = root.select(InView)
        assert len(marks) == 4  # sections 3 to 6
        assert doc.get_model_by_name("normalization-gamma") is None
        assert doc.get_model_by_name("normalization-axes") is not None  # sections 1 and 2 are on the first screen
        lesson.state.model = "mnist-vit"  # while they wait
        # nothing computed for them yet: a student who never scrolls there costs the server nothing
        assert lesson._gamma.source.data["gamma"] == [] and lesson._batch_part.source.data["size"] == []
        for mark in marks:
            mark.seen = True
        assert len(lesson._batch_part.source.data["size"]) > 0
        gamma = doc.get_model_by_name("normalization-gamma")
        assert gamma is not None and gamma.tags == model_tag("mnist-vit")
        vit = lesson.state.inference.model.module
        assert set(gamma.data["layer"]) == {name for name, m in vit.named_modules() if isinstance(m, nn.LayerNorm)}

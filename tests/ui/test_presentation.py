"""Presentation mode, headless: the `present` flag read from and written to the URL by Panel's own Location, the
arrow keys' messages, and the switch's place in the app (tests/browser/test_presentation.py shows it in a page)."""

from __future__ import annotations

from urllib.parse import parse_qs

import panel as pn
import pytest
from panel.io.location import Location

from explorer.session.state import ExplorerState
from explorer.ui import shell
from explorer.ui.presentation import (
    PRESENTATION_CSS,
    URL_KEY,
    PresentationDesign,
    PresentationSwitch,
    add_presentation_mode,
)


def synced(search: str) -> tuple[PresentationSwitch, Location, list[int]]:
    steps: list[int] = []
    switch = PresentationSwitch(on_step=steps.append)
    location = Location(search=search)
    location.sync(switch, {"present": URL_KEY})
    return switch, location, steps


@pytest.mark.parametrize(("search", "presenting"), [("?present=1", True), ("?present=0", False),
                                                    ("?present=true", True), ("?lesson=pruning", False)])
def test_the_url_flag_sets_presentation_mode(search, presenting):
    switch, _, _ = synced(search)
    assert switch.present is presenting


@pytest.mark.parametrize("search", ["?present=2", "?present=yes"])
def test_a_malformed_flag_leaves_the_page_as_it_is(search):
    switch, _, _ = synced(search)
    assert switch.present is False


def test_the_switch_writes_1_or_0_to_the_url_and_keeps_the_other_keys():
    switch, location, _ = synced("?lesson=pruning&present=1")
    switch.present = False
    assert parse_qs(location.search[1:]) == {"lesson": ["pruning"], "present": ["0"]}
    switch.present = True
    assert parse_qs(location.search[1:]) == {"lesson": ["pruning"], "present": ["1"]}


def test_arrow_key_messages_step_the_tour_and_nothing_else_is_accepted():
    switch, _, steps = synced("?present=1")
    switch._handle_msg({"step": 1})
    switch._handle_msg({"step": -1})
    switch._handle_msg({"step": 1})
    assert steps == [1, -1, 1]
    for message in ({"step": 2}, {"step": "1"}, {}, "right"):
        with pytest.raises(ValueError, match="a step of -1 or 1"):
            switch._handle_msg(message)
    assert steps == [1, -1, 1]


def test_presentation_mode_needs_the_design_that_hides_explanations():
    with pytest.raises(ValueError, match="design=PresentationDesign"):
        add_presentation_mode(pn.template.BootstrapTemplate(), lambda delta: None)
    template = pn.template.BootstrapTemplate(design=PresentationDesign)
    switch = add_presentation_mode(template, lambda delta: None)
    assert list(template.header) == [switch]
    assert PRESENTATION_CSS.read_text() in template.config.raw_css


def test_the_app_steps_the_open_lessons_tour_from_its_switch():
    state = ExplorerState(lesson="normalization")
    template = shell.build_app(state)
    (switch,) = [item for item in template.header if isinstance(item, PresentationSwitch)]
    frame = switch._on_step.__self__  # the page's lesson frame (the template holds only what it draws)
    assert isinstance(frame, shell.LessonFrame) and frame.state is state
    frame._show_lesson()  # what the served page does once it has loaded
    tour = frame.open_tour
    assert tour is not None and tour.index == -1
    switch._handle_msg({"step": 1})
    switch._handle_msg({"step": 1})
    assert tour.index == 1
    switch._handle_msg({"step": -1})
    assert tour.index == 0


# Quantization's paragraphs are all results (its summary, arithmetic, accuracy, int8 report): nothing to hide.
@pytest.mark.parametrize("name", [name for name in shell.LESSONS if name != "quantization"])
def test_each_lesson_with_an_introduction_marks_it_for_presentation_mode_to_hide(name):
    state = ExplorerState(lesson=name)
    lesson = pn.panel(shell.build_lesson(name, state))
    explained = [pane for pane in lesson.select(pn.pane.Markdown) if "explanation" in pane.css_classes]
    assert explained, f"the {name} lesson has no paragraph marked as an explanation"

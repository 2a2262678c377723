"""Every interaction of the shell patches data and properties of existing Bokeh models; none makes new ones.

Deterministic (no timing): the app is attached to a Bokeh document as a served session's would be,
and the document's own change events are recorded.
"""

from __future__ import annotations

import pytest

from explorer.core import zoo
from explorer.core.gallery import mnist_gallery
from explorer.session.state import ExplorerState
from explorer.ui.shell import build_app
from tests.ui.doc_events import Page


@pytest.fixture
def session():
    state = ExplorerState()
    return state, Page(build_app(state))


def shown(page: Page, what: str) -> object:
    """What the page holds for one part of the view (from the document's Bokeh models)."""
    if what == "tabs":
        return next(m for m in page.doc.models if type(m).__name__ == "Tabs" and "lesson-tabs" in m.css_classes).active
    return page.data(what)


def interactions(state: ExplorerState, round_: int):
    """(name, action, the part of the page it must change)"""
    names, digits = state.inference.trace.names, mnist_gallery()
    yield "input", lambda: state.set_input(digits[4 + round_].source, digits[4 + round_].description), "overview-strip"
    yield "layer", lambda: setattr(state, "layer", names[4 + round_]), "overview-grid"
    yield "channel", lambda: setattr(state, "channel", 3 + round_), "overview-channel"
    yield "lesson", lambda: setattr(state, "lesson", ("pruning", "convolution")[round_]), "tabs"
    yield "model", lambda: setattr(state, "model", ("mnist-vit", "mnist-cnn")[round_]), "overview-strip"


def test_shell_interactions_only_patch_existing_models(session):
    state, page = session
    for round_ in (0, 1):
        for name, act, part in interactions(state, round_):
            page_before = shown(page, part)
            created = page.act(act)
            assert shown(page, part) != page_before, f"{name} did not change {part}"
            if round_ == 0:
                # Once per session: Panel attaches a pane's shared stylesheets the first time its content
                # changes, and a lesson tab is built the first time it opens.
                created = [kind for kind in created if kind != "ImportedStyleSheet" and name != "lesson"]
            assert created == [], f"round {round_}, {name}: created {created}"


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
def test_switching_to_mobilenet_keeps_the_overview_figures(session):
    state, page = session
    figures = {m.id for m in page.doc.models if type(m).__name__ == "figure"}
    state.model = "mobilenet_v2"
    assert figures == {m.id for m in page.doc.models if type(m).__name__ == "figure"}

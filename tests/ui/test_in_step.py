"""Controls set by both the server and the student (explorer.session.in_step): once the page has stopped changing
one, the server sends the value it holds once more, so that a crossing on the wire ends on the server's value.

The page's changes are made as Bokeh applies a page's patch (`set_from_json` with the session as setter); the
server's own with a plain assignment. The browser tests of the crossings themselves are in
tests/browser/test_app.py (a tab clicked, a layer picked, while the server sets another)."""

from __future__ import annotations

import panel as pn
import pytest
from bokeh.document import Document
from bokeh.document.events import ModelChangedEvent
from bokeh.models import Select

from explorer.session import in_step
from explorer.session.in_step import IN_STEP_TAG, QUIET_S, keep_in_step, watch_crossings

PAGE = object()  # stands for the page's session, the setter of its changes


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(in_step.time, "monotonic", clock)
    return clock


def served(*models) -> tuple[Document, list]:
    """A document watched for crossings, with `models` as its roots, and the server's changes made in it (what
    Bokeh sends to the page)."""
    doc = Document()
    for model in models:
        doc.add_root(model)
    watch_crossings(doc)
    sent: list = []
    doc.on_change(lambda event: sent.append(event) if event.setter is not PAGE else None)
    return doc, sent


def due(doc: Document) -> list[float]:
    """The waits, in seconds, of the callbacks the document will run."""
    return sorted(callback.timeout / 1000 for callback in doc.session_callbacks)


def run_due(doc: Document) -> None:
    """Run the callbacks the document holds (the test has moved the clock to when they are due)."""
    for callback in list(doc.session_callbacks):
        doc.remove_timeout_callback(callback)
        callback.callback()


def menu(value: str = "a") -> Select:
    return Select(options=["a", "b", "c", "d"], value=value, tags=[IN_STEP_TAG + "value"])


def values_sent(sent: list, select: Select) -> list[str]:
    return [event.new for event in sent if isinstance(event, ModelChangedEvent) and event.model is select
            and event.attr == "value"]


def test_a_pick_is_sent_back_once_the_page_is_quiet_with_the_value_the_server_then_holds(clock):
    select = menu()
    doc, sent = served(select)
    select.value = "b"  # the server's own, on its way to the page
    select.set_from_json("value", "c", setter=PAGE)  # the student's pick, made before "b" arrived
    assert due(doc) == [QUIET_S]
    select.value = "d"  # the server's answer to the pick (a value it takes in place of the one picked)
    clock.now += QUIET_S
    run_due(doc)
    assert values_sent(sent, select) == ["b", "d", "d"]  # "d" once more, after all that may have crossed the pick
    assert due(doc) == []


def test_a_quick_series_of_picks_is_sent_back_once_with_its_last_value(clock):
    select = menu()
    doc, sent = served(select)
    select.set_from_json("value", "b", setter=PAGE)
    clock.now += QUIET_S / 2
    select.set_from_json("value", "c", setter=PAGE)
    clock.now += QUIET_S / 2
    run_due(doc)  # the wait from the first pick ends QUIET_S / 2 after the second: wait on
    assert values_sent(sent, select) == [] and due(doc) == [pytest.approx(QUIET_S / 2)]
    clock.now += QUIET_S / 4
    select.set_from_json("value", "d", setter=PAGE)
    clock.now += QUIET_S / 4
    run_due(doc)  # still waiting: the last pick was QUIET_S / 4 ago
    assert values_sent(sent, select) == [] and due(doc) == [pytest.approx(3 * QUIET_S / 4)]
    clock.now += 3 * QUIET_S / 4
    run_due(doc)
    assert values_sent(sent, select) == ["d"] and due(doc) == []
    select.set_from_json("value", "a", setter=PAGE)  # a later pick: sent back again
    clock.now += QUIET_S
    run_due(doc)
    assert values_sent(sent, select) == ["d", "a"]


def test_the_servers_own_changes_and_controls_not_marked_send_nothing_more(clock):
    select, plain = menu(), Select(options=["a", "b", "c"], value="a")
    doc, sent = served(select, plain)
    select.value = "b"
    plain.set_from_json("value", "c", setter=PAGE)
    assert due(doc) == [] and values_sent(sent, select) == ["b"]


def test_a_control_removed_before_its_value_is_due_is_not_sent(clock):
    select = menu()
    doc, sent = served(select)
    select.set_from_json("value", "c", setter=PAGE)
    doc.remove_root(select)
    clock.now += QUIET_S
    run_due(doc)
    assert values_sent(sent, select) == []


def test_keep_in_step_marks_the_widgets_bokeh_model_with_the_property_kept():
    tabs = keep_in_step(pn.Tabs(("one", "1"), ("two", "2"), tags=["mine"]), "active")
    select = keep_in_step(pn.widgets.Select(options=["a", "b"]))
    assert tabs.get_root().tags == ["mine", IN_STEP_TAG + "active"]
    assert select.get_root().tags == [IN_STEP_TAG + "value"]

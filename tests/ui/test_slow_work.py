"""SlowWork: off the event loop in a served page, the newest answer only, nothing after the session ends, a failure
shown to the student; at once outside a server."""

from __future__ import annotations

import os
import sys
import threading

import pytest
from bokeh.document import Document
from panel.io.state import set_curdoc

from explorer.session import background
from explorer.session.work import SlowWork
from tests.ui.doc_events import as_served


class Loop:
    """The server's loop for one served document: the callbacks handed to it are kept, and run when the test says
    (as the loop would, under the document lock)."""

    def __init__(self, doc: Document):
        self.next_tick: list = []
        self.destroyed: list = []
        self._lock = threading.Lock()
        doc.add_next_tick_callback = self._add
        doc.on_session_destroyed = self.destroyed.append

    def _add(self, callback) -> None:
        with self._lock:
            self.next_tick.append(callback)

    def run(self) -> None:
        with self._lock:
            callbacks, self.next_tick = self.next_tick, []
        for callback in callbacks:
            callback()


@pytest.fixture
def served():
    doc = Document()
    context = as_served(doc)  # noqa: F841  (the document holds it weakly)
    loop = Loop(doc)
    with set_curdoc(doc):
        yield loop


def test_outside_a_server_the_answer_is_shown_at_once():
    shown = []
    work = SlowWork("test")
    work.request("key", lambda: 6 * 7, shown.append)
    assert shown == [42] and not work.busy and work.job is None


def test_in_a_served_page_compute_runs_on_another_thread_and_show_on_the_loop(served):
    threads, shown = [], []
    work = SlowWork("test")
    work.request("key", lambda: threads.append(threading.current_thread()) or 42, shown.append)
    work.job.result(timeout=10)
    assert threads and threads[0] is not threading.current_thread()
    assert shown == [] and work.busy  # not before the loop runs it
    served.run()
    assert shown == [42] and not work.busy


def test_a_stale_answer_is_dropped_and_the_newest_shown(served):
    first_may_end, shown = threading.Event(), []
    work = SlowWork("test")
    work.request(1, lambda: first_may_end.wait(10) and "first", shown.append)
    first = work.job
    work.request(2, lambda: "second", shown.append)
    work.job.result(timeout=10)
    first_may_end.set()
    first.result(timeout=10)
    served.run()
    assert shown == ["second"] and not work.busy


def test_an_answer_arriving_after_a_newer_request_is_dropped_on_the_loop(served):
    shown = []
    work = SlowWork("test")
    work.request(1, lambda: "first", shown.append)
    work.job.result(timeout=10)  # delivered to the loop, not yet run
    work.request(2, lambda: "second", shown.append)
    work.job.result(timeout=10)
    served.run()
    assert shown == ["second"] and not work.busy


def test_nothing_is_shown_after_the_session_ended(served):
    shown = []
    work = SlowWork("test")
    work.request(1, lambda: "late", shown.append)
    work.job.result(timeout=10)
    for callback in served.destroyed:
        callback(None)
    served.run()
    assert shown == [] and not work.busy


def test_a_failure_goes_to_the_view_not_only_to_the_log(served):
    errors, shown = [], []
    work = SlowWork("test", on_error=errors.append)
    work.request(1, lambda: 1 / 0, shown.append)
    work.job.result(timeout=10)
    served.run()
    assert shown == [] and len(errors) == 1 and isinstance(errors[0], ZeroDivisionError)


def test_a_request_already_stale_when_its_worker_starts_computes_nothing(served, monkeypatch):
    started, computed, shown = [], [], []
    real_submit = background.submit
    monkeypatch.setattr(background, "submit", lambda work, name, background: started.append(work) or None)
    work = SlowWork("test")
    work.request(1, lambda: computed.append(1), shown.append)
    work.request(2, lambda: computed.append(2) or "second", shown.append)
    monkeypatch.setattr(background, "submit", real_submit)
    for start in started:  # both workers start only now, the first one stale
        start()
    served.run()
    assert computed == [2] and shown == ["second"] and not work.busy


@pytest.mark.skipif(sys.platform != "linux", reason="threads have their own nice value on Linux only")
def test_a_measurement_yields_the_cpu_and_an_answer_a_student_waits_for_does_not(served):
    def own_priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    ours, seen = own_priority(), {}
    for background_work in (False, True):
        work = SlowWork("test", background=background_work)
        work.request("key", own_priority, lambda nice, b=background_work: seen.update({b: nice}))
        work.job.result(timeout=10)
        served.run()
    assert seen == {False: ours, True: max(ours, background.BACKGROUND_NICE)}


def test_an_answer_goes_to_the_views_own_document_even_when_another_sessions_is_current():
    """Under a class's load the current document of a callback once named another student's page; a strand given its
    session's document answers there, whichever document is current when it is asked."""
    own, other = Document(), Document()
    contexts = as_served(own), as_served(other)  # noqa: F841  (the documents hold them weakly)
    own_loop, other_loop = Loop(own), Loop(other)
    shown = []
    work = SlowWork("test", document=own)
    with set_curdoc(other):
        work.request("key", lambda: 42, shown.append)
    work.job.result(timeout=10)
    other_loop.run()
    assert shown == [] and other_loop.destroyed == []
    own_loop.run()
    assert shown == [42] and len(own_loop.destroyed) == 1  # the end of its own session cancels it

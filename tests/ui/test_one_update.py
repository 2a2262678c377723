"""one_update() turns Bokeh's validation off for the main thread's updates only, and always turns it back on."""

from __future__ import annotations

import threading

from bokeh.core.property.bases import validation_on
from bokeh.core.property.validation import validate
from bokeh.plotting import figure

from explorer.ui.state import one_update


def test_a_worker_thread_overlapping_the_main_threads_update_leaves_validation_on():
    worker_inside, main_left = threading.Event(), threading.Event()

    def worker() -> None:
        with one_update():  # a lesson painting a measurement from its worker (outside a server)
            worker_inside.set()
            main_left.wait(10)

    thread = threading.Thread(target=worker)
    with one_update():
        thread.start()
        worker_inside.wait(10)
    main_left.set()
    thread.join(10)
    on = validation_on()
    validate(True)  # whatever happened, the tests after this one validate
    assert on
    assert figure(title="accuracy").title.text == "accuracy"  # a str became a Title, as Bokeh converts it

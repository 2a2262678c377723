"""one_update() turns Bokeh's validation off for the main thread's updates only, where the server is tuned, and always
turns it back on; making_models() turns it on inside an update."""

from __future__ import annotations

import threading

import panel as pn
import pytest
from bokeh.core.property.bases import validation_on
from bokeh.core.property.validation import validate
from bokeh.document import Document
from bokeh.document.models import DocumentModelManager
from bokeh.plotting import figure
from panel.models.markup import HTML as Markdown

from explorer.serve import recompute, validation
from explorer.session.state import making_models, one_update


@pytest.fixture
def tuned(monkeypatch):
    """As in a served app: the skip_validation tuning is on (explorer/serve/tunings.py)."""
    monkeypatch.setattr(validation, "_skipping", True)


def test_the_main_threads_update_skips_validation_where_tuned_and_models_made_inside_are_converted(tuned):
    with one_update():
        off = not validation_on()
        with making_models():
            title = figure(title="accuracy").title
        off_again = not validation_on()
    assert off and off_again and validation_on()
    assert title.text == "accuracy"


def test_untuned_updates_validate(monkeypatch):
    monkeypatch.setattr(validation, "_skipping", False)  # EXPLORER_TUNE=0, or a Bokeh version not tested
    with one_update():
        on = validation_on()
    assert on


def test_a_worker_thread_overlapping_the_main_threads_update_leaves_validation_on(tuned):
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


@pytest.mark.parametrize("freezing", [True, False])
def test_an_update_that_changes_two_layouts_walks_the_page_once_where_tuned(monkeypatch, freezing):
    """The one_recompute tuning (explorer/serve/recompute.py): one walk over the document's models per update, after
    which the new models are the document's and the replaced ones are not. (That the page is sent them: every
    browser test, which opens lessons through one_update().)"""
    monkeypatch.setattr(recompute, "_freezing", freezing)
    first, second = pn.Column(pn.pane.Markdown("old a")), pn.Column(pn.pane.Markdown("old b"))
    doc = Document()
    pn.Column(first, second).server_doc(doc)
    monkeypatch.setattr(pn.state, "curdoc", doc)
    monkeypatch.setitem(pn.state._connected, doc, True)  # a served page, on its event loop's thread: the hold's
    monkeypatch.setattr(pn.state, "_thread_id", threading.get_ident())  # end sends what it held
    walks, sent = [], []
    real = DocumentModelManager.recompute
    monkeypatch.setattr(DocumentModelManager, "recompute", lambda self: (walks.append(1), real(self)))
    real_unhold = Document.unhold
    # When the hold sends the update, every new model is the document's already (themed as the page's models are)
    monkeypatch.setattr(Document, "unhold", lambda self: (
        sent.append([model.document is doc for view in (*first.objects, *second.objects)
                     for model, _ in view._models.values()]), real_unhold(self)))
    with one_update(adding_views=True), making_models():
        first.objects = [pn.pane.Markdown("new a")]
        second.objects = [pn.pane.Markdown("new b"), pn.pane.Markdown("new c")]
    assert len(walks) == (1 if freezing else 2)
    assert sent == [[True, True, True]]
    texts = " ".join(model.text for model in doc.models if isinstance(model, Markdown))
    assert all(word in texts for word in ("new a", "new b", "new c")) and "old" not in texts
    assert all(model.document is doc for model in doc.models)
    with one_update():  # an update that adds no view (a gallery click): no walk at all
        first.objects[0].object = "another text"
    assert len(walks) == (1 if freezing else 2)

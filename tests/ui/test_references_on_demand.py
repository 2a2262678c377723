"""The references_on_demand, small_buffers_inline and known_models_by_id tunings (explorer/serve/references.py): the
same PATCH-DOC messages written (small arrays inside the text), the same changes applied from the page's, as Bokeh's
own code."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from bokeh.core.serialization import Serialized
from bokeh.document import Document
from bokeh.models import ColorBar, ColumnDataSource, Div, LinearColorMapper
from bokeh.plotting import figure
from bokeh.protocol.messages.patch_doc import patch_doc

from explorer.serve import references

BOKEH_CREATE = patch_doc.create.__func__ if patch_doc.create.__func__ is not references.create else None


def page(rng: random.Random) -> tuple[Document, list]:
    """A document with figures the page already has (synced), and what a random interaction changes in it."""
    doc = Document()
    figures = []
    for _ in range(rng.randint(2, 5)):
        fig = figure(width=200, height=200)
        source = ColumnDataSource(data=dict(x=np.arange(4.0), y=np.arange(4.0)))
        fig.scatter("x", "y", source=source)
        doc.add_root(fig)
        figures.append((fig, source))
    doc.add_root(Div(text="prediction"))
    doc.models.flush_synced()  # the page has all of these
    events: list = []
    doc.on_change(events.append)
    for fig, source in figures:
        source.data = dict(x=np.array([rng.random() for _ in range(4)]), y=np.arange(4.0))
        fig.title.text = f"layer {rng.randint(0, 9)}"
    fig, _ = rng.choice(figures)  # a new model (a colour bar) among known ones
    fig.add_layout(ColorBar(color_mapper=LinearColorMapper(palette=["#000000", "#ffffff"], low=0, high=1)), "right")
    return doc, events


def message_text(message: patch_doc) -> tuple[str, list[bytes]]:
    """The message's content with its buffers named by their place (each serialization gives them new ids)."""
    text = message.content_json
    for i, buffer in enumerate(message.buffers):
        text = text.replace(f'"id":"{buffer.id}"', f'"id":"buffer {i}"')
    return text, [bytes(buffer.data) for buffer in message.buffers]


@pytest.mark.skipif(BOKEH_CREATE is None, reason="the tuning replaced Bokeh's create before this module loaded")
@pytest.mark.parametrize("seed", range(5))
def test_a_patch_is_written_exactly_as_bokeh_writes_it_and_leaves_the_same_models_new(seed, monkeypatch):
    monkeypatch.setattr(references.SyncedReferences, "inline_bytes", 0)  # as Bokeh: small_buffers_inline is below
    doc, events = page(random.Random(seed))
    new_before = set(doc.models._new_models)
    assert new_before, "the interaction made a model the page does not have yet"
    theirs = BOKEH_CREATE(patch_doc, list(events))
    new_after_theirs = set(doc.models._new_models)
    doc.models._new_models = set(new_before)
    ours = references.create(patch_doc, list(events))
    assert message_text(ours) == message_text(theirs)
    assert set(doc.models._new_models) == new_after_theirs
    # the known figures went as references, the new colour bar in full
    content = json.loads(ours.content_json)
    assert '"type":"object","name":"ColorBar"' in ours.content_json.replace(" ", "")
    assert content["events"]


@pytest.mark.skipif(BOKEH_CREATE is None, reason="the tuning replaced Bokeh's create before this module loaded")
@pytest.mark.parametrize("seed", range(5))
def test_small_arrays_go_inside_the_text_and_a_page_reads_the_same_changes(seed, monkeypatch):
    rng = random.Random(seed)
    doc, events = page(rng)
    big = ColumnDataSource(data=dict(x=np.zeros(references.INLINE_BYTES // 8 + 1)))  # one byte over: a buffer
    doc.add_root(big)
    doc.models.flush_synced()
    big.data = dict(x=np.array([rng.random() for _ in range(references.INLINE_BYTES // 8 + 1)]))
    theirs = BOKEH_CREATE(patch_doc, list(events))
    monkeypatch.setattr(references.SyncedReferences, "inline_bytes", references.INLINE_BYTES)
    ours = references.create(patch_doc, list(events))
    sizes = lambda message: sorted(buffer.data.nbytes for buffer in message.buffers)  # noqa: E731
    assert sizes(ours) == [n for n in sizes(theirs) if n > references.INLINE_BYTES] == [references.INLINE_BYTES + 8]
    assert len(theirs.buffers) > 1  # the small sources' columns, sent inside the text by ours
    pages = [Document.from_json(doc.to_json(deferred=False)) for _ in range(2)]
    for copy, message in zip(pages, (theirs, ours), strict=True):
        copy.apply_json_patch(Serialized(message.content, list(message.buffers)))
    assert state_of(pages[1]) == state_of(pages[0])


BOKEH_APPLY = Document.apply_json_patch if Document.apply_json_patch is not references.apply_json_patch else None


def as_the_page_sends(doc: Document, change) -> Serialized:
    """The PATCH-DOC content a page holding `doc` sends after `change(page's copy)`: made on a copy of the document,
    as the page's own models are."""
    page = Document.from_json(doc.to_json(deferred=False))
    events: list = []
    page.on_change(events.append)
    change(page)
    message = patch_doc.create(events)
    return Serialized(message.content, list(message.buffers))


def state_of(doc: Document) -> tuple[str, set[str]]:
    return json.dumps(doc.to_json(deferred=False), sort_keys=True), {m.id for m in doc.models._new_models}


@pytest.mark.skipif(BOKEH_APPLY is None, reason="the tuning replaced apply_json_patch before this module loaded")
@pytest.mark.parametrize("seed", range(5))
def test_a_patch_from_the_page_changes_the_document_exactly_as_bokehs_apply_json_patch(seed):
    rng = random.Random(seed)
    doc, _ = page(rng)
    before = doc.to_json(deferred=False)
    removed = doc.roots[0]

    def change(copy: Document) -> None:  # what a page changes: values, data, and a model of its own making
        for model in copy.models:
            if isinstance(model, ColumnDataSource):
                model.data = dict(x=np.array([rng.random() for _ in range(4)]), y=np.arange(4.0))
            elif isinstance(model, Div):
                model.text = f"clicked {rng.randint(0, 99)}"
        copy.roots[-1].styles = {"color": "red"}
        copy.add_root(Div(text="made by the page"))

    content = as_the_page_sends(doc, change)
    docs = [Document.from_json(before), Document.from_json(before)]
    for d in docs:
        d.models.flush_synced(lambda model: rng.random() < 0.5)  # some models not yet sent: still new
    docs[1].models._new_models = {docs[1].models.get_by_id(m.id) for m in docs[0].models._new_models}
    BOKEH_APPLY(docs[0], content)
    references.apply_json_patch(docs[1], content)
    assert state_of(docs[1]) == state_of(docs[0])
    assert "clicked" in state_of(docs[1])[0]
    # a patch naming a model the server has removed meanwhile is dropped, as Bokeh drops it
    for d in docs:
        d.remove_root(d.get_model_by_id(removed.id))
    stale = as_the_page_sends(doc, lambda copy: setattr(copy.get_model_by_id(removed.id), "width", 123))
    BOKEH_APPLY(docs[0], stale)
    references.apply_json_patch(docs[1], stale)
    assert state_of(docs[1]) == state_of(docs[0])

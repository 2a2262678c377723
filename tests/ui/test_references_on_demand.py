"""The references_on_demand tuning (explorer/serve/references.py) writes the same PATCH-DOC messages as Bokeh."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
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
def test_a_patch_is_written_exactly_as_bokeh_writes_it_and_leaves_the_same_models_new(seed):
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

"""Two tunings that find the page's models by their ids instead of listing them all for each message.

`references_on_demand`: a patch's references to the page's models looked up when met. Every PATCH-DOC message
Bokeh sends starts by listing every model of the document the page already has
(`DocumentModelManager.synced_references`, a new set) and making each one's reference (`Model.ref`, a new dict), so
that the serializer can write a model the page knows as a reference instead of in full. A patch meets a few dozen
models; the document of one student's page has thousands (the overview, every opened lesson), and an input change
sends three patches. The serializer here asks the document instead, for the models the patch meets: a model the page
has (in the document, not among its new models) is written as its reference, exactly as before; a new model in full.

`known_models_by_id`: each PATCH-DOC message from the page (a click, a slider, the page saying it painted) made
Bokeh build a table of every model of the document by id, reading each model's id, to find the few the patch
names. The document keeps that table already (`DocumentModelManager`, by id): a copy of it serves, made at C speed.
"""

from __future__ import annotations

import logging
from typing import Any

from bokeh.core.serialization import Deserializer, Ref, Serializer, UnknownReferenceError
from bokeh.document import Document
from bokeh.document.events import DocumentPatchedEvent
from bokeh.document.models import DocumentModelManager
from bokeh.model import Model
from bokeh.protocol.messages.patch_doc import PatchJson, patch_doc

log = logging.getLogger("explorer.serve")


class SyncedReferences(Serializer):
    """A serializer whose known references are those of `models`' synced models, found as the encoding meets them."""

    def __init__(self, models: DocumentModelManager):
        super().__init__()
        self._document_models = models

    def _synced(self, obj: Any) -> bool:
        # DocumentModelManager keeps no public test for "new": synced_references is the whole set, made anew
        return (isinstance(obj, Model) and self._document_models.get_by_id(obj.id) is obj
                and obj not in self._document_models._new_models)

    def has_ref(self, obj: Any) -> bool:
        return super().has_ref(obj) or self._synced(obj)

    def get_ref(self, obj: Any) -> Ref | None:
        ref = super().get_ref(obj)
        if ref is None and self._synced(obj):
            ref = obj.ref
            self.add_ref(obj, ref)
        return ref


def create(cls: type[patch_doc], events: list[DocumentPatchedEvent], **metadata: Any) -> patch_doc:
    """`patch_doc.create` (Bokeh 3.9.2) with the synced references looked up on demand."""
    header = cls.create_header()
    if not events:
        raise ValueError("PATCH-DOC message requires at least one event")
    docs = {event.document for event in events}
    if len(docs) != 1:
        raise ValueError("PATCH-DOC message configured with events for more than one document")
    [doc] = docs
    serializer = SyncedReferences(doc.models)
    patch_json = PatchJson(events=serializer.encode(events))
    doc.models.flush_synced(lambda model: not serializer.has_ref(model))
    message = cls(header, metadata, patch_json)
    message.add_buffers(*serializer.buffers)
    return message


def references_on_demand() -> None:
    if patch_doc.create.__func__ is not create:
        patch_doc.create = classmethod(create)


class KnownModels(Deserializer):
    """A deserializer that knows `models`' models by id from the document's own table (a copy: models the patch
    creates join this one only, as in Bokeh's)."""

    def __init__(self, models: DocumentModelManager, *, setter: Any = None):
        super().__init__(setter=setter)
        self._references = dict(models._models)  # DocumentModelManager keeps its id -> model table private


def apply_json_patch(self: Document, patch_json: Any, *, setter: Any = None) -> None:
    """`Document.apply_json_patch` (Bokeh 3.9.2) with the document's models known by id from its own table."""
    deserializer = KnownModels(self.models, setter=setter)
    try:
        patch = deserializer.deserialize(patch_json)
    except UnknownReferenceError as error:
        if self.models.seen(error.id):  # a model the page changed while the server removed it: harmless
            log.debug("dropping a patch that refers to a model removed before (id=%r)", error.id)
            return
        raise
    for event in patch["events"]:
        DocumentPatchedEvent.handle_event(self, event, setter)
    self.models.flush_synced(lambda model: not deserializer.has_ref(model))


def known_models_by_id() -> None:
    if Document.apply_json_patch is not apply_json_patch:
        Document.apply_json_patch = apply_json_patch

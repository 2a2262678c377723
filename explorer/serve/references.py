"""Two tunings that find the page's models by their ids instead of listing them all for each message, and one that
writes a patch's small arrays inside its text.

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

`small_buffers_inline`: Bokeh sends each array of a patch as a binary buffer of its own, and each buffer as two
websocket frames (its header and its bytes), whatever its size: a gallery click with the convolution lesson open
sent 37 buffers, 30 of them under 4 KiB (a kernel's 9 weights, a colour bar's ends), and with saliency open 140.
Each frame costs the server a write and the page a message to hand to BokehJS. An array of up to INLINE_BYTES goes
inside the patch's text instead, in Bokeh's own form for arrays outside a server (a standalone page), which BokehJS
reads in every message: base64 of a gzip stream, here stored uncompressed (3-11 us per array against 10-65 us
compressed; at this size the bytes saved do not matter).
"""

from __future__ import annotations

import base64
import gzip
import logging
from typing import Any

from bokeh.core.serialization import BytesRep, Deserializer, Ref, Serializer, UnknownReferenceError
from bokeh.document import Document
from bokeh.document.events import DocumentPatchedEvent
from bokeh.document.models import DocumentModelManager
from bokeh.model import Model
from bokeh.protocol.messages.patch_doc import PatchJson, patch_doc

log = logging.getLogger("explorer.serve")

INLINE_BYTES = 4096  # an array up to this size goes inside a patch's text (small_buffers_inline)


class SyncedReferences(Serializer):
    """A serializer whose known references are those of `models`' synced models, found as the encoding meets them;
    arrays up to `inline_bytes` are written inside the message's text."""

    inline_bytes = 0  # small_buffers_inline sets INLINE_BYTES

    def __init__(self, models: DocumentModelManager):
        super().__init__()
        self._document_models = models

    def _encode_bytes(self, obj: bytes | memoryview) -> BytesRep:
        view = memoryview(obj)
        if view.nbytes > self.inline_bytes:
            return super()._encode_bytes(obj)  # a binary buffer of its own, as Bokeh sends every array
        # gzip's frame around the bytes as they are (level 0): BokehJS gunzips every array written in the text
        stored = gzip.compress(view.tobytes(), compresslevel=0, mtime=1)
        return BytesRep(type="bytes", data=base64.b64encode(stored).decode("ascii"))

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


def small_buffers_inline() -> None:
    """Needs references_on_demand, whose serializer writes them."""
    SyncedReferences.inline_bytes = INLINE_BYTES


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

"""explorer.serve: EXPLORER_TUNE=0 makes no patch at all, a library version a tuning was not tested on turns that
tuning off with one log line, and tune() is idempotent. Each case runs in a fresh interpreter: the patches are
process-wide, and a served session is stood for by a document with a session context."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from explorer.serve import tunings

PROBE = r"""
import gc, json, logging, os, sys, weakref
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
from bokeh.document import Document
import panel as pn
import panel.io.document
import panel.reactive
from bokeh.core.has_props import HasProps
from bokeh.model import Model
from bokeh.protocol.message import Message
from bokeh.server.connection import ServerConnection
from bokeh.server.session import ServerSession
from bokeh.server.views.ws import WSHandler
from bokeh.core.property.descriptors import PropertyDescriptor
from bokeh.protocol.messages.patch_doc import patch_doc
from panel.pane.markup import HTMLBasePane, Markdown
from panel.reactive import Syncable
from explorer.serve import gate

PATCHED = {"patch_doc.create": (patch_doc, "create"),
           "PropertyDescriptor._get_default": (PropertyDescriptor, "_get_default"),
           "PropertyDescriptor.has_unstable_default": (PropertyDescriptor, "has_unstable_default"),
           "HasProps.__init__": (HasProps, "__init__"),
           "WSHandler.open": (WSHandler, "open"), "WSHandler.on_message": (WSHandler, "on_message"),
           "WSHandler.on_close": (WSHandler, "on_close"), "Message.send": (Message, "send"),
           "ServerConnection.send_patch_document": (ServerConnection, "send_patch_document"),
           "ServerSession.pull": (ServerSession, "pull"), "ServerSession.push": (ServerSession, "push"),
           "ServerSession.patch": (ServerSession, "patch"), "Syncable._debounce": (Syncable, "_debounce"),
           "panel.io.document.dispatch_tornado": (panel.io.document, "dispatch_tornado"),
           "HTMLBasePane._update": (HTMLBasePane, "_update"),
           "Document.apply_json_patch": (Document, "apply_json_patch"),
           "HTMLBasePane._update_pane": (HTMLBasePane, "_update_pane"),
           "Model.references": (Model, "references"),
           "HasProps.query_properties_with_values": (HasProps, "query_properties_with_values"),
           "panel.reactive.edit_readonly": (panel.reactive, "edit_readonly"),
           "panel.io.state.edit_readonly": (sys.modules["panel.io.state"], "edit_readonly"),
           "Markdown._transform_object": (Markdown, "_transform_object")}

def state(doc):
    found = {name: id(vars(owner).get(attribute)) for name, (owner, attribute) in PATCHED.items()}
    found["gc threshold"] = gc.get_threshold()[2]
    found["gc frozen"] = gc.get_freeze_count() > 0
    found["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY")
    found["page scripts"] = len(doc.callbacks._js_event_callbacks.get("document_ready", []))
    from explorer.serve import validation
    found["updates unvalidated"] = validation._skipping
    from explorer.serve import recompute, references
    found["one walk per update"] = recompute._freezing
    found["small arrays inline"] = references.SyncedReferences.inline_bytes
    return found

untested = set(sys.argv[2].split(",")) - {""}
if untested:
    real = gate.installed
    gate.installed = lambda name: "0.0.0" if name in untested else real(name)

class Context:  # a served session's context, as much of it as tune() looks at
    pass

context = Context()
doc = Document()
doc._session_context = weakref.ref(context)
pn.state.curdoc = doc
from explorer import serve
before = state(doc)
for call in range(int(sys.argv[1])):
    serve.before_torch()
    serve.tune()
    first = state(doc) if call == 0 else first
after = state(doc)
print(json.dumps({"changed": sorted(name for name in before if before[name] != after[name]),
                  "changed again": sorted(name for name in first if first[name] != after[name])}))
"""

ALL_CHANGED = sorted(["patch_doc.create", "PropertyDescriptor._get_default", "PropertyDescriptor.has_unstable_default",
                      "HasProps.__init__",
                      "WSHandler.open", "WSHandler.on_message", "WSHandler.on_close", "Message.send",
                      "ServerConnection.send_patch_document", "ServerSession.pull", "ServerSession.push",
                      "ServerSession.patch", "Syncable._debounce", "panel.io.document.dispatch_tornado",
                      "gc threshold", "gc frozen", "OMP_WAIT_POLICY", "page scripts", "updates unvalidated",
                      "one walk per update", "small arrays inline", "HTMLBasePane._update", "HTMLBasePane._update_pane",
                      "Document.apply_json_patch", "Model.references", "HasProps.query_properties_with_values",
                      "panel.reactive.edit_readonly", "panel.io.state.edit_readonly", "Markdown._transform_object"])


def probe(calls: int, tune: str | None = None, untested: tuple[str, ...] = (), again: bool = False
          ) -> tuple[list[str], list[str]]:
    """What `calls` calls of before_torch() and tune() changed in a fresh served process (or, `again`, what the calls
    after the first changed), and its log lines."""
    env = {k: v for k, v in os.environ.items() if k not in ("EXPLORER_TUNE", "OMP_WAIT_POLICY")}
    if tune is not None:
        env["EXPLORER_TUNE"] = tune
    done = subprocess.run([sys.executable, "-c", PROBE, str(calls), ",".join(untested)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("explorer.serve")]
    return json.loads(done.stdout.splitlines()[-1])["changed again" if again else "changed"], lines


def test_every_tuning_changes_what_it_patches():  # so that the next test's "nothing changed" means something
    changed, lines = probe(1)
    assert changed == ALL_CHANGED and lines == []


def test_explorer_tune_0_leaves_every_patched_attribute_untouched():
    changed, lines = probe(2, tune="0")
    assert changed == []
    assert lines == ["explorer.serve: EXPLORER_TUNE=0: every runtime tuning is off"]  # once, for two calls


def test_a_library_version_not_tested_turns_its_tunings_off_with_one_log_line_each():
    changed, lines = probe(2, untested=("bokeh",))
    gated = [tuning.name for tuning in tunings.TUNINGS if "bokeh" in tuning.tested_on]
    assert gated == ["nodelay", "messages_at_once", "patches_as_tasks", "closed_pages_quiet", "left_pages_freed",
                     "references_on_demand", "small_buffers_inline", "known_models_by_id", "cached_defaults",
                     "one_recompute", "quick_model_walk", "quick_serialization", "skip_validation",
                     "idle_collections", "bokehjs"]
    assert lines == [f"explorer.serve: tuning {name!r} is off: not tested on bokeh 0.0.0 (tested on 3.9.2)"
                     for name in gated]  # one line each, though tune() ran twice
    # Panel's debounce and markup panes, and OpenMP: not Bokeh's
    assert changed == ["HTMLBasePane._update", "HTMLBasePane._update_pane", "Markdown._transform_object",
                       "OMP_WAIT_POLICY", "Syncable._debounce", "panel.io.state.edit_readonly",
                       "panel.reactive.edit_readonly"]


def test_tune_is_idempotent():
    changed, _ = probe(3)
    again, _ = probe(3, again=True)
    assert changed == ALL_CHANGED  # as one call changes them
    assert again == []  # the second and third calls wrapped nothing again and added no second page script


@pytest.mark.parametrize("tuning", tunings.TUNINGS, ids=lambda tuning: tuning.name)
def test_each_tuning_states_its_gain_and_its_upstream_issue_or_removal_condition(tuning):
    assert tuning.gain and tuning.upstream and set(tuning.tested_on) <= {"bokeh", "panel", "tornado"}
    assert all(version.count(".") == 2 for version in tuning.tested_on.values())

"""Two tunings of markup panes. `text_only_updates`: a markup pane (Markdown, HTML) whose text changed sends its new
text, and nothing of it is computed again but that text. `markdown_rendered_once` (below): a Markdown text met
before is not rendered again.

Panel updates a markup pane's Bokeh model from all its properties whenever one of the parameters that change its
text does (`HTMLBasePane._update` → `_get_properties`): the design's parameters and stylesheets, new stylesheet
models, sizing, then the text. Bokeh compares each value with the model's and sends only the text, so the rest is
work for nothing: 2-3 ms a pane, and a lesson's answer to a new input changes 5 to 14 of its texts. Here a change of
`object` alone sets only the text, made by the pane's own conversion (`_process_param_change`: Markdown rendered to
HTML, escaped); a change of any other of those parameters (`css_classes`, `extensions`, ...) updates the model
from all its properties, as Panel does, and so does every update of a pane made before the tuning (its watcher,
bound when it was made, does not note which parameters changed).
"""

from __future__ import annotations

import collections
import functools
import threading

from panel.pane.base import Pane
from panel.pane.markup import HTMLBasePane, Markdown

RENDERED_KEPT = 4096  # Markdown texts kept rendered, the least recently used dropped first (a few MB at most)


def text_only_updates() -> None:
    if not getattr(HTMLBasePane._update, "explorer_text_only", False):
        # a pane watches its bound `_update_pane` from __init__ on: this applies to the panes made after it
        HTMLBasePane._update_pane = _noting_full_updates(Pane._update_pane)
        HTMLBasePane._update = _text_only(HTMLBasePane._update)


def _noting_full_updates(update_pane):
    @functools.wraps(update_pane)
    def update(self: HTMLBasePane, *events) -> None:
        owed = self.__dict__.setdefault("_explorer_full_updates", set())  # also: this watcher sees the pane's changes
        if any(event.name != "object" for event in events):
            owed |= set(self._models)  # each model updated in full next time (now, or once its document is free)
        update_pane(self, *events)

    return update


def _text_only(update_model):
    @functools.wraps(update_model)
    def update(self: HTMLBasePane, ref: str, model) -> None:
        owed = self.__dict__.get("_explorer_full_updates")
        # in full: a pane made before the tuning (its changes are not noted), one owed a full update, or streaming
        if owed is None or ref in owed or self.enable_streaming:
            if owed is not None:
                owed.discard(ref)
            update_model(self, ref, model)
            return
        model.update(**self._process_param_change({"object": self.object}))

    update.explorer_text_only = True
    return update


def markdown_rendered_once() -> None:
    """The `markdown_rendered_once` tuning: a Markdown text is rendered to HTML once per process and its settings,
    then read. A class clicks the same gallery digits: each click changes 5 to 14 texts, rendered by markdown-it at
    0.5-1 ms each, and every student who clicks digit 3 with one lesson open gets the same texts."""
    if not getattr(Markdown._transform_object, "explorer_once", False):
        Markdown._transform_object = _rendered_once(Markdown._transform_object)


def _rendered_once(transform):
    kept: collections.OrderedDict[tuple, dict] = collections.OrderedDict()
    lock = threading.Lock()

    @functools.wraps(transform)
    def rendered(self: Markdown, obj) -> dict:
        if not isinstance(obj, str):  # an object that renders itself: Panel's way
            return transform(self, obj)
        try:  # everything Panel's _transform_object reads; settings that cannot be a key: rendered as Panel does
            key = (type(self), obj, self.dedent, self.renderer, tuple(self.extensions), self.hard_line_break,
                   self.disable_anchors, tuple(self.plugins), tuple(sorted(self.renderer_options.items())))
            hash(key)
        except TypeError:
            return transform(self, obj)
        with lock:
            found = kept.get(key)
            if found is not None:
                kept.move_to_end(key)
        if found is None:
            found = transform(self, obj)
            with lock:
                kept[key] = found
                while len(kept) > RENDERED_KEPT:
                    kept.popitem(last=False)
        return dict(found)

    rendered.explorer_once = True
    rendered.kept = kept
    return rendered

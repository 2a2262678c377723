"""The `text_only_updates` tuning: a markup pane (Markdown, HTML) whose text changed sends its new text, and nothing
of it is computed again but that text.

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

import functools

from panel.pane.base import Pane
from panel.pane.markup import HTMLBasePane


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

"""A lesson that shows one layer at a time among some of the model's layers (its norm layers, its convolutions), in
step with the session's layer."""

from __future__ import annotations

import panel as pn

from explorer.core.names import labelled_name
from explorer.session.in_step import keep_in_step
from explorer.session.lesson import Lesson
from explorer.session.state import follows, one_update


class OneLayerLesson(Lesson):
    """A lesson, or a part of one, that shows one of some layers (`layers`, which the subclass gives for each
    inference).

    The session's state owns the layer: the panel shows the state's layer when it is one of `layers`, else the one it
    showed before (a ReLU picked in the overview keeps the convolution on screen), else the first; its menu sets the
    state's layer. The subclass draws the shown layer in `_show_layer`."""

    layer_label = "Layer"

    def __init__(self, model: str | None = None, **params):
        super().__init__(model=model, **params)
        self._model: object = None
        self.layers: list[str] = []
        self.layer: str | None = None  # the layer shown: derived from the state, never set by a control
        self.layer_menu = keep_in_step(pn.widgets.Select(label=self.layer_label, options=[], width=220))
        self.layer_menu.param.watch(self._picked, "value")

    def _show_layer(self) -> None:
        """Draw `self.layer` (it changed)."""
        raise NotImplementedError

    def _choose_layer(self, names: list[str]) -> bool:
        """After a new inference: the model's `names` become the choices and one of them the layer shown (None when
        there is none). True when it is the layer shown before: a new input keeps the layer, a new model takes the
        session's layer, else the first."""
        inference = self.state.inference
        new_model, self._model = inference.model is not self._model, inference.model
        keep = self.layer in names and not new_model
        if not keep:
            self.layer = self.state.layer if self.state.layer in names else names[0] if names else None
        self.layers = names
        # the menu shows it (`_picked` sees no change), each layer by what it does, its module name in brackets
        model = inference.model.module
        self.layer_menu.param.update(options={labelled_name(model, n): n for n in names}, value=self.layer)
        return keep

    def _picked(self, event) -> None:
        if event.new in self.layers and event.new != self.layer:
            self.state.layer = event.new

    @follows("state.layer")
    def _follow_layer(self) -> None:
        # Only among this model's layers: a panel catching up after a model switch may run this before it has
        # followed the new inference (whose own follower takes the session's layer).
        state = self.state
        if self._model is state.inference.model and state.layer in self.layers and state.layer != self.layer:
            self.layer = state.layer
            with one_update():
                self.layer_menu.value = self.layer
                self._show_layer()

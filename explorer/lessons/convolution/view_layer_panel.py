"""The base of the convolution lesson's receptive-field and filter-atlas tabs: lessons of their own (a tour, an error
pane), one layer at a time, in step with the session's layer."""

from __future__ import annotations

from explorer.session.lesson import Lesson
from explorer.session.state import follows


class LayerPanel(Lesson):
    """A part of a lesson that shows one of some layers; the subclass declares the `layer` Selector."""

    def __init__(self, model: str | None = None, **params):
        super().__init__(model=model, **params)
        self._model: object = None

    def _choose_layer(self, names: list[str]) -> tuple[str | None, bool]:
        """After a new inference: the layer to show among `names` (None: there is none), and whether it is the one
        shown before. A new input keeps the layer; a new model takes the session's layer, else the first."""
        inference = self.state.inference
        new_model, self._model = inference.model is not self._model, inference.model
        if not names:
            return None, False
        keep = self.layer in names and not new_model
        return (self.layer if keep else self.state.layer if self.state.layer in names else names[0]), keep

    @follows("state.layer")
    def _follow_layer(self) -> None:
        # Only among this model's layers: a panel catching up after a model switch may run this before it has
        # followed the new inference (whose own follower takes the session's layer).
        if self._model is self.state.inference.model and self.state.layer in self.param.layer.objects:
            self.layer = self.state.layer

"""The one state object of a session: the chosen model, input, lesson, layer and channel.

Every view reads `state.inference` (computed once per change of model or input) and writes only
the parameters it owns: the input picker calls `set_input`, the overview sets `layer`/`channel`/
`lesson`, the model picker `model`. The shell syncs `model`, `lesson`, `layer`, `channel` and `input` (the input as
a link names it, explorer/core/input_link.py) with the URL (explorer/ui/link.py).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import panel as pn
import param
import torch

from explorer.core import images, input_link, trace, zoo
from explorer.core.shared_results import TRACES, input_digest, model_token
from explorer.errors import InputError
from explorer.serve import recompute, validation

LESSON_NAMES = ("convolution", "normalization", "attention", "pruning", "quantization", "saliency")


@dataclass(frozen=True, eq=False)
class Inference:
    """Everything the views show about one (model, input) pair, computed once."""

    model: zoo.ZooModel
    source: object          # what the user gave: bytes, an array, Strokes, ...
    description: str        # "MNIST test digit 7 (#1234)", "upload: cat.png", "your drawing"
    view: np.ndarray        # what the model sees before normalization: uint8 (H, W) or (H, W, 3)
    x: torch.Tensor         # (1, C, H, W), normalized
    trace: trace.Trace
    probs: torch.Tensor     # (classes,)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        values, indices = self.probs.topk(min(k, len(self.probs)))
        return [(self.model.labels[int(i)], float(v)) for v, i in zip(values, indices, strict=True)]


def infer(model: zoo.ZooModel, source: object, description: str) -> Inference:
    """Preprocess, trace and classify one input; InputError if the input cannot be used."""
    view = images.model_view(source, model.card)
    x = images.view_to_input(view, model.card)
    # a class clicks the same gallery digits: one trace per model and input for every session of the process
    t = TRACES.get((model_token(model), input_digest(x)), lambda: model.trace(x))
    return Inference(model, source, description, view, x, t, t.logits[0].softmax(-1))


@contextlib.contextmanager
def one_update(adding_views: bool = False) -> Iterator[None]:
    """Wrap all the changes of one interaction: they reach the page as one message, and Bokeh does not re-validate
    every value set where the server is tuned (explorer/serve/validation.py). Make no Bokeh model inside, or only
    within `making_models()`: without validation Bokeh also skips the conversions it does on assignment.

    `adding_views` for an update that gives several layouts new views (a lesson being built): Bokeh then walks the
    page's models once, at the end, instead of once per layout (explorer/serve/recompute.py). Not for other
    updates: the walk at the end happens whether or not a view was added."""
    with pn.io.hold(), recompute.once(adding_views), validation.unvalidated():
        yield


making_models = validation.making_models


class Deferrer(Protocol):
    """What the state defers work to: `run(key, work)` now, or once the page has painted (the served shell gives
    explorer.ui.after_paint.AfterPaint). A newer `work` under the same key replaces a waiting one."""

    def run(self, key: Hashable, work: Callable[[], None]) -> None: ...


class ExplorerState(param.Parameterized):
    """Shared by every view of one session; never shared between sessions."""

    model = param.Selector(default="mnist-cnn", objects=["mnist-cnn"], doc="Zoo model name.")
    lesson = param.Selector(default="convolution", objects=list(LESSON_NAMES), doc="Open lesson.")
    layer = param.String(default="", doc="Trace record name of the selected layer.")
    channel = param.Integer(default=0, bounds=(0, None), doc="Selected channel (or head) of the layer.")
    inference = param.ClassSelector(class_=Inference, allow_None=True, doc="Current model + input result.")
    error = param.String(default="", doc="Message for the student about the last input, or ''.")
    input = param.String(default="", doc="The input as a link names it: 'gallery:<key>', 'drawing:<code>', or '' "
                                         "for one a link cannot hold (an upload, a camera picture).")

    def __init__(self, **params):
        model = params.pop("model", None)
        super().__init__(**params)
        # The page's AfterPaint when served in the shell (a Deferrer): the views that follow the state update after
        # the page has painted what the control changed (explorer/ui/after_paint.py). None: at once.
        self.after_paint: Deferrer | None = None
        # The session's served document, set by the shell as it builds the page (None in a notebook or a test): the
        # one document this session's slow work answers to, whatever callback asks (explorer/session/work.py)
        self.document = None
        self._named: tuple[Inference | None, str] = (None, "")  # (inference, its name for `input`), see _name_input
        names = zoo.list(available_only=True)
        self.param.model.objects = names
        if model is not None:
            self.model = model  # validated against the available models
        elif self.model not in names:
            self.model = names[0]

    def refresh_models(self) -> None:
        """Re-read the zoo after a fetch or an upload registered a model."""
        self.param.model.objects = zoo.list(available_only=True)

    def set_input(self, source: object, description: str) -> bool:
        """Use a new input with the current model; on a bad input keep the previous one and set `error`."""
        try:
            result = infer(zoo.load(self.model), source, description)
        except InputError as e:
            self.error = str(e)
            return False
        self.error = ""
        self._set_inference(result)
        return True

    @param.depends("model", watch=True)
    def _model_changed(self) -> None:
        if self.input and self.input != self._named[1]:  # a link names the input too, set before or after the model
            self._show_named_input(otherwise=self._keep_or_default_input)
        else:
            self._keep_or_default_input()

    def _keep_or_default_input(self) -> None:
        model = zoo.load(self.model)
        previous = self.inference
        same_kind = previous is not None and previous.model.card.preprocess == model.card.preprocess
        if not (same_kind and self.set_input(previous.source, previous.description)):
            source, description = default_input(model)
            self.set_input(source, description)

    @param.depends("inference", watch=True)
    def _name_input(self) -> None:
        self._named = (self.inference, input_link.name_of(self.inference.source, self.inference.model.card))
        self.input = self._named[1]

    @param.depends("input", watch=True)
    def _input_named(self) -> None:
        if self.input and (self.inference is None or self._named != (self.inference, self.input)):
            self._show_named_input(otherwise=self.ensure)

    def _show_named_input(self, otherwise: Callable[[], object]) -> None:
        """Show the input that `input` names (a link's). When it cannot be shown, `otherwise()` shows one, and `error`
        says why: after it, since a new input clears the error."""
        model = zoo.load(self.model)
        try:
            result = infer(model, *input_link.input_named(self.input, model.card))
        except InputError as e:
            self.input = self._named[1]
            otherwise()
            self.error = f"The link's input cannot be shown: {e}"
            return
        self.error = ""
        self._set_inference(result)

    def _set_inference(self, result: Inference) -> None:
        layer = self.layer if self.layer in result.trace.names else first_layer(result.trace)
        with one_update():  # every view's changes for this input go to the page as one message
            self.param.update(layer=layer, inference=result)

    def ensure(self) -> Inference:
        """The current inference, computing the model's default input on first use."""
        if self.inference is None:
            source, description = default_input(zoo.load(self.model))
            if not self.set_input(source, description):
                raise InputError(self.error)
        return self.inference


class SessionView(pn.viewable.Viewer):
    """A view of one session's state. Alone (in a notebook) it makes its own: `View(model="mnist-vit")`;
    several views given one `state` stay in step and share one loaded model.

    A view that is not on screen (a lesson in a closed tab) does not follow the state: its `follows`
    methods are put off, and run once, together, when it is shown again. Every input change would
    otherwise recompute and repaint every lesson the student ever opened."""

    state = param.ClassSelector(class_=ExplorerState, constant=True, doc="The session's shared state.")
    shown = param.Boolean(default=True, doc="On screen; set by the container (the lesson tabs).")

    def __init__(self, model: str | None = None, **params):
        state = params.get("state") or ExplorerState()
        params["state"] = state
        if model is not None:
            state.model = model
        state.ensure()  # before the subclass's watchers exist: its figures are built after this
        self._put_off: dict[str, None] = {}  # names of the `follows` methods to run when shown (in order)
        self._followed: dict[str, tuple] = {}  # per `follows` method: the state values it last ran for
        super().__init__(**params)

    @param.depends("shown", watch=True)
    def _catch_up(self) -> None:
        if self.shown and self._put_off:
            names, self._put_off = list(self._put_off), {}
            with one_update():
                for name in names:
                    getattr(self, name)()


def follows(*dependencies: str):
    """`param.depends(*dependencies, watch=True)` for a SessionView method that follows the session's state. While
    the view is hidden the call is put off (once, however many changes come) until it is shown. In the served
    shell, a call because the state changed runs after the page has painted the interaction's own changes
    (state.after_paint); a call because one of the view's own parameters changed (its own controls) runs at once."""
    watched = tuple(d.removeprefix("state.") for d in dependencies if d.startswith("state."))

    def decorate(method):
        name = method.__name__

        @functools.wraps(method)
        def call(self: SessionView) -> None:
            if not self.shown:
                self._put_off[name] = None
            elif self.state.after_paint is None or self._followed.get(name) == _seen(self, watched):
                _follow_now(self, method, watched)
            else:  # shown may change before then (a lesson switch): checked again when it runs
                self.state.after_paint.run((id(self), name), lambda: _follow_now(self, method, watched))

        return param.depends(*dependencies, watch=True)(call)

    return decorate


def _seen(view: SessionView, watched: tuple[str, ...]) -> tuple:
    return tuple(getattr(view.state, name) for name in watched)


def _follow_now(view: SessionView, method, watched: tuple[str, ...]) -> None:
    if not view.shown:
        view._put_off[method.__name__] = None
        return
    view._followed[method.__name__] = _seen(view, watched)
    method(view)


def first_layer(t: trace.Trace) -> str:
    """The layer a lesson opens on: the first convolution, else the first record."""
    conv = t.of_kind("conv")
    return (conv[0] if conv else t.records[0]).name


def default_input(model: zoo.ZooModel) -> tuple[object, str]:
    """The gallery's first image for this model's kind of input."""
    from explorer.core.gallery import gallery_for

    item = gallery_for(model.card)[0]
    return item.source, item.description

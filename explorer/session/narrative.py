"""Guided narratives: a short sequence of steps (Prev / Next), each setting controls and saying what to look at.

A lesson's tour sets the lesson's own settings and the session's (its layer and channel), which the state owns: the
`shared` names of a step go to the state, under the state's name for them, the rest to the lesson.

A tour starts when the student asks for it (Next), not when the page opens: a step's text is shown only with its
settings applied, and opening a lesson never moves the student's own choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import panel as pn
import param

from explorer.session.state import one_update


@dataclass(frozen=True)
class Step:
    title: str
    text: str                                            # Markdown: what to look at, and why
    # Parameter values to apply to the target; a callable value is called with the target, so that a
    # step can name e.g. "the deepest convolution" of whatever model is loaded.
    settings: Mapping[str, object] = field(default_factory=dict)


class Narrative(pn.viewable.Viewer):
    """Steps through `steps`, applying each step's settings to `target` (a param.Parameterized); the settings named in
    `shared` (step name -> the state's parameter) to `state` instead."""

    index = param.Integer(default=-1, bounds=(-1, None), doc="The step shown (from 0); -1 before the tour starts.")

    def __init__(self, steps: tuple[Step, ...], target: param.Parameterized, title: str = "Guided tour",
                 state: param.Parameterized | None = None, shared: Mapping[str, str] | None = None, **params):
        if not steps:
            raise ValueError("a narrative needs at least one step")
        if shared and state is None:
            raise ValueError("a narrative that sets shared settings needs the state that owns them")
        self._steps, self._target, self._state, self._shared = steps, target, state, dict(shared or {})
        self._title = pn.pane.Markdown(f"#### {title}", margin=(0, 10))
        self._text = pn.pane.Markdown("", sizing_mode="stretch_width", css_classes=["narrative-text"])
        self._prev = pn.widgets.Button(label="◀ Prev", width=90, description="Previous step")
        self._next = pn.widgets.Button(label="Next ▶", width=90, color="primary", description="Next step")
        self._position = pn.pane.Str("", margin=(12, 10), css_classes=["narrative-position"])
        super().__init__(**params)
        self.param.index.bounds = (-1, len(steps) - 1)
        self._prev.on_click(lambda _: self._go(-1))
        self._next.on_click(lambda _: self._go(+1))
        self._show()

    def _go(self, delta: int) -> None:
        self.index = min(max(self.index + delta, 0), len(self._steps) - 1)

    @property
    def started(self) -> bool:
        return self.index >= 0

    @param.depends("index", watch=True)
    def _apply(self) -> None:
        if not self.started:
            self._show()
            return
        step = self._steps[self.index]
        settings = {k: v(self._target) if callable(v) else v for k, v in step.settings.items()}
        shared = {self._shared[k]: settings.pop(k) for k in list(settings) if k in self._shared}
        with one_update():
            self._target.param.update(**settings)
            if shared:
                self._state.param.update(**shared)
            self._show()

    def _show(self) -> None:
        n = len(self._steps)
        if self.started:
            step = self._steps[self.index]
            self._text.object = f"**{self.index + 1}. {step.title}**\n\n{step.text}"
            self._position.object = f"{self.index + 1} / {n}"
        else:
            self._text.object = (f"{n} steps. **Next ▶** starts the tour: each step sets the controls and says what "
                                 "to look at.")
            self._position.object = f"0 / {n}"
        self._prev.disabled = self.index <= 0
        self._next.disabled = self.index == len(self._steps) - 1

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self._title, self._text, pn.Row(self._prev, self._position, self._next),
                         sizing_mode="stretch_width", css_classes=["narrative"])

"""Guided narratives: a short sequence of steps (Prev / Next), each setting controls and saying what to look at.

A lesson's tour sets the lesson's own settings and the session's (its layer and channel), which the state owns: the
`shared` names of a step go to the state, under the state's name for them, the rest to the lesson.

A tour starts when the student asks for it (Next), not when the page opens: a step's text is shown only with its
settings applied, and opening a lesson never moves the student's own choices. A step that names a `section` (a CSS
class the view puts on that part of the page) scrolls it into view on arrival: the lessons are long, and a step
that talks about a figure out of sight reads as wrong. A step's text may be a function of the target, so that it
says what is true of the loaded model ("digit" or "picture", a trend measured on the curves shown).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import panel as pn
import param
from panel.custom import JSComponent

from explorer.session.state import ExplorerState, one_update


@dataclass(frozen=True)
class Step:
    title: str
    # Markdown: what to look at, and why; a callable is called with the target once the settings are applied
    text: str | Callable[[object], str]
    # Parameter values to apply to the target; a callable value is called with the target, so that a
    # step can name e.g. "the deepest convolution" of whatever model is loaded.
    settings: Mapping[str, object] = field(default_factory=dict)
    section: str | None = None                           # CSS class of the part of the page the step is about


def input_noun(state: ExplorerState) -> str:
    """What the loaded model's inputs are, in a word: a handwritten "digit" (an MNIST card), else a "picture"."""
    return "digit" if state.ensure().model.card.preprocess == "mnist" else "picture"


class Reveal(JSComponent):
    """An empty line that, each time `count` grows, scrolls smoothly to the top of the window: itself, or the first
    element on screen with the CSS class `section` (searched through Bokeh's shadow roots), kept clear of a bar stuck
    to the window's top above it."""

    count = param.Integer(default=0, doc="Times asked to bring something into view.")
    section = param.String(default="", doc="CSS class of the element to bring into view; '' for this line itself.")

    _esm = """
    const WAIT_MS = 3000  // a section in a tab the same message opens is drawn a few frames later

    function shown(el) { return el.getClientRects().length > 0 }

    function find(root, selector) {  // the first shown match, in document order, through shadow roots
      for (const el of root.querySelectorAll(selector)) if (shown(el)) return el
      for (const el of root.querySelectorAll("*")) {
        if (el.shadowRoot) {
          const hit = find(el.shadowRoot, selector)
          if (hit) return hit
        }
      }
      return null
    }

    function stickyAbove(el) {  // the height of an ancestor stuck to the window's top (across shadow roots), or 0
      for (let node = el; node; node = node.parentNode || node.host) {
        if (node instanceof Element) {
          const style = getComputedStyle(node)
          if (style.position === "sticky" && style.top !== "auto") return node.getBoundingClientRect().height
        }
      }
      return 0
    }

    export function render({ model }) {
      const mark = document.createElement("div")
      let asked = 0
      model.on("count", () => {
        const ask = ++asked
        const started = performance.now()
        function attempt() {
          if (ask !== asked) return  // a newer step took over
          // read here, not in the event: `section` may arrive after `count` in the same message
          const target = model.section ? find(document, `.${CSS.escape(model.section)}`) : mark
          if (!target) {
            if (performance.now() - started < WAIT_MS) requestAnimationFrame(attempt)
            return
          }
          target.style.scrollMarginTop = `${stickyAbove(mark) + 8}px`
          target.scrollIntoView({ behavior: "smooth", block: "start" })
        }
        requestAnimationFrame(attempt)
      })
      return mark
    }
    """


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
        self._position = pn.pane.Str("", margin=(12, 10), css_classes=["narrative-position"],
                                     stylesheets=["pre { font-size: 14px; }"])  # Bootstrap's <pre> is 10.5 px
        self._reveal = Reveal(height=0, margin=0, sizing_mode="stretch_width")
        self._layout = pn.Column(self._title, self._text, pn.Row(self._prev, self._position, self._next),
                                 self._reveal, sizing_mode="stretch_width", css_classes=["narrative"])
        super().__init__(**params)
        self.param.index.bounds = (-1, len(steps) - 1)
        self._prev.on_click(lambda _: self.step(-1))
        self._next.on_click(lambda _: self.step(+1))
        if state is not None:
            state.param.watch(self._new_input, "inference")
        self._show()

    @property
    def steps(self) -> tuple[Step, ...]:
        return self._steps

    def step(self, delta: int) -> None:
        """Go `delta` steps forward (back when negative), within the tour: what Prev / Next and ←/→ do."""
        self.index = min(max(self.index + delta, 0), len(self._steps) - 1)

    @property
    def started(self) -> bool:
        return self.index >= 0

    def _new_input(self, event: param.parameterized.Event) -> None:
        """Another input: the step's words, which may read it, again. Another model: the tour starts over, since the
        step's settings (its layers) were chosen for the model before."""
        old, new = event.old, event.new
        if self.started and old is not None and new is not None and old.model is not new.model:
            self.index = -1
        else:
            self._show()

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
            if step.section:
                self._reveal.param.update(section=step.section, count=self._reveal.count + 1)

    def _show(self) -> None:
        n = len(self._steps)
        if self.started:
            step = self._steps[self.index]
            self._text.object = f"**{self.index + 1}. {step.title}**\n\n{self.text(step)}"
            self._position.object = f"{self.index + 1} / {n}"
        else:
            self._text.object = (f"{n} steps. **Next ▶** starts the tour: each step sets the controls and says what "
                                 "to look at.")
            self._position.object = f"0 / {n}"
        self._prev.disabled = self.index <= 0
        self._next.disabled = self.index == len(self._steps) - 1

    def text(self, step: Step) -> str:
        """The step's words for the target as it is now."""
        return step.text(self._target) if callable(step.text) else step.text

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

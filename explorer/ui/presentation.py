"""Presentation mode: the page for a projector, from one switch in the header or `?present=1` in the URL.

Presenting hides the sidebar and the explanatory paragraphs (Markdown panes with the CSS class `explanation`),
draws text at 24 px, and lets ←/→ step the open lesson's tour. It is one class on the page's <html>, set by the
switch in the page: nothing is laid out again from Python, and the figures that stretch take the sidebar's width.

Panel draws each component in a shadow root, out of reach of the page's stylesheet (presentation.css). Inherited
properties cross that boundary: the text size goes in through Bokeh's font-size variable, and a custom property
tells the rule that hides explanations, which the template's design puts inside every Markdown pane, that the page
is presenting (a container style query: where a browser lacks them, the explanations stay).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import panel as pn
import param
from panel.custom import JSComponent
from panel.theme import Bootstrap
from panel.theme.base import Inherit

PRESENTATION_CSS = Path(__file__).with_name("presentation.css")  # the page's rules while presenting
URL_KEY = "present"
EXPLANATION_RULE = "@container style(--explorer-presenting: 1) { :host(.explanation) { display: none !important; } }"
STEPS = (-1, 1)  # what a key press may ask of the tour


class PresentationDesign(Bootstrap):
    """Panel's Bootstrap design, with the rule that hides an explanation while presenting inside every Markdown pane
    (its own shadow root is the only place a rule about its host can live)."""

    modifiers = {pn.pane.Markdown: {"stylesheets": [Inherit, EXPLANATION_RULE]}}


class UrlFlag(param.Boolean):
    """A Boolean written 1 or 0 in the URL (`?present=1`), which reads true and false as well."""

    @classmethod
    def serialize(cls, value: bool) -> int:
        return int(value)

    @classmethod
    def deserialize(cls, value: object) -> bool:
        if value not in (0, 1):  # True and False compare equal to 1 and 0
            raise ValueError(f"a flag in the URL is 1 or 0, got {value!r}")
        return bool(value)


class PresentationSwitch(JSComponent):
    """The header's switch: sets the `presenting` class on the page, and while presenting turns ←/→ (outside a text
    field, a menu or a slider, which use them) into `on_step(-1)` / `on_step(+1)` on the server."""

    present = UrlFlag(default=False, doc="Whether the page is in presentation mode.")

    _esm = """
    // Where the arrow keys already mean something: typing, a menu, a slider's handle.
    const USES_ARROWS = "input, textarea, select, [contenteditable]:not([contenteditable='false']), " +
                        "[role='slider'], [role='spinbutton'], [role='listbox'], [role='combobox']"

    export function render({ model }) {
      const button = document.createElement("button")
      button.type = "button"
      button.className = "present-button"
      button.textContent = "Present"
      function show() {
        document.documentElement.classList.toggle("presenting", model.present)
        button.setAttribute("aria-pressed", String(model.present))
        button.title = model.present ? "Back to the full page"
          : "For a projector: hide the sidebar and the explanations, enlarge the text; ←/→ step the tour"
      }
      button.addEventListener("click", () => { model.present = !model.present })
      function onKey(event) {
        const delta = { ArrowLeft: -1, ArrowRight: 1 }[event.key]
        if (!model.present || delta === undefined || event.altKey || event.ctrlKey || event.metaKey || event.shiftKey)
          return
        const target = event.composedPath()[0]  // the focused element itself, inside its shadow root
        if (target instanceof Element && target.closest(USES_ARROWS)) return
        event.preventDefault()  // the page does not scroll sideways as well
        model.send_msg({ step: delta })
      }
      document.addEventListener("keydown", onKey)
      model.on("present", show)
      model.on("remove", () => {
        document.removeEventListener("keydown", onKey)
        document.documentElement.classList.remove("presenting")
      })
      show()
      return button
    }
    """

    _stylesheets = ["""
    .present-button { font: inherit; font-size: 15px; padding: 4px 14px; color: #fff; cursor: pointer;
                           background: transparent; border: 1px solid #fff; border-radius: 16px; white-space: nowrap; }
    .present-button:hover { background: rgba(255, 255, 255, 0.15); }
    .present-button:focus-visible { outline: 2px solid #fff; outline-offset: 2px; }
    .present-button[aria-pressed="true"] { background: #fff; color: #0072B2; font-weight: 600; }
    """]

    def __init__(self, on_step: Callable[[int], None], **params):
        self._on_step = on_step
        super().__init__(**params)

    def _handle_msg(self, msg: object) -> None:
        step = msg.get("step") if isinstance(msg, dict) else None
        if step not in STEPS:
            raise ValueError(f"the presentation switch sends a step of -1 or 1, got {msg!r}")
        self._on_step(step)


def add_presentation_mode(template: pn.template.BaseTemplate, on_step: Callable[[int], None]) -> PresentationSwitch:
    """Put the switch in `template`'s header and its rules in the page, and keep `?present=` in the URL in step with
    it (the template must have been made with `design=PresentationDesign`). `on_step(delta)` steps the tour."""
    if not issubclass(template.design, PresentationDesign):
        raise ValueError(f"presentation mode needs a template made with design=PresentationDesign, not "
                         f"{template.design.__name__}: only that design hides the explanations")
    switch = PresentationSwitch(on_step=on_step, margin=(0, 10), align="center")
    template.header.append(switch)
    template.config.raw_css.append(PRESENTATION_CSS.read_text())
    if pn.state.location is not None:
        pn.state.location.sync(switch, {"present": URL_KEY})
    return switch

"""Presentation mode: the page for a projector, from one switch in the header or `?present=1` in the URL.

Presenting hides the sidebar and the explanatory paragraphs (Markdown panes with the CSS class `explanation`),
draws text at 24 px, enlarges the figures, and lets ←/→ step the open lesson's tour. It is one class on the page's
<html>, set by the switch in the page: nothing is laid out again from Python. The figures that stretch take the
sidebar's width; those of a fixed size (and the boxes and widgets laid out with them) grow by one factor, up to 1.5,
as far as the widest of them still fits the window. The switch sets their sizes in the page only, so that the server
hears nothing of it but the size reports Bokeh sends after any resize. CSS `zoom` would be one line, but Bokeh
measures its elements with getBoundingClientRect, which zoom scales: in Chromium 156 a zoomed figure was laid out at
its zoomed size and zoomed again, and its hover tool missed the glyphs (bokeh#12312).

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
    const MOST = 1.5       // the largest enlargement: beyond it a figure's labels, which keep their size, look lost
    const GROW_STEP = 0.1  // a larger factor is taken only when it gains this much, so that figures do not twitch
    const SETTLE_MS = 100  // after a change to the page, before measuring it

    // Every fixed width and height of the main area (figures, the boxes and widgets laid out with them) grows by one
    // factor while presenting: set in the page only, so that the server hears nothing and lays nothing out again, and
    // Bokeh lays the figures out at their new size, its hover and tap tools with them.
    function makeEnlarger(document_, onFitted) {
      const natural = new WeakMap()  // model -> {size: its value from the server}, for every size enlarged
      const connections = []
      let factor = 1
      let writing = false

      function roots() {
        const main = document.getElementById("main")
        return Bokeh.index.roots.filter((root) => main.contains(root.el))
      }
      function* views() {  // the main area's views, down to the figures (not inside them)
        const walk = function* (view) {
          yield view
          if (!("frame_width" in view.model.properties))
            for (const child of view.children()) yield* walk(child)
        }
        for (const root of roots()) yield* walk(root)
      }
      // The sizes a model fixes: a figure sized by its frame fixes the frame's (its outer size is then unused).
      function fixedSizes(model) {
        const mode = model.properties.sizing_mode === undefined ? "stretch_both" : model.sizing_mode
        const fixed = {width: [null, "fixed", "stretch_height"].includes(mode),
                       height: [null, "fixed", "stretch_width"].includes(mode)}
        const sizes = []
        for (const outer of ["width", "height"]) {
          const frame = `frame_${outer}`
          const size = frame in model.properties && model[frame] != null ? frame : outer
          if (fixed[outer] && typeof model[size] === "number" && model[size] > 0) sizes.push(size)
        }
        return sizes
      }
      // Silent: Bokeh lays out the whole page again on every size that changes (50 ms here), so enlarge() writes
      // them all unheard and then lays the page out once.
      function enlarged(model, size) {  // rounded down: a row of rounded-up sizes could end past the window
        return Math.floor(natural.get(model)[size] * factor)
      }
      function write(model, size, silent) {
        writing = true
        try { model.setv({[size]: enlarged(model, size)}, {sync: false, silent}) }
        finally { writing = false }
      }
      function remember(model, size) {
        if (!natural.has(model)) natural.set(model, {})
        const sizes = natural.get(model)
        if (size in sizes) return
        sizes[size] = model[size]
        // A size the server sends later (a lesson fitting its figure to new data) is the new natural one.
        const signal = model.properties[size].change
        const slot = () => {
          if (writing) return
          sizes[size] = model[size]
          if (factor !== 1) write(model, size, false)
        }
        signal.connect(slot)
        connections.push([signal, slot])
      }
      function enlarge(newFactor) {
        factor = newFactor
        let changed = false
        for (const view of views()) for (const size of fixedSizes(view.model)) {
          remember(view.model, size)
          if (view.model[size] !== enlarged(view.model, size)) {
            write(view.model, size, true)
            changed = true
          }
        }
        if (changed) for (const root of roots()) root.invalidate_layout()
      }
      // The largest factor (up to MOST) at which the widest fixed thing shown still ends inside the main area, and
      // smaller than now if anything shown (text in a box that fits its content) ends past it. What a box scrolls
      // sideways on purpose (the overview's strip of a deep model) may go on past it, if it did at its own size.
      function fittingFactor() {
        const main = document.getElementById("main")
        const style = getComputedStyle(main)
        const left = main.getBoundingClientRect().left + parseFloat(style.paddingLeft)
        const room = main.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)
        let extent = 0  // where the widest fixed thing ends at its own size
        let reach = 0   // where anything ends now
        for (const view of views()) {
          if (typeof view.el?.checkVisibility !== "function" || !view.el.checkVisibility()) continue  // not drawn
          const box = view.el.getBoundingClientRect()
          const right = box.right - left
          if (right / factor > room && scrollsSideways(view)) continue
          reach = Math.max(reach, right)
          const sizes = fixedSizes(view.model)
          if (!sizes.some((size) => size.endsWith("width"))) continue
          if (sizes.includes("width") && Math.abs(box.width - view.model.width) > 2)
            continue  // the page's stylesheet sizes it (a box as wide as the page), not its width
          extent = Math.max(extent, right / factor)
        }
        const fitting = extent > 0 ? room / extent : MOST
        const past = reach > room + 1 ? factor * room / reach : MOST  // a pixel: layout rounds to fractions of one
        return Math.max(1, Math.min(MOST, fitting, past))
      }
      function scrollsSideways(view) {
        return view.parent != null && ["auto", "scroll"].includes(getComputedStyle(view.parent.el).overflowX)
      }
      function fitted() { requestAnimationFrame(() => onFitted(factor)) }  // once the figures are laid out anew
      function fit() {
        if (!active) return  // turned off between the timer and the frame
        const fitting = fittingFactor()
        // Smaller as soon as something ends past the window; larger only by a step worth laying the page out again
        enlarge(factor === 1 || fitting < factor || fitting > factor + GROW_STEP ? fitting : factor)
        fitted()
      }
      let timer = null
      let active = false
      function later() {  // at most one fit per SETTLE_MS, even while the page changes without a pause
        if (active && timer === null) timer = setTimeout(() => { timer = null; requestAnimationFrame(fit) }, SETTLE_MS)
      }
      const onChange = () => { if (!writing) later() }  // new figures, a tab opened, a lesson switched
      const resized = new ResizeObserver(later)
      document_.on_change(onChange, true)
      resized.observe(document.getElementById("main"))
      return {
        set(presenting) {
          active = presenting
          if (presenting) later()
          else { clearTimeout(timer); timer = null; enlarge(1); fitted() }
        },
        remove() {
          active = false
          clearTimeout(timer)
          timer = null
          resized.disconnect()
          document_.remove_on_change(onChange)
          for (const [signal, slot] of connections) signal.disconnect(slot)
        },
      }
    }

    export function render({ model, view }) {
      const button = document.createElement("button")
      button.type = "button"
      button.className = "present-button"
      button.textContent = "Present"
      // The factor the figures are drawn at, for a test (or a curious teacher) to read
      const enlarger = makeEnlarger(view.model.document, (factor) => { button.dataset.enlargement = factor.toFixed(3) })
      function show() {
        document.documentElement.classList.toggle("presenting", model.present)
        button.setAttribute("aria-pressed", String(model.present))
        button.title = model.present ? "Back to the full page"
          : "For a projector: hide the sidebar and the explanations, enlarge the text and figures; ←/→ step the tour"
        enlarger.set(model.present)
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
        enlarger.set(false)
        enlarger.remove()
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

"""A drawing canvas for digits: white ink on black, like MNIST, for mouse, touch and pen.

The browser keeps the drawing and paints it; Python receives `strokes` (a list of strokes, each a
list of [x, y] canvas pixels from the top-left corner), throttled while a stroke is drawn (at most
once per `throttle_ms`) and always when a stroke ends or the canvas is cleared. `images.Strokes`
rasterizes the same polylines, with the same round caps and line width, for the model.
"""

from __future__ import annotations

import param
from panel.custom import JSComponent

from explorer.core import images


class DrawingCanvas(JSComponent):
    """A square canvas with a Clear button; `strokes` is the drawing, in canvas pixels."""

    strokes = param.List(default=[], doc="Polylines, each a list of [x, y] canvas pixels.")
    canvas_width = param.Integer(default=280, bounds=(16, images.MAX_SIDE), constant=True, doc="px")
    canvas_height = param.Integer(default=280, bounds=(16, images.MAX_SIDE), constant=True, doc="px")
    line_width = param.Number(default=images.DEFAULT_LINE_WIDTH, bounds=(1, None), constant=True, doc="px")
    throttle_ms = param.Integer(default=100, bounds=(0, None), doc="Least time between updates during a stroke.")
    label = param.String(default="Drawing area: draw a digit with the mouse, a finger or a pen.",
                         doc="What a screen reader announces for the canvas.")

    _esm = """
    const copy = (strokes) => strokes.map((s) => s.map((p) => [p[0], p[1]]))
    const round1 = (v) => Math.round(v * 10) / 10

    export function render({ model }) {
      const W = model.canvas_width, H = model.canvas_height
      const wrap = document.createElement("div")
      wrap.className = "drawing"
      const canvas = document.createElement("canvas")
      canvas.setAttribute("role", "img")
      canvas.setAttribute("aria-label", model.label)
      const ratio = window.devicePixelRatio || 1
      canvas.width = Math.round(W * ratio)
      canvas.height = Math.round(H * ratio)
      canvas.style.width = `${W}px`
      canvas.style.height = `${H}px`
      const clear = document.createElement("button")
      clear.type = "button"
      clear.className = "clear"
      clear.textContent = "Clear"
      wrap.append(canvas, clear)

      const ctx = canvas.getContext("2d")
      let strokes = copy(model.strokes)
      let current = null      // the stroke under the pointer, or null
      let timer = null
      let lastSent = 0

      function pen() {
        ctx.setTransform(ratio, 0, 0, ratio, 0, 0)
        ctx.lineCap = "round"
        ctx.lineJoin = "round"
        ctx.lineWidth = model.line_width
        ctx.strokeStyle = "white"
        ctx.fillStyle = "white"
      }
      function dot([x, y]) {
        ctx.beginPath()
        ctx.arc(x, y, model.line_width / 2, 0, 2 * Math.PI)
        ctx.fill()
      }
      function segment([x0, y0], [x1, y1]) {
        ctx.beginPath()
        ctx.moveTo(x0, y0)
        ctx.lineTo(x1, y1)
        ctx.stroke()
      }
      function paint() {
        ctx.setTransform(1, 0, 0, 1, 0, 0)
        ctx.fillStyle = "black"
        ctx.fillRect(0, 0, canvas.width, canvas.height)
        pen()
        for (const s of strokes) {
          dot(s[0])
          for (let i = 1; i < s.length; i++) segment(s[i - 1], s[i])
        }
      }
      // Live mode (explorer/ui/live.py) computes in the browser from every change, without waiting for the server.
      const announce = () => window.dispatchEvent(new CustomEvent("explorer:strokes",
        { detail: { strokes: copy(strokes), width: W, height: H, lineWidth: model.line_width } }))
      function send() {
        announce()
        clearTimeout(timer)
        timer = null
        lastSent = performance.now()
        model.strokes = copy(strokes)
      }
      function sendSoon() {  // throttled: at most one update per throttle_ms while drawing
        announce()
        if (timer !== null) return
        const wait = model.throttle_ms - (performance.now() - lastSent)
        if (wait <= 0) send()
        else timer = setTimeout(send, wait)
      }
      function point(e) {
        const r = canvas.getBoundingClientRect()
        return [round1((e.clientX - r.left) * W / r.width), round1((e.clientY - r.top) * H / r.height)]
      }

      canvas.addEventListener("pointerdown", (e) => {
        if (e.pointerType === "mouse" && e.button !== 0) return
        e.preventDefault()
        canvas.setPointerCapture(e.pointerId)
        current = [point(e)]
        strokes.push(current)
        pen()
        dot(current[0])
        sendSoon()
      })
      canvas.addEventListener("pointermove", (e) => {
        if (current === null) return
        e.preventDefault()
        const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e]
        for (const ev of (events.length ? events : [e])) {
          const p = point(ev), last = current[current.length - 1]
          if (Math.hypot(p[0] - last[0], p[1] - last[1]) < 1) continue  // sub-pixel jitter
          current.push(p)
          pen()
          segment(last, p)
        }
        sendSoon()
      })
      const end = () => {
        if (current === null) return
        current = null
        send()
      }
      canvas.addEventListener("pointerup", end)
      canvas.addEventListener("pointercancel", end)
      canvas.addEventListener("lostpointercapture", end)
      clear.addEventListener("click", () => {
        strokes = []
        current = null
        paint()
        send()
      })
      model.on("strokes", () => {  // set from Python (or echoed back): show it unless a stroke is under way
        if (current !== null) return
        strokes = copy(model.strokes)
        paint()
      })
      model.on("remove", () => clearTimeout(timer))
      paint()
      return wrap
    }
    """

    _stylesheets = ["""
    .drawing { display: flex; flex-direction: column; align-items: flex-start; gap: 6px; }
    .drawing canvas { touch-action: none; cursor: crosshair; border-radius: 4px; border: 1px solid #888; }
    .drawing .clear { font: inherit; padding: 4px 14px; border-radius: 4px; border: 1px solid #888;
                      background: var(--panel-surface-color, #fff); color: inherit; cursor: pointer; }
    .drawing .clear:focus-visible { outline: 2px solid #1f6feb; outline-offset: 2px; }
    """]

    def __init__(self, **params):
        params.setdefault("width", params.get("canvas_width", 280) + 4)
        params.setdefault("height", params.get("canvas_height", 280) + 40)
        super().__init__(**params)

    def to_strokes(self) -> images.Strokes | None:
        """The drawing for `images`, or None for an empty canvas; InputError if the data is invalid."""
        if not any(self.strokes):
            return None
        return images.Strokes(self.strokes, self.canvas_width, self.canvas_height, self.line_width)

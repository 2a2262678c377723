// The drawing canvas for digits: white ink on black, like MNIST, for mouse, touch and pen.
//
// One implementation for both pages: the static site calls `attachDrawing` on its own canvas (site.js), and the
// app's DrawingCanvas (explorer/ui/canvas.py) uses this file as its Panel component, through `render`.
// A drawing is a list of strokes, each a list of [x, y] canvas pixels from the top-left corner (0.1 px steps);
// explorer.core.images.Strokes rasterizes the same polylines, with the same round caps and line width.

const copy = (strokes) => strokes.map((s) => s.map((p) => [p[0], p[1]]))
const round1 = (v) => Math.round(v * 10) / 10

// Drawing on `canvas` (shown at width x height CSS px, sharp on high-DPI screens); a click on `clear` empties it.
// `changed(strokes, ended)` follows every change with a copy of the drawing: `ended` is false while a stroke
// grows, true when it ends or the drawing is cleared. Returns { strokes(): a copy, show(strokes): replace the
// drawing unless a stroke is under way }.
export function attachDrawing(canvas, clear, { width, height, lineWidth, strokes = [], changed = () => {} }) {
  const ratio = window.devicePixelRatio || 1
  canvas.width = Math.round(width * ratio)
  canvas.height = Math.round(height * ratio)
  canvas.style.width = `${width}px`
  canvas.style.height = `${height}px`
  const ctx = canvas.getContext("2d")
  strokes = copy(strokes)
  let current = null  // the stroke under the pointer, or null

  function pen() {
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0)
    ctx.lineCap = "round"
    ctx.lineJoin = "round"
    ctx.lineWidth = lineWidth
    ctx.strokeStyle = "white"
    ctx.fillStyle = "white"
  }
  function dot([x, y]) {
    ctx.beginPath()
    ctx.arc(x, y, lineWidth / 2, 0, 2 * Math.PI)
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
      if (s.length === 0) continue
      dot(s[0])
      for (let i = 1; i < s.length; i++) segment(s[i - 1], s[i])
    }
  }
  function point(e) {
    const r = canvas.getBoundingClientRect()
    return [round1((e.clientX - r.left) * width / r.width), round1((e.clientY - r.top) * height / r.height)]
  }

  canvas.addEventListener("pointerdown", (e) => {
    if (e.pointerType === "mouse" && e.button !== 0) return
    e.preventDefault()
    canvas.setPointerCapture(e.pointerId)
    current = [point(e)]
    strokes.push(current)
    pen()
    dot(current[0])
    changed(copy(strokes), false)
  })
  canvas.addEventListener("pointermove", (e) => {
    if (current === null) return
    e.preventDefault()
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e]
    let moved = false
    for (const ev of (events.length ? events : [e])) {
      const p = point(ev), last = current[current.length - 1]
      if (Math.hypot(p[0] - last[0], p[1] - last[1]) < 1) continue  // sub-pixel jitter
      current.push(p)
      pen()
      segment(last, p)
      moved = true
    }
    if (moved) changed(copy(strokes), false)
  })
  const end = () => {
    if (current === null) return
    current = null
    changed(copy(strokes), true)
  }
  canvas.addEventListener("pointerup", end)
  canvas.addEventListener("pointercancel", end)
  canvas.addEventListener("lostpointercapture", end)
  clear.addEventListener("click", () => {
    strokes = []
    current = null
    paint()
    changed([], true)
  })
  paint()
  return {
    strokes: () => copy(strokes),
    show(drawing) {
      if (current !== null) return
      strokes = copy(drawing)
      paint()
    },
  }
}

// The Panel component (explorer.ui.canvas.DrawingCanvas): sends `strokes` to Python at most once per throttle_ms
// while a stroke grows, and at once when it ends or the drawing is cleared. Every change is also announced on
// `window` as the `explorer:strokes` event, {strokes, width, height, lineWidth}, which live mode
// (explorer/ui/live.js) computes from without waiting for the server.
export function render({ model }) {
  const width = model.canvas_width, height = model.canvas_height, lineWidth = model.line_width
  const wrap = document.createElement("div")
  wrap.className = "drawing"
  const canvas = document.createElement("canvas")
  canvas.setAttribute("role", "img")
  canvas.setAttribute("aria-label", model.label)
  const clear = document.createElement("button")
  clear.type = "button"
  clear.className = "clear"
  clear.textContent = "Clear"
  wrap.append(canvas, clear)

  let timer = null, lastSent = 0
  function send() {
    clearTimeout(timer)
    timer = null
    lastSent = performance.now()
    model.strokes = drawing.strokes()
  }
  function changed(strokes, ended) {
    window.dispatchEvent(new CustomEvent("explorer:strokes", { detail: { strokes, width, height, lineWidth } }))
    if (ended) return send()
    if (timer !== null) return
    const wait = model.throttle_ms - (performance.now() - lastSent)
    if (wait <= 0) send()
    else timer = setTimeout(send, wait)
  }
  const drawing = attachDrawing(canvas, clear, { width, height, lineWidth, strokes: model.strokes, changed })
  model.on("strokes", () => drawing.show(model.strokes))  // set from Python (or echoed back)
  model.on("remove", () => clearTimeout(timer))
  return wrap
}

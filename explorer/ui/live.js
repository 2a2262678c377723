// Live mode (explorer.ui.live.LiveInference): the drawing's prediction and first-layer maps, computed in the browser.
//
// Listens to the drawing canvas's `explorer:strokes` event (explorer/web/static/canvas.js) and runs the model
// on each animation frame of a stroke, with the static site's scripts (runtime.js, mnist.js, painter.js),
// which Panel serves from `model.base_url` (explorer.web.bundle.OrtFiles).
// `window.explorerLive` holds the last input, logits and per-frame times, for tests and benchmarks.

const MAX_MAPS = 16  // channels of the first layer shown

export function render({ model }) {
  const root = document.createElement("div")
  root.className = "live"
  root.innerHTML = `<div class="head">Live, computed in your browser: <span class="status">loading…</span></div>
    <div class="bars"></div><div class="maps-title"></div><div class="maps"></div>
    <div class="timing" aria-live="off"></div>`
  const $ = (selector) => root.querySelector(selector)
  const live = (window.explorerLive = { runs: 0, frames: [], busy: false, error: null })
  let lib = null, runtime = null, session = null, latest = null, frame = null, busy = false, rasterizer = null

  async function start() {
    const base = new URL(model.base_url, document.baseURI).href
    const libs = await Promise.all(["runtime.js", "mnist.js", "painter.js"].map((f) => import(base + "static/" + f)))
    lib = Object.assign({}, ...libs)
    runtime = await lib.loadRuntime(base + "ort/")
    await load()
  }
  async function load() {
    session = null
    if (!model.onnx || runtime === null) return
    const bytes = Uint8Array.from(atob(model.onnx), (c) => c.charCodeAt(0))
    session = await lib.createSession(runtime, bytes)
    live.backend = runtime.backend
    $(".status").textContent = `${model.metadata.name}, onnxruntime-web (${runtime.backend})`
    if (latest !== null) schedule()
  }
  function mapsLayer() {
    return model.metadata.outputs.filter((o) => o.shape.length === 4 && o.kind !== "attention_probs").pop()
  }
  function paintMaps(outputs) {
    const layer = mapsLayer()
    if (!layer) return
    const [, channels, h, w] = layer.shape
    const values = outputs[layer.name].data
    const signed = layer.kind !== "activation"
    const limit = lib.maxAbs(values)  // one scale for the layer, so channels can be compared
    $(".maps-title").textContent = `${layer.layer} (${layer.kind}), first ${Math.min(channels, MAX_MAPS)} of ` +
      `${channels} channels; ` + (signed ? `blue < 0 < red, limit ±${limit.toPrecision(3)}`
                                          : `dark purple = 0, yellow = ${limit.toPrecision(3)}`)
    const canvases = $(".maps").children
    for (let c = 0; c < Math.min(channels, MAX_MAPS); c++) {
      let canvas = canvases[c]
      if (!canvas) {
        canvas = document.createElement("canvas")
        $(".maps").append(canvas)
      }
      lib.paintMap(canvas, values.subarray(c * h * w, (c + 1) * h * w), w, h, signed, limit, model.palettes)
    }
  }
  function schedule() {
    if (frame === null) frame = requestAnimationFrame(step)
  }
  async function step() {  // one frame: the latest drawing -> input -> model -> bars and maps
    frame = null
    if (busy || session === null || latest === null) return
    busy = live.busy = true
    const drawing = latest
    latest = null
    const start = performance.now()
    const { strokes, width, height, lineWidth } = drawing
    if (rasterizer === null || rasterizer.width !== width || rasterizer.height !== height ||
        rasterizer.lineWidth !== lineWidth) rasterizer = new lib.Rasterizer(width, height, lineWidth)
    const pixels = lib.greyToDigit(rasterizer.update(strokes), width, height)
    if (pixels === null) {
      $(".bars").replaceChildren()
      $(".maps").replaceChildren()
      $(".maps-title").textContent = "Draw a digit to see the live prediction."
    } else {
      const meta = model.metadata, input = lib.normalize(pixels, meta.input.mean[0], meta.input.std[0])
      const outputs = await lib.infer(runtime, session, meta.input.name, input, meta.input.shape)
      $(".bars").replaceChildren(...lib.probabilityBars(meta.labels, lib.softmax(outputs.logits.data)))
      paintMaps(outputs)
      const ms = performance.now() - start
      live.frames.push(ms)
      Object.assign(live, { input: Array.from(input), pixels: Array.from(pixels),
                            logits: Array.from(outputs.logits.data), strokes })
      const recent = live.frames.slice(-30).sort((a, b) => a - b)
      $(".timing").textContent = `drawing → input → model → bars and maps: ${ms.toFixed(1)} ms this frame, ` +
        `median ${recent[recent.length >> 1].toFixed(1)} ms over the last ${recent.length}`
      live.runs += 1
    }
    busy = live.busy = false
    if (latest !== null) schedule()
  }
  const listener = (event) => {
    latest = event.detail
    schedule()
  }
  window.addEventListener("explorer:strokes", listener)
  model.on("remove", () => window.removeEventListener("explorer:strokes", listener))
  model.on("onnx", () => load().catch(fail))
  function fail(error) {
    live.error = String(error)
    $(".status").textContent = `could not start onnxruntime-web: ${error}`
  }
  if (model.problem) $(".status").textContent = `unavailable: ${model.problem}`
  else start().catch(fail)
  return root
}

// The static explorer: draw a digit or pick one, and see what the model computes, all in this browser.
//
// Reads model.json (explorer.core.export metadata), data.json (sample digits, colour palettes, backends)
// and model.onnx; runs it with onnxruntime-web from ./ort/. For tests and benchmarks, `window.explorer`
// holds the last run's input, pixels, strokes, logits and outputs; `runs` counts finished forward passes.

import { attachDrawing } from "./canvas.js"
import { greyToDigit, normalize, Rasterizer, SIDE } from "./mnist.js"
import { maxAbs, paintMap, probabilityBars, softmax } from "./painter.js"
import { createSession, infer, loadRuntime } from "./runtime.js"

const LINE_WIDTH = 20  // px on the 280 px canvas, as the app's drawing canvas (images.DEFAULT_LINE_WIDTH)
const CANVAS = 280
const params = new URLSearchParams(location.search)
const $ = (id) => document.getElementById(id)
const state = (window.explorer = { runs: 0, busy: false, ready: false, source: null, strokes: null, error: null })

function paintGrey(canvas, pixels) {
  canvas.width = canvas.height = SIDE
  const ctx = canvas.getContext("2d")
  const image = ctx.createImageData(SIDE, SIDE)
  pixels.forEach((v, i) => image.data.set([v, v, v, 255], i * 4))
  ctx.putImageData(image, 0, 0)
}

function showPrediction(meta, logits) {
  const probs = softmax(logits)
  const best = probs.indexOf(Math.max(...probs))
  $("verdict").textContent = `The model says ${meta.labels[best]} (${(100 * probs[best]).toFixed(1)} %)`
  $("bars").replaceChildren(...probabilityBars(meta.labels, probs))
}

function featureLayers(meta) {
  return meta.outputs.filter((o) => o.shape.length === 4 && o.kind !== "attention_probs")
}

function showFeatureMaps(meta, outputs, palettes) {
  const layer = featureLayers(meta).find((o) => o.name === $("layer").value)
  if (!layer) return
  const [, channels, h, w] = layer.shape
  const values = outputs[layer.name].data
  const signed = layer.kind !== "activation"
  const limit = maxAbs(values)  // one scale for the whole layer, so channels can be compared
  $("maps-scale").textContent = signed
    ? `blue = negative, white = 0, red = positive; colour limit ±${limit.toPrecision(3)} (largest |value| in the layer)`
    : `dark purple = 0, yellow = ${limit.toPrecision(3)} (the largest value in the layer)`
  const cells = []
  for (let c = 0; c < channels; c++) {
    const figure = document.createElement("figure")
    const canvas = document.createElement("canvas")
    paintMap(canvas, values.subarray(c * h * w, (c + 1) * h * w), w, h, signed, limit, palettes)
    canvas.title = `channel ${c}`
    const caption = document.createElement("figcaption")
    caption.textContent = `${c}`
    figure.append(canvas, caption)
    cells.push(figure)
  }
  $("maps").replaceChildren(...cells)
}

// The class token's attention to each image patch, per block (rows) and head (columns), as the patch grid.
function showAttention(meta, outputs, palettes) {
  const blocks = meta.outputs.filter((o) => o.kind === "attention_probs")
  if (blocks.length === 0) return
  const [, heads, tokens] = blocks[0].shape
  const grid = Math.round(Math.sqrt(tokens - 1))
  const rows = blocks.map((block) => {
    const row = document.createElement("div")
    row.className = "att-row"
    const name = document.createElement("span")
    name.className = "att-name"
    name.textContent = block.layer.replace(".attn.probs", "").replace("blocks.", "block ")
    row.append(name)
    const probs = outputs[block.name].data
    for (let h = 0; h < heads; h++) {
      const cls = probs.subarray(h * tokens * tokens + 1, h * tokens * tokens + tokens)  // query 0 = class token
      const canvas = document.createElement("canvas")
      paintMap(canvas, cls, grid, grid, false, maxAbs(cls), palettes)
      canvas.title = `${name.textContent}, head ${h}: largest weight ${(100 * maxAbs(cls)).toFixed(1)} %`
      row.append(canvas)
    }
    return row
  })
  $("attention-heads").textContent = Array.from({ length: heads }, (_, h) => `head ${h}`).join(" · ")
  $("attention").replaceChildren(...rows)
  paintPatches($("patches"), grid)
}

// The input as the ViT cuts it: grid x grid patches, outlined, to read the attention maps against.
function paintPatches(canvas, grid) {
  const scale = 4, side = SIDE * scale, patch = side / grid
  canvas.width = canvas.height = side
  const ctx = canvas.getContext("2d")
  ctx.imageSmoothingEnabled = false
  ctx.drawImage($("seen"), 0, 0, side, side)
  ctx.strokeStyle = "#e8a33d"
  ctx.lineWidth = 1
  for (let i = 1; i < grid; i++) {
    ctx.beginPath()
    ctx.moveTo(i * patch + 0.5, 0); ctx.lineTo(i * patch + 0.5, side)
    ctx.moveTo(0, i * patch + 0.5); ctx.lineTo(side, i * patch + 0.5)
    ctx.stroke()
  }
}

async function main() {
  const [meta, data] = await Promise.all(["model.json", "data.json"].map((f) => fetch(f).then((r) => r.json())))
  $("title").textContent = `${meta.name}: ${meta.task}`
  document.title = `explorer: ${meta.name}`
  const runtime = await loadRuntime("ort/", { backends: data.backends, force: params.get("backend") })
  const session = await createSession(runtime, "model.onnx")
  Object.assign(state, { backend: runtime.backend, threads: runtime.threads, meta })
  $("runtime").textContent = `onnxruntime-web ${data.ort_version}, ${runtime.backend}` +
    (runtime.backend === "wasm" ? `, ${runtime.threads} thread${runtime.threads > 1 ? "s" : ""}` : "")

  const layers = featureLayers(meta)
  $("layer").replaceChildren(...layers.map((o) => new Option(`${o.layer} (${o.kind}, ${o.shape[1]} channels of ` +
    `${o.shape[2]}×${o.shape[3]})`, o.name)))
  $("maps-section").hidden = layers.length === 0
  $("attention-section").hidden = !meta.outputs.some((o) => o.kind === "attention_probs")

  const [mean, std] = [meta.input.mean[0], meta.input.std[0]]
  let busy = false, pending = null
  async function run(pixels, source, strokes = null) {  // one pass at a time; the latest request wins
    pending = { pixels, source, strokes }
    if (busy) return
    busy = state.busy = true
    while (pending !== null) {
      const job = pending
      pending = null
      paintGrey($("seen"), job.pixels)
      const input = normalize(job.pixels, mean, std)
      const outputs = await infer(runtime, session, meta.input.name, input, meta.input.shape)
      state.outputs = outputs
      showPrediction(meta, outputs.logits.data)
      showFeatureMaps(meta, outputs, data.palettes)
      showAttention(meta, outputs, data.palettes)
      Object.assign(state, { input, pixels: job.pixels, logits: Array.from(outputs.logits.data), source: job.source,
        strokes: job.strokes })
      state.runs += 1
    }
    busy = state.busy = false
  }
  $("layer").addEventListener("change", () => state.outputs && showFeatureMaps(meta, state.outputs, data.palettes))

  $("samples").replaceChildren(...data.samples.map((sample, i) => {
    const button = document.createElement("button")
    button.type = "button"
    button.title = `MNIST test image ${sample.index} (a ${sample.label})`
    button.setAttribute("aria-label", button.title)
    const thumb = document.createElement("canvas")
    paintGrey(thumb, sample.pixels)
    button.append(thumb)
    button.addEventListener("click", () => run(Uint8Array.from(sample.pixels), `sample:${i}`))
    return button
  }))

  const rasterizer = new Rasterizer(CANVAS, CANVAS, LINE_WIDTH)
  let frame = null, drawn = null
  function runDrawing() {  // at most once per animation frame while a stroke grows
    frame = null
    const pixels = greyToDigit(rasterizer.update(drawn), CANVAS, CANVAS)
    if (pixels === null) {
      $("verdict").textContent = "The drawing is blank: draw a digit, white on black."
      return
    }
    run(pixels, "drawing", drawn)
  }
  attachDrawing($("draw"), $("clear"), { width: CANVAS, height: CANVAS, lineWidth: LINE_WIDTH,
    changed: (strokes, ended) => {
      if (strokes.length === 0) {  // cleared
        cancelAnimationFrame(frame)
        frame = null
        $("verdict").textContent = "Draw a digit, or pick a sample."
      } else if (!ended) {  // the end of a stroke adds no point: its last change is already on its way
        drawn = strokes
        if (frame === null) frame = requestAnimationFrame(runDrawing)
      }
    } })
  state.ready = true
  $("status").hidden = true
  run(Uint8Array.from(data.samples[0].pixels), "sample:0")
}

main().catch((error) => {
  state.error = String(error)
  $("status").hidden = false
  $("status").textContent = `Could not start the model: ${error}`
  console.error(error)
})

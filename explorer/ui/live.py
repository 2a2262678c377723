"""Live mode: while a student draws, the prediction and the first layer's activations, computed in the browser.

onnxruntime-web (wasm, or WebGPU where the browser has it) runs the model exported by
explorer.core.export on every animation frame of a stroke: no server round trip. The drawing comes
from the app's DrawingCanvas as a DOM event on `window`, `explorer:strokes`, whose `detail` is
`{strokes, width, height, lineWidth}` (canvas pixels, as DrawingCanvas.strokes), sent on every change.
The drawing is converted exactly as the server does (explorer/web/static/mnist.js, tested against
explorer.core.images), so the live numbers equal the server's trace, which still drives the lessons.

The onnxruntime files and the shared page scripts are served by Panel's component resource route
(explorer.web.bundle.OrtFiles): plain `panel serve app.py` needs no flags or static folders.
`window.explorerLive` holds the last input, logits and per-frame times, for tests and benchmarks.
"""

from __future__ import annotations

import base64
import functools
import json
import tempfile
from pathlib import Path

import panel as pn
import param
from panel.custom import JSComponent

from explorer.core import export, zoo
from explorer.errors import InputError
from explorer.web import bundle, site


@functools.lru_cache(maxsize=4)
def exported(name: str) -> tuple[str, dict]:
    """`name` as ONNX (base64) with its first feature maps, and its metadata: made once per process."""
    model = zoo.load(name)
    probes = set(export.attention_probes(model.module))
    layers = [layer for layer in export.default_layers(model.module) if layer not in probes][:2]
    with tempfile.TemporaryDirectory() as tmp:
        metadata = json.loads(export.export_model(model, tmp, layers).read_text())
        onnx = base64.b64encode((Path(tmp) / export.MODEL_FILE).read_bytes()).decode()
    return onnx, metadata


class LiveInference(JSComponent):
    """Live prediction bars and first-layer maps for the drawing on the page, computed in the browser."""

    network = param.Selector(default="mnist-cnn", objects=["mnist-cnn", "mnist-vit"],
                             doc="The zoo model to run (an MNIST model: the drawing is a digit).")
    onnx = param.String(default="", doc="The exported model, base64; set from `network`.")
    metadata = param.Dict(default={}, doc="explorer.core.export metadata of `onnx`.")
    palettes = param.Dict(default={}, doc="The lessons' colour maps as RGB triples.")
    base_url = param.String(default="", doc="Where OrtFiles are served, relative to the page.")
    problem = param.String(default="", doc="Why live mode cannot run here (e.g. onnxruntime-web not installed).")

    _esm = """
    const MAX_MAPS = 16  // channels of the first layer shown

    function colour(palette, t) {
      return palette[Math.min(palette.length - 1, Math.max(0, Math.floor(t * palette.length)))]
    }

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
        const [runtimeLib, mnistLib] = await Promise.all([import(base + "static/runtime.js"),
                                                          import(base + "static/mnist.js")])
        lib = { ...runtimeLib, ...mnistLib }
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
      function paintBars(logits) {
        const top = Math.max(...logits)
        const e = Array.from(logits, (v) => Math.exp(v - top))
        const total = e.reduce((a, b) => a + b, 0)
        const best = e.indexOf(Math.max(...e))
        $(".bars").replaceChildren(...model.metadata.labels.map((label, i) => {
          const row = document.createElement("div")
          row.className = "bar" + (i === best ? " best" : "")
          const p = (100 * e[i]) / total
          row.innerHTML = `<span>${label}</span><span class="track"><span class="fill"` +
            ` style="width:${p.toFixed(2)}%"></span></span><span class="value">${p.toFixed(1)} %</span>`
          return row
        }))
      }
      function paintMaps(outputs) {
        const layer = mapsLayer()
        if (!layer) return
        const [, channels, h, w] = layer.shape
        const values = outputs[layer.name].data
        const signed = layer.kind !== "activation"
        let limit = 0
        for (const v of values) limit = Math.max(limit, Math.abs(v))
        limit = limit || 1
        $(".maps-title").textContent = `${layer.layer} (${layer.kind}), first ${Math.min(channels, MAX_MAPS)} of ` +
          `${channels} channels; ` + (signed ? `blue < 0 < red, limit ±${limit.toPrecision(3)}`
                                              : `dark purple = 0, yellow = ${limit.toPrecision(3)}`)
        const palette = signed ? model.palettes.diverging : model.palettes.sequential
        const canvases = $(".maps").children
        for (let c = 0; c < Math.min(channels, MAX_MAPS); c++) {
          let canvas = canvases[c]
          if (!canvas) {
            canvas = document.createElement("canvas")
            $(".maps").append(canvas)
          }
          canvas.width = w
          canvas.height = h
          const ctx = canvas.getContext("2d")
          const image = ctx.createImageData(w, h)
          for (let i = 0; i < w * h; i++) {
            const v = values[c * h * w + i]
            image.data.set([...colour(palette, signed ? (v + limit) / (2 * limit) : v / limit), 255], i * 4)
          }
          ctx.putImageData(image, 0, 0)
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
          paintBars(outputs.logits.data)
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
    """

    _stylesheets = ["""
    .live { font-size: 0.92em; display: flex; flex-direction: column; gap: 4px; }
    .live .head { font-weight: 600; }
    .live .status { font-weight: normal; color: #555; }
    .live .bar { display: grid; grid-template-columns: 1.2em 140px 4em; gap: 6px; align-items: center; height: 18px; }
    .live .track { background: #eee; height: 11px; border-radius: 2px; overflow: hidden; }
    .live .fill { display: block; height: 100%; background: #7a9cc6; }
    .live .bar.best .fill { background: #1f5fa8; }
    .live .value { text-align: right; font-variant-numeric: tabular-nums; }
    .live .maps { display: grid; grid-template-columns: repeat(8, 34px); gap: 3px; }
    .live .maps canvas { width: 34px; height: 34px; image-rendering: pixelated; border: 1px solid #ccc; }
    .live .maps-title, .live .timing { color: #555; }
    """]

    def __init__(self, **params):
        params.setdefault("palettes", site.palettes())
        params.setdefault("base_url", f"{pn.state.rel_path}/{bundle.app_url_path()}" if pn.state.rel_path
                          else bundle.app_url_path())
        try:
            bundle.prepare_app_copy()
        except InputError as error:  # the rest of the app works without live mode
            params.setdefault("problem", str(error))
        super().__init__(**params)

    @param.depends("network", watch=True, on_init=True)
    def _export(self) -> None:
        self.onnx, self.metadata = exported(self.network)

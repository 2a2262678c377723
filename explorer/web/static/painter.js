// Feature maps and prediction bars in the browser, for the static site (site.js) and the app's live mode
// (explorer/ui/live.js).
//
// `palettes` is {diverging, sequential}: the lessons' colour maps as [r, g, b] triples (explorer.web.site.palettes).
// Signed values use the diverging map, centred on white at 0; others the sequential one (viridis), from 0.

// t in [0, 1] -> [r, g, b], as Bokeh's LinearColorMapper indexes a palette.
export function colour(palette, t) {
  return palette[Math.min(palette.length - 1, Math.max(0, Math.floor(t * palette.length)))]
}

// The largest |value|, or 1 for all zeros: the colour limit of a map.
export function maxAbs(values) {
  let top = 0
  for (const v of values) top = Math.max(top, Math.abs(v))
  return top > 0 ? top : 1
}

// RGBA bytes of a map's values: signed ones over [-limit, limit], others over [0, limit]; beyond, the end colours.
export function rgba(values, signed, limit, palettes) {
  const palette = signed ? palettes.diverging : palettes.sequential
  const out = new Uint8ClampedArray(values.length * 4)
  for (let i = 0; i < values.length; i++) {
    const [r, g, b] = colour(palette, signed ? (values[i] + limit) / (2 * limit) : values[i] / limit)
    out.set([r, g, b, 255], i * 4)
  }
  return out
}

// A 2-D map (w * h values, values[y * w + x]) into a w x h canvas, coloured by `rgba`.
export function paintMap(canvas, values, w, h, signed, limit, palettes) {
  canvas.width = w
  canvas.height = h
  canvas.getContext("2d").putImageData(new ImageData(rgba(values, signed, limit, palettes), w, h), 0, 0)
}

export function softmax(logits) {
  const top = Math.max(...logits)
  const e = Array.from(logits, (v) => Math.exp(v - top))
  const total = e.reduce((a, b) => a + b, 0)
  return e.map((v) => v / total)
}

// One row per class: label, a bar as long as its probability, and the probability in %; the best has class "best".
export function probabilityBars(labels, probs) {
  const best = probs.indexOf(Math.max(...probs))
  return labels.map((label, i) => {
    const row = document.createElement("div")
    row.className = "bar" + (i === best ? " best" : "")
    const percent = 100 * probs[i]
    row.innerHTML = `<span class="label">${label}</span><span class="track"><span class="fill"` +
      ` style="width:${percent.toFixed(2)}%"></span></span><span class="value">${percent.toFixed(1)} %</span>`
    return row
  })
}

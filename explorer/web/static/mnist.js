// A drawing or an MNIST digit as the model's input: a port of explorer.core.images for "mnist" models.
//
// Same steps and constants as the server: strokes drawn 4x larger then averaged down (images.rasterize),
// ink below 10% of the brightest dropped, the ink's bounding box scaled so that its larger side is 20 px
// (Pillow's BOX filter when shrinking, BILINEAR when enlarging, ported exactly), placed in the 28x28 field
// with its centre of mass at (14, 14), rounded to 0..255, then (x / 255 - mean) / std in float32.
// One difference: the 4x drawing is rasterized by the browser's canvas (antialiased) rather than by
// Pillow's ImageDraw (aliased), so pixels along the stroke edges differ by a few grey levels.

export const SIDE = 28, BOX = 20, CENTRE = 14, INK_FRACTION = 0.1, MIN_CONTRAST = 0.1, SUPERSAMPLE = 4

const f32 = Math.fround

// Python's round(): halves go to the even neighbour.
export function roundHalfEven(x) {
  const r = Math.round(x)
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r
}

// White round-capped strokes on black, drawn SUPERSAMPLE times larger and averaged down to canvas size (grey
// levels 0..255, Float32Array, row-major). Incremental: while a stroke grows, `update` draws only the new
// segments and reads back only the rectangle they touched, so a frame costs little however large the canvas.
export class Rasterizer {
  constructor(width, height, lineWidth) {
    Object.assign(this, { width, height, lineWidth })
    this.canvas = new OffscreenCanvas(width * SUPERSAMPLE, height * SUPERSAMPLE)
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true })
    this.reset()
  }

  reset() {
    const ctx = this.ctx
    ctx.setTransform(1, 0, 0, 1, 0, 0)
    ctx.fillStyle = "black"
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height)
    ctx.setTransform(SUPERSAMPLE, 0, 0, SUPERSAMPLE, 0, 0)
    ctx.strokeStyle = ctx.fillStyle = "white"
    ctx.lineWidth = this.lineWidth
    ctx.lineCap = ctx.lineJoin = "round"
    this.grey = new Float32Array(this.width * this.height)
    this.drawn = []  // points drawn so far, per stroke
  }

  // The drawing for `strokes`; strokes that only grew since the last call are drawn incrementally.
  update(strokes) {
    const grown = strokes.length >= this.drawn.length && this.drawn.every((n, i) => strokes[i].length >= n)
    if (!grown) this.reset()
    const r = this.lineWidth / 2 + 1
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity
    strokes.forEach((stroke, i) => {
      const from = this.drawn[i] ?? 0
      for (let j = from; j < stroke.length; j++) {  // each new point: a segment from the previous one, and a dot
        const [x, y] = stroke[j]
        if (j > 0) {
          this.ctx.beginPath()
          this.ctx.moveTo(...stroke[j - 1])
          this.ctx.lineTo(x, y)
          this.ctx.stroke()
        }
        this.ctx.beginPath()
        this.ctx.arc(x, y, this.lineWidth / 2, 0, 2 * Math.PI)
        this.ctx.fill()
        for (const [px, py] of j > 0 ? [stroke[j - 1], stroke[j]] : [stroke[j]]) {
          x0 = Math.min(x0, px - r); y0 = Math.min(y0, py - r); x1 = Math.max(x1, px + r); y1 = Math.max(y1, py + r)
        }
      }
      this.drawn[i] = stroke.length
    })
    if (x1 >= x0) this.reduce(x0, y0, x1, y1)
    return this.grey
  }

  // Average SUPERSAMPLE x SUPERSAMPLE blocks of the large canvas into `grey`, over a canvas-pixel rectangle.
  reduce(x0, y0, x1, y1) {
    const s = SUPERSAMPLE, n = s * s
    const left = Math.max(0, Math.floor(x0)), top = Math.max(0, Math.floor(y0))
    const right = Math.min(this.width, Math.ceil(x1) + 1), bottom = Math.min(this.height, Math.ceil(y1) + 1)
    if (right <= left || bottom <= top) return
    const w = (right - left) * s
    const big = this.ctx.getImageData(left * s, top * s, w, (bottom - top) * s).data  // RGBA; R is the grey level
    for (let y = top; y < bottom; y++) {
      for (let x = left; x < right; x++) {
        let sum = 0
        for (let dy = 0; dy < s; dy++) {
          let at = (((y - top) * s + dy) * w + (x - left) * s) * 4
          for (let dx = 0; dx < s; dx++, at += 4) sum += big[at]
        }
        this.grey[y * this.width + x] = Math.floor((sum + n / 2) / n)  // Pillow's reduce() rounds
      }
    }
  }
}

export function rasterize(strokes, width, height, lineWidth) {
  return new Rasterizer(width, height, lineWidth).update(strokes)
}

const FILTERS = {
  box: { support: 0.5, weight: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  bilinear: { support: 1, weight: (x) => Math.max(0, 1 - Math.abs(x)) },
}

// Pillow's precompute_coeffs (libImaging/Resample.c): per output pixel, the first input index and weights.
function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize, filterScale = Math.max(scale, 1), support = filter.support * filterScale
  const result = []
  for (let i = 0; i < outSize; i++) {
    const centre = (i + 0.5) * scale
    const lo = Math.max(0, Math.trunc(centre - support + 0.5)), hi = Math.min(inSize, Math.trunc(centre + support + 0.5))
    const weights = []
    for (let x = lo; x < hi; x++) weights.push(filter.weight((x - centre + 0.5) / filterScale))
    const total = weights.reduce((a, b) => a + b, 0)
    result.push({ lo, weights: total === 0 ? weights : weights.map((w) => w / total) })
  }
  return result
}

// One pass of Pillow's resize of a mode "F" image along rows (horizontal) or columns: double sums stored as float32.
function resizePass(img, width, height, outSize, filter, horizontal) {
  const cs = coefficients(horizontal ? width : height, outSize, filter)
  const outW = horizontal ? outSize : width, outH = horizontal ? height : outSize, next = new Float32Array(outW * outH)
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const { lo, weights } = cs[horizontal ? x : y]
      let sum = 0
      weights.forEach((k, j) => { sum += img[horizontal ? y * width + lo + j : (lo + j) * width + x] * k })
      next[y * outW + x] = sum
    }
  }
  return next
}

// Pillow's resize (13 and later): horizontal pass, then vertical, except when the height loses more than twice as
// many pixels as the width; then the vertical pass goes first, and the last bit of a value can differ.
export function resize(pixels, w, h, outW, outH, filterName) {
  const filter = FILTERS[filterName]
  const verticalFirst = h - outH > 0 && h - outH > (w - outW) * 2
  let img = pixels
  if (verticalFirst && outH !== h) img = resizePass(img, w, h, outH, filter, false)
  if (outW !== w) img = resizePass(img, w, verticalFirst ? outH : h, outW, filter, true)
  if (!verticalFirst && outH !== h) img = resizePass(img, outW, h, outH, filter, false)
  return img
}

// images.mnist_digit: white-on-black ink (Float32Array, w x h, values 0..1) -> 28x28 grey levels
// (Uint8Array), or null when the ink is too faint (a blank drawing).
export function mnistDigit(ink, w, h) {
  let brightest = 0
  for (let i = 0; i < ink.length; i++) if (ink[i] > brightest) brightest = ink[i]
  if (brightest < MIN_CONTRAST) return null
  const threshold = f32(INK_FRACTION * brightest), kept = new Float32Array(ink.length)
  let top = h, bottom = -1, left = w, right = -1
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = ink[y * w + x]
      if (v > threshold) {
        kept[y * w + x] = v / brightest
        if (y < top) top = y
        bottom = y
        if (x < left) left = x
        if (x > right) right = x
      }
    }
  }
  const ch = bottom - top + 1, cw = right - left + 1
  const crop = new Float32Array(ch * cw)
  for (let y = 0; y < ch; y++) crop.set(kept.subarray((top + y) * w + left, (top + y) * w + left + cw), y * cw)
  const scale = BOX / Math.max(ch, cw)
  const dh = Math.max(1, roundHalfEven(ch * scale)), dw = Math.max(1, roundHalfEven(cw * scale))
  const digit = resize(crop, cw, ch, dw, dh, scale < 1 ? "box" : "bilinear").map((v) => Math.min(1, Math.max(0, v)))
  let total = 0, rowMoment = 0, colMoment = 0
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) {
      const v = digit[y * dw + x]
      total += v; rowMoment += v * y; colMoment += v * x
    }
  }
  const row0 = Math.min(Math.max(roundHalfEven(CENTRE - rowMoment / total), 0), SIDE - dh)
  const col0 = Math.min(Math.max(roundHalfEven(CENTRE - colMoment / total), 0), SIDE - dw)
  const field = new Uint8Array(SIDE * SIDE)
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) field[(row0 + y) * SIDE + col0 + x] = roundHalfEven(f32(digit[y * dw + x] * 255))
  }
  return field
}

// Grey levels 0..255 of a drawing (canvas size) -> 28x28 grey levels, or null when blank.
export function greyToDigit(grey, width, height) {
  return mnistDigit(grey.map((v) => v / 255), width, height)  // a Float32Array: each value rounded to float32
}

// A drawing (strokes in canvas pixels) -> 28x28 grey levels, or null when blank.
export function drawingToDigit(strokes, width, height, lineWidth) {
  return greyToDigit(rasterize(strokes, width, height, lineWidth), width, height)
}

// Grey levels 0..255 -> the model input, (x / 255 - mean) / std with float32 rounding at each step as in torch.
export function normalize(pixels, mean, std) {
  const m = f32(mean), s = f32(std)
  return Float32Array.from(pixels, (v) => f32(f32(f32(v / 255) - m) / s))
}

// --- A photo of a digit (the app's camera input) -------------------------------------------------------------

// Pillow's convert("L") of RGBA bytes (alpha ignored): ITU-R 601-2 luma in Pillow's fixed point,
// (19595 R + 38470 G + 7471 B + 0x8000) >> 16, as Uint8Array grey levels.
export function greyLevels(rgba) {
  const grey = new Uint8Array(rgba.length / 4)
  for (let i = 0; i < grey.length; i++) {
    grey[i] = (rgba[4 * i] * 19595 + rgba[4 * i + 1] * 38470 + rgba[4 * i + 2] * 7471 + 0x8000) >>> 16
  }
  return grey
}

// NumPy's median of float32 values: the middle one, or the float32 mean of the two middle ones.
function median(values) {
  const sorted = Float32Array.from(values).sort(), half = sorted.length >> 1
  return sorted.length % 2 ? sorted[half] : f32(f32(sorted[half - 1] + sorted[half]) / 2)
}

// images._border: a frame about 5% of the smaller side wide (corners counted twice, as the server does).
function border(values, w, h) {
  const t = Math.max(1, Math.floor(Math.min(w, h) / 20)), out = []
  for (let y = 0; y < t; y++) for (let x = 0; x < w; x++) out.push(values[y * w + x])
  for (let y = h - t; y < h; y++) for (let x = 0; x < w; x++) out.push(values[y * w + x])
  for (let y = 0; y < h; y++) for (let x = 0; x < t; x++) out.push(values[y * w + x])
  for (let y = 0; y < h; y++) for (let x = w - t; x < w; x++) out.push(values[y * w + x])
  return out
}

// images._digit_ink for an opaque photo: grey levels (w x h) -> white-on-black ink in [0, 1] above the paper's
// level (Float32Array), and whether the photo was dark ink on light paper (then inverted, as MNIST is light on dark).
export function digitInk(grey, w, h) {
  let level = Float32Array.from(grey, (v) => v / 255)
  const darkOnLight = median(border(level, w, h)) > 0.5
  if (darkOnLight) level = level.map((v) => 1 - v)
  const paper = median(border(level, w, h))
  return { ink: level.map((v) => Math.min(1, Math.max(0, v - paper))), darkOnLight }
}

// Otsu's threshold of grey levels (0..255), ported from scikit-image's threshold_otsu on an integer image (one
// histogram bin per level from the darkest to the lightest, counts in float32 as there): the level t that best
// splits the pixels into two classes, <= t and > t. A one-level image gives that level.
export function otsuThreshold(grey) {
  let lo = 255, hi = 0
  for (const v of grey) { if (v < lo) lo = v; if (v > hi) hi = v }
  if (lo === hi) return lo
  const n = hi - lo + 1, counts = new Float64Array(n)
  for (const v of grey) counts[v - lo] += 1
  const weight1 = new Float64Array(n), mean1 = new Float64Array(n)  // the class <= level i
  const weight2 = new Float64Array(n), mean2 = new Float64Array(n)  // the class >= level i
  let count = 0, moment = 0
  for (let i = 0; i < n; i++) {
    count += counts[i]; moment += counts[i] * (lo + i)
    weight1[i] = count; mean1[i] = moment / count
  }
  count = 0; moment = 0
  for (let i = n - 1; i >= 0; i--) {
    count += counts[i]; moment += counts[i] * (lo + i)
    weight2[i] = count; mean2[i] = moment / count
  }
  let best = 0, bestVariance = -Infinity
  for (let i = 0; i < n - 1; i++) {
    const variance = f32(weight1[i] * weight2[i + 1]) * (mean1[i] - mean2[i + 1]) ** 2  // float32 weights' product
    if (variance > bestVariance) { best = i; bestVariance = variance }
  }
  return lo + best
}

// A camera frame (RGBA bytes, w x h) -> 28x28 grey levels, or null when blank: the server's conversion of a photo
// of a digit (grey levels, ink above the paper, images.mnist_digit), with one step added before placing the digit:
// ink on the paper's side of Otsu's threshold is dropped, so that shadows and uneven light are not read as ink.
export function cameraDigit(rgba, w, h) {
  const grey = greyLevels(rgba), { ink, darkOnLight } = digitInk(grey, w, h), t = otsuThreshold(grey)
  for (let i = 0; i < ink.length; i++) if (darkOnLight ? grey[i] > t : grey[i] <= t) ink[i] = 0
  return mnistDigit(ink, w, h)
}

// The camera input (explorer.ui.camera.CameraInput): the camera's picture, a live prediction for MNIST models, and
// "Take picture", which sends the frame's centre square to the server as a PNG file.
//
// The camera runs only while `model.active` is true and the page is visible; otherwise every track is stopped.
// Frames never leave the page except through "Take picture". The shared page scripts (runtime.js, mnist.js,
// painter.js) and onnxruntime-web come from `model.base_url` (explorer.web.bundle.OrtFiles), as for live mode.
// `window.explorerCamera` holds the last frame, input, logits, per-frame times, frames per second, the last picture
// sent and the camera's tracks still live, for tests and benchmarks.

const RATE_WINDOW_MS = 1000  // frames per second: frames predicted over the last second
const KEPT_TIMES = 1000  // per-frame times kept in window.explorerCamera.frames

// What to tell the student for each way getUserMedia fails (DOMException names).
const CAMERA_ERRORS = {
  NotFoundError: "No camera was found. Connect a camera (or use a device that has one), then open this tab again.",
  OverconstrainedError: "No camera here can give a picture. Connect another camera, then open this tab again.",
  NotAllowedError: "The camera is blocked for this page. Allow it in the browser's site settings (the camera " +
    "icon in the address bar), then open this tab again.",
  NotReadableError: "The camera is in use by another program, or the system refused it. Close the other " +
    "program, then open this tab again.",
}

// Why a page cannot ask for the camera at all: browsers offer it only to secure contexts.
function insecureMessage() {
  return `The camera needs a secure page: open the app over https, or at http://localhost on the machine that ` +
    `runs it (this page is ${location.origin}, where the browser offers no camera).`
}

export function render({ model }) {
  const root = document.createElement("div")
  root.className = "camera"
  root.innerHTML = `<div class="frame"><video muted playsinline aria-label="The camera's picture"></video>
      <div class="aim"></div></div>
    <div class="message" role="alert"></div>
    <button type="button" class="take" disabled>Take picture</button>
    <div class="head">Live, computed in your browser: <span class="status"></span></div>
    <div class="seen"><canvas width="28" height="28" role="img" aria-label="What the model sees"></canvas>
      <span>what the model sees (28×28)</span></div>
    <div class="bars"></div><div class="rate" aria-live="off"></div>`
  const $ = (selector) => root.querySelector(selector)
  const video = $("video"), take = $(".take"), seen = $(".seen canvas")
  const capture = new OffscreenCanvas(model.capture_px, model.capture_px)
  const context = capture.getContext("2d", { willReadFrequently: true })
  const state = (window.explorerCamera = { runs: 0, frames: [], fps: 0, busy: false, streaming: false,
                                           message: "", pictures: 0, error: null })
  let lib = null, runtime = null, session = null, stream = null, starting = null, frameRequest = null, tracks = []
  state.liveTracks = () => tracks.filter((track) => track.readyState === "live").map((track) => track.kind)
  const done = []  // times of the frames predicted within the last RATE_WINDOW_MS

  function say(text) {
    state.message = $(".message").textContent = text
  }
  function showLive() {
    const on = Boolean(model.network)
    for (const el of [$(".head"), $(".seen"), $(".bars"), $(".rate")]) el.hidden = !on
    $(".aim").hidden = !on  // the square to hold a digit in
    if (!on) return
    $(".status").textContent = model.problem ? `unavailable: ${model.problem}`
      : session ? `${model.metadata.name}, onnxruntime-web (${runtime.backend})` : "loading…"
  }

  async function loadRuntime() {
    const base = new URL(model.base_url, document.baseURI).href
    const libs = await Promise.all(["runtime.js", "mnist.js", "painter.js"].map((f) => import(base + "static/" + f)))
    lib = Object.assign({}, ...libs)
    runtime = await lib.loadRuntime(base + "ort/")
    await loadModel()
  }
  async function loadModel() {
    session = null
    if (model.onnx && runtime !== null) {
      const bytes = Uint8Array.from(atob(model.onnx), (c) => c.charCodeAt(0))
      session = await lib.createSession(runtime, bytes)
      state.backend = runtime.backend
    }
    $(".bars").replaceChildren()
    showLive()
  }

  // The frame's centre square, drawn at capture_px a side: what is predicted and what "Take picture" sends.
  function grab() {
    const w = video.videoWidth, h = video.videoHeight, side = Math.min(w, h)
    context.drawImage(video, (w - side) / 2, (h - side) / 2, side, side, 0, 0, capture.width, capture.height)
  }

  async function predict() {  // one frame: centre square -> digit -> model -> bars
    const begin = performance.now()
    grab()
    const px = capture.width, rgba = context.getImageData(0, 0, px, px).data
    const pixels = lib.cameraDigit(rgba, px, px)
    const image = new ImageData(28, 28)
    if (pixels === null) {
      $(".bars").replaceChildren()
      Object.assign(state, { input: null, logits: null })
    } else {
      const meta = model.metadata, input = lib.normalize(pixels, meta.input.mean[0], meta.input.std[0])
      const outputs = await lib.infer(runtime, session, meta.input.name, input, meta.input.shape)
      $(".bars").replaceChildren(...lib.probabilityBars(meta.labels, lib.softmax(outputs.logits.data)))
      pixels.forEach((v, i) => image.data.set([v, v, v, 255], 4 * i))
      Object.assign(state, { input: Array.from(input), logits: Array.from(outputs.logits.data) })
    }
    seen.getContext("2d").putImageData(image, 0, 0)
    const end = performance.now()
    done.push(end)
    while (done[0] < end - RATE_WINDOW_MS) done.shift()
    state.frames.push(end - begin)
    if (state.frames.length > KEPT_TIMES) state.frames.shift()
    Object.assign(state, { rgba, pixels: pixels && Array.from(pixels), fps: done.length, runs: state.runs + 1 })
    $(".rate").textContent = `${done.length} frames per second; this frame: square → digit → model → bars ` +
      `${(end - begin).toFixed(1)} ms` + (pixels === null ? " (no digit: hold one inside the square)" : "")
  }
  function nextFrame() {  // one chain of frame requests, even when the camera restarts while a frame is predicted
    if (frameRequest !== null) return
    const step = async () => {
      frameRequest = null
      if (stream === null) return
      if (session !== null && video.videoWidth > 0 && !state.busy) {
        state.busy = true
        try {
          await predict()
        } catch (error) {
          state.error = String(error)
          $(".status").textContent = `the live prediction failed: ${error}`
        }
        state.busy = false
      }
      if (stream !== null) nextFrame()
    }
    // one prediction per new camera frame where the browser can tell, else per screen refresh
    frameRequest = video.requestVideoFrameCallback ? { video: video.requestVideoFrameCallback(step) }
                                                   : { animation: requestAnimationFrame(step) }
  }

  async function start() {
    if (stream !== null || starting !== null) return
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return say(insecureMessage())
    say("")
    starting = navigator.mediaDevices.getUserMedia({ audio: false, video: { width: { ideal: 640 },
                                                                           height: { ideal: 480 } } })
    try {
      const opened = await starting
      if (!wanted()) return opened.getTracks().forEach((track) => track.stop())  // left while asking
      stream = opened
      tracks = stream.getTracks()
      video.srcObject = stream
      await video.play()
      state.streaming = true
      take.disabled = false
      nextFrame()
    } catch (error) {
      stop()
      if (wanted()) say(CAMERA_ERRORS[error.name] ?? `The camera could not be started: ${error.name}, ${error.message}`)
    } finally {
      starting = null
    }
  }
  function stop() {
    if (frameRequest?.video !== undefined) video.cancelVideoFrameCallback(frameRequest.video)
    if (frameRequest?.animation !== undefined) cancelAnimationFrame(frameRequest.animation)
    frameRequest = null
    if (stream !== null) stream.getTracks().forEach((track) => track.stop())
    stream = null
    video.srcObject = null
    state.streaming = false
    take.disabled = true
    done.length = 0
  }
  const wanted = () => model.active && document.visibilityState === "visible"
  const follow = () => (wanted() ? start() : stop())

  take.addEventListener("click", async () => {
    if (stream === null) return
    grab()
    state.picture = context.getImageData(0, 0, capture.width, capture.height).data
    const blob = await capture.convertToBlob({ type: "image/png" })
    const bytes = new Uint8Array(await blob.arrayBuffer())
    let binary = ""
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000))
    state.pictures += 1
    model.send_msg({ name: "camera picture", size: bytes.length, data: btoa(binary) })
  })
  document.addEventListener("visibilitychange", follow)
  model.on("active", follow)
  model.on("onnx", () => loadModel().catch(fail))
  model.on("network", showLive)
  model.on("remove", () => {
    document.removeEventListener("visibilitychange", follow)
    stop()
  })
  function fail(error) {
    state.error = String(error)
    $(".status").textContent = `could not start onnxruntime-web: ${error}`
  }
  showLive()
  if (!model.problem) loadRuntime().catch(fail)
  follow()
  return root
}

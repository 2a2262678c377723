// onnxruntime-web from a local folder (never a CDN): WebGPU where the browser has it, else wasm.
//
// `base` is the folder (URL) holding the files explorer.web.bundle copies. Threads need
// SharedArrayBuffer, which browsers give only to cross-origin isolated pages (COOP + COEP headers):
// elsewhere one thread, which is also what a plain static file server gives.

const BUNDLES = { webgpu: "ort.webgpu.min.mjs", wasm: "ort.wasm.min.mjs" }

async function hasWebGPU() {
  if (!("gpu" in navigator)) return false
  try {
    return (await navigator.gpu.requestAdapter()) !== null
  } catch {
    return false
  }
}

// backends: what the folder holds, in order of preference; `force` picks one (e.g. "wasm" for benchmarks).
export async function loadRuntime(base, { backends = ["webgpu", "wasm"], force = null, threads = null } = {}) {
  const folder = new URL(base, document.baseURI).href
  let backend = force
  if (backend === null) backend = backends.includes("webgpu") && (await hasWebGPU()) ? "webgpu" : "wasm"
  const ort = await import(folder + BUNDLES[backend])
  ort.env.wasm.wasmPaths = folder
  ort.env.wasm.numThreads = threads ?? (self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1)
  ort.env.wasm.proxy = false
  return { ort, backend, threads: ort.env.wasm.numThreads }
}

export async function createSession(runtime, model) {
  const executionProviders = runtime.backend === "webgpu" ? ["webgpu", "wasm"] : ["wasm"]
  return runtime.ort.InferenceSession.create(model, { executionProviders, graphOptimizationLevel: "all" })
}

// One forward pass: a Float32Array input of `shape` -> {output name: {data, dims}} on the CPU.
export async function infer(runtime, session, inputName, input, shape) {
  const feeds = { [inputName]: new runtime.ort.Tensor("float32", input, shape) }
  const results = await session.run(feeds)
  const out = {}
  for (const [name, tensor] of Object.entries(results)) {
    out[name] = { data: tensor.location === "cpu" ? tensor.data : await tensor.getData(), dims: tensor.dims }
  }
  return out
}

"""In-browser inference latency (onnxruntime-web, wasm, one thread) against torch on the CPU, same model and input.

    python benchmarks/browser_inference.py [--repeats 200] [--models mnist-cnn mnist-vit] [--live-rounds 5]

For each model: the static site is exported (wasm only) and served by Python's http.server with the
cross-origin isolation headers (COOP + COEP), only so that performance.now() ticks in microseconds
rather than 0.1 ms. In Chromium, the page's own runtime.js loads onnxruntime-web (wasm, numThreads
forced to 1) and times each `session.run` on one MNIST test digit, for the model as exported for
the site (logits plus the feature and attention maps the page shows) and for the logits alone.
Torch runs the same module on the same input with torch.no_grad(), with one thread and with its
default threads; onnxruntime (Python, one thread) is shown for reference. After 20 uncounted warm-up
runs; prints median, p95 and best in ms, and the ratio of medians browser / torch (one thread).

Live mode (explorer.ui.live, served by `panel serve tests/browser/apps/live_app.py`): a "4" is drawn
with the mouse on the app's canvas, and each animation frame's time from the drawing to the updated
bars and maps (rasterize, preprocess, infer, update the DOM) is read from the page. Asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.core import data, export, zoo  # noqa: E402
from explorer.web import site  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402
from tests.browser.conftest import serve as panel_serve  # noqa: E402
from tests.browser.test_site import serve_isolated  # noqa: E402

WARMUP = 20
LOGITS_ONLY = "logits.onnx"

LIVE_APP = ROOT / "tests" / "browser" / "apps" / "live_app.py"
LIVE_STROKES = [[(90, 50), (70, 150), (190, 150)], [(170, 60), (170, 240)]]  # a "4", canvas pixels

# In the page: onnxruntime-web (wasm, one thread) from the site's ort/ folder; times `repeats` runs of a model.
TIME_IN_PAGE = """async ([model, input, repeats, warmup]) => {
  const { loadRuntime, createSession } = await import("./runtime.js")
  const runtime = await loadRuntime("ort/", { force: "wasm", threads: 1 })
  const session = await createSession(runtime, model)
  const feeds = { input: new runtime.ort.Tensor("float32", Float32Array.from(input), [1, 1, 28, 28]) }
  const logits = Array.from((await session.run(feeds)).logits.data)
  for (let i = 0; i < warmup; i++) await session.run(feeds)
  const times = []
  for (let i = 0; i < repeats; i++) {
    const start = performance.now()
    await session.run(feeds)
    times.push(performance.now() - start)
  }
  return { times, logits, backend: runtime.backend, threads: runtime.ort.env.wasm.numThreads,
           isolated: self.crossOriginIsolated }
}"""


def summary(times_ms: list[float]) -> str:
    """Median, p95 and best, three decimals: a forward pass takes about a millisecond; on a busy machine the best
    is the steadiest figure."""
    return (f"median {statistics.median(times_ms):7.3f} ms, p95 {statistics.quantiles(times_ms, n=20)[-1]:7.3f} ms, "
            f"best {min(times_ms):7.3f} ms")


def torch_times(module: torch.nn.Module, x: torch.Tensor, repeats: int, threads: int) -> list[float]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        with torch.no_grad():
            for i in range(WARMUP + repeats):
                start = time.perf_counter()
                module(x)
                if i >= WARMUP:
                    times.append((time.perf_counter() - start) * 1e3)
        return times
    finally:
        torch.set_num_threads(before)


def onnxruntime_times(path: Path, x: np.ndarray, repeats: int) -> list[float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    times = []
    for i in range(WARMUP + repeats):
        start = time.perf_counter()
        session.run(None, {export.INPUT_NAME: x})
        if i >= WARMUP:
            times.append((time.perf_counter() - start) * 1e3)
    return times


def live_frames(browser, name: str, rounds: int) -> list[float]:
    """Frame times (ms) of live mode while the mouse draws a "4", `rounds` times (cleared in between)."""
    with panel_serve(LIVE_APP) as url:
        page = browser.new_page()
        page.goto(f"{url}?model={name}")
        page.wait_for_function("window.explorerLive && window.explorerLive.backend", timeout=60_000)
        box = page.locator(".drawing canvas").bounding_box()
        for _ in range(rounds):
            for (x0, y0), *rest in LIVE_STROKES:
                page.mouse.move(box["x"] + 2 + x0, box["y"] + 2 + y0)
                page.mouse.down()
                for x, y in rest:
                    page.mouse.move(box["x"] + 2 + x, box["y"] + 2 + y, steps=30)
                page.mouse.up()
            page.locator(".drawing .clear").click()
        page.wait_for_timeout(300)
        frames = page.evaluate("window.explorerLive.frames")
        page.close()
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--models", nargs="+", default=["mnist-cnn", "mnist-vit"])
    parser.add_argument("--live-rounds", type=int, default=5, help="drawings per model in live mode (0: skip)")
    args = parser.parse_args()
    digits = data.mnist("sample")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        for name in args.models:
            model = zoo.load(name)
            x = data.normalize_digits(digits.images[:1], model.card.mean, model.card.std)  # (1, 1, 28, 28)
            folder = Path(tmp) / name
            site.build(name, folder, backends=("wasm",))
            export.to_onnx(model.module, folder / LOGITS_ONLY, x)
            module = copy.deepcopy(model.module).cpu().eval()  # the shared model stays where it is
            expected = module(x).detach().numpy().ravel()
            with serve_isolated(folder) as url:
                page = browser.new_page()
                page.goto(url)
                page.wait_for_function("window.explorer && window.explorer.runs > 0", timeout=60_000)
                print(f"\n{name}: one 28x28 digit, ms per forward pass (median, p95 over {args.repeats} runs)")
                torch_1 = torch_times(module, x, args.repeats, 1)
                for label, file in [("browser, site model (logits + maps)", export.MODEL_FILE),
                                    ("browser, logits only", LOGITS_ONLY)]:
                    got = page.evaluate(TIME_IN_PAGE, [file, x.ravel().tolist(), args.repeats, WARMUP])
                    gap = float(np.abs(np.array(got["logits"]) - expected).max())
                    assert got["backend"] == "wasm" and got["threads"] == 1 and got["isolated"], got
                    print(f"  {label:38s} {summary(got['times'])}   vs torch 1 thread: "
                          f"{statistics.median(got['times']) / statistics.median(torch_1):.2f}x   "
                          f"(max |logit - torch| {gap:.1e})")
                print(f"  {'torch CPU, 1 thread':38s} {summary(torch_1)}")
                print(f"  {f'torch CPU, {torch.get_num_threads()} threads':38s} "
                      f"{summary(torch_times(module, x, args.repeats, torch.get_num_threads()))}")
                print(f"  {'onnxruntime (Python), 1 thread, logits':38s} "
                      f"{summary(onnxruntime_times(folder / LOGITS_ONLY, x.numpy(), args.repeats))}")
                page.close()
            if args.live_rounds:
                frames = live_frames(browser, name, args.live_rounds)
                print(f"  {'live mode: drawing -> bars and maps':38s} {summary(frames)}   ({len(frames)} frames)")
        browser.close()


if __name__ == "__main__":
    main()

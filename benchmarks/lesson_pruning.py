"""The pruning lesson: time to complete curves on opening, slider repaint latency in Chromium, and the time of a
full accuracy sweep.

    python benchmarks/lesson_pruning.py [--repeats 20] [--models mnist-cnn mnist-vit] [--sweeps 3]

Opening: from the page's request until its curve source holds every point of every method (kept points are
painted while the lesson is built; missing ones are measured by workers first, which takes minutes).

Repaint: the sparsity slider's Bokeh model value is set in the page (as a drag does), and the clock stops
one animation frame after the page holds the pruned model's new weight picture (same message as the new
prediction bars, sparsity bars and counts). The accuracy line shown at that moment is READ OFF THE CACHED
CURVE (interpolated) when the curves were measured, else "measuring …"; the accuracy of the exact setting
is measured afterwards in a worker thread, once the slider has rested 0.25 s. Each move here waits for
that measurement to finish before the next one, so the repaint is timed alone.

Sweep: 10 sparsities (0 … 90 %) of magnitude pruning over the 10,000 MNIST test digits, not kept, on the
pruned copies the lesson shows (math.measure: masks on a private copy); the dense point is the shared model's
own cached pass. Median over --sweeps runs.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ui_latency import ARM, summary, wait_for_http  # noqa: E402
from explorer.core import data, evaluate, zoo  # noqa: E402
from explorer.lessons.pruning import math as pm  # noqa: E402
from explorer.lessons.pruning import measured  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, free_port  # noqa: E402

APP = "tests/browser/apps/pruning_app.py"
SWEEP_AMOUNTS = tuple(i / 10 for i in range(10))
SET_SLIDER = """(value) => {
  const slider = Bokeh.documents[0].all_models.values().find(
      (m) => m.type === "Slider" && String(m.title).startsWith("Sparsity"));
  slider.value = value;
}"""


def launch(port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "panel", "serve", APP, "--port", str(port), "--address",
                             "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


CURVES_COMPLETE = """(n) => {
  const doc = Bokeh.documents[0];
  const curves = doc && doc.get_model_by_name("pruning-curves");
  return curves != null && curves.data.ys.length == 4 && curves.data.ys.every((ys) => ys.length == n);
}"""


def time_to_curves(browser, url: str, model: str) -> float:
    """Seconds from asking for the page to holding every point of the curves."""
    page = browser.new_page(viewport={"width": 1300, "height": 2000})
    start = time.perf_counter()
    page.goto(f"{url}?model={model}")
    page.wait_for_function(CURVES_COMPLETE, arg=len(measured.CURVE_AMOUNTS), timeout=3_600_000, polling=20)
    elapsed = time.perf_counter() - start
    page.close()
    return elapsed


def measure_slider(browser, url: str, model: str, repeats: int) -> list[float]:
    page = browser.new_page(viewport={"width": 1300, "height": 2000})
    page.goto(f"{url}?model={model}")
    page.get_by_text("Guided tour: pruning").wait_for(timeout=120_000)
    accuracy = page.locator(".pruning-accuracy")
    times = []
    for i in range(-1, repeats):  # round -1 warms the page up and is not counted
        value = (60, 80, 90, 70)[i % 4]
        page.evaluate(ARM, ["pruning-weights-after", None])
        page.evaluate(SET_SLIDER, value)
        latency = page.evaluate("() => Promise.race([window.__latency, new Promise(r => setTimeout(() => r(null), "
                                "30000))])")
        if latency is None:
            raise RuntimeError("the slider change did not repaint within 30 s")
        accuracy.get_by_text(f"at {value} %: ").wait_for(timeout=120_000)  # the measurement is done
        if i >= 0:
            times.append(latency)
    page.close()
    return times


def measure_sweep(runs: int) -> list[float]:
    model = zoo.load("mnist-cnn")
    test = data.eval_set("test", model.card.mean, model.card.std)
    evaluate.accuracy(model.module, test)  # the dense point: cached once per process, as in the app
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for amount in SWEEP_AMOUNTS[1:]:
            pm.measure(model.module, "magnitude", amount, test)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["mnist-cnn", "mnist-vit"])
    args = parser.parse_args()
    sweeps = measure_sweep(args.sweeps)
    print(f"sweep mnist-cnn, magnitude, 10 sparsities x 10,000 test digits: median {statistics.median(sweeps):.2f} s, "
          f"min {min(sweeps):.2f} s (n={len(sweeps)})", flush=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/{Path(APP).stem}"
    server = launch(port)
    try:
        wait_for_http(url, timeout=180)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            for model in args.models:
                print(f"{model:10s} open -> complete curves: {time_to_curves(browser, url, model):.2f} s", flush=True)
                times = measure_slider(browser, url, model, args.repeats)
                print(f"{model:10s} slider -> repaint (accuracy read off the curve or 'measuring'): {summary(times)}  "
                      f"(n={len(times)})", flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()

"""The quantization lesson: opening it, control-change latency in Chromium, the accuracy-vs-bits sweep, real int8.

    python benchmarks/lesson_quantization.py [--repeats 20] [--models mnist-cnn mnist-vit] [--skip-ui] [--opening]

0. Opening (--opening; each in a new process, for each of --models): from the start of the lesson's construction
   (the session's model and input already traced) until its accuracy and complete accuracy-vs-bits curves are shown.
   Three cases: "cold": nothing kept (an empty on-disk cache; the stored file beside the card is not read), so the
   curves are measured (outside a served page the lesson's slow work runs at once, within its construction);
   "cache": a second process after the cold one, which finds every value in that on-disk cache; "stored": the file
   models/NAME.measurements.json written by `explorer measure NAME`
   (said when there is none). The lesson's own construction time is printed too.
1. Sweep: wall time of one full accuracy-vs-bits sweep (math.sweep_settings: 4 curves × 7 bit widths,
   plus binary and ternary) over the 10k MNIST test set, uncached, for the CNN.
2. Latency, after one uncounted warm-up round, against tests/browser/apps/quantization_app.py: from the
   key press on the bits slider (or the pointer release on a granularity / scheme / clipping button) to one
   animation frame after the page holds the new histogram data (the source each change refreshes).
   Background accuracy measurements run meanwhile, as they do for a student.
3. Real int8 (onnxruntime) for the CNN: file sizes, median latency per 100 images, test accuracy.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ui_latency import summary, timed_click, wait_for_http  # noqa: E402
from explorer.core import measurements, paths, zoo  # noqa: E402
from explorer.lessons.quantization import int8, measured  # noqa: E402
from explorer.lessons.quantization import math as qm  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, free_port  # noqa: E402

APP = "tests/browser/apps/quantization_app.py"


def measure_sweep(model_name: str, repeats: int) -> list[float]:
    model = zoo.load(model_name)
    evalset = measured.heldout(model_name)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        # A new cache key each time: every point is measured, none is looked up.
        points = list(qm.sweep(model.module, f"{model_name}-benchmark-{i}", evalset, measured.DEFAULT))
        times.append(time.perf_counter() - start)
    print(f"sweep {model_name}: {len(points)} settings × {len(evalset):,} images: "
          f"median {statistics.median(times):.2f} s, runs {', '.join(f'{t:.2f}' for t in times)} s", flush=True)
    return times


def measure_int8(model_name: str) -> None:
    model = zoo.load(model_name)
    evalset, calibration = measured.heldout(model_name), measured.calibration(model_name)
    meaning = measured.meaning(model)
    files = int8.files_for(model_name, model.card.sha256)
    start = time.perf_counter()
    int8.export_float(model.module, files, calibration)
    int8.quantize_int8(files, calibration)
    built = time.perf_counter() - start
    m = int8.measure(files, evalset)
    print(f"int8 {model_name}: built in {built:.1f} s (0 when cached); size {files.float_bytes:,} → "
          f"{files.int8_bytes:,} bytes ({files.float_bytes / files.int8_bytes:.2f}× smaller); latency per "
          f"{m.batch} images {m.float_time.median:.1f} → {m.int8_time.median:.1f} ms (medians; {m.speedup:.2f}×); "
          f"{meaning} {m.float_top1:.2%} → {m.int8_top1:.2%} on {m.dataset}", flush=True)


def open_once(model_name: str, case: str) -> None:
    """One opening, in this process (see the module docstring); prints one line."""
    from explorer.lessons.quantization import view
    from explorer.session.state import ExplorerState

    if case == "cold":
        measurements.MODELS = Path(tempfile.mkdtemp())  # no stored file to read
    state = ExplorerState(model=model_name)
    state.ensure()
    start = time.perf_counter()
    lesson = view.QuantizationLesson(state=state)
    built = time.perf_counter() - start
    n = len(qm.sweep_settings(lesson.setting))
    while len(lesson.curves.points.data["x"]) < n or "quantized **" not in lesson.accuracy.object:
        time.sleep(0.01)
    shown = time.perf_counter() - start
    print(f"opening {model_name:12s} {case:6s}: accuracy and {n} curve points shown after {shown:6.2f} s "
          f"(lesson built in {built:.2f} s)", flush=True)


def measure_opening(model_name: str) -> None:
    """The three cases of the module docstring, each in a process of its own."""
    def run(cases: tuple[str, ...]) -> None:
        with tempfile.TemporaryDirectory() as private:
            for entry in paths.cache_dir().iterdir():  # MNIST and the weights stay; the measurements start empty
                if entry.name != "measurements":
                    os.symlink(entry, Path(private) / entry.name)
            for case in cases:
                subprocess.run([sys.executable, __file__, "--open-once", model_name, case], check=True,
                               env={**os.environ, paths.CACHE_ENV_VAR: private})

    run(("cold", "cache"))
    if measurements.stored_path(model_name).exists():
        run(("stored",))
    else:
        print(f"opening {model_name:12s} stored: no {measurements.stored_path(model_name).name} "
              f"(`explorer measure {model_name}` writes it)", flush=True)


def open_lesson(browser, url: str) -> Page:
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(url)
    page.get_by_text("Quantization, step by step").wait_for(timeout=120_000)
    page.wait_for_timeout(500)
    return page


def press_bits(page: Page, key: str) -> None:
    page.locator(".noUi-handle").first.press(key)


def measure_controls(browser, url: str, model: str, repeats: int) -> dict[str, list[float]]:
    page = open_lesson(browser, f"{url}?model={model}")
    page.locator(".noUi-handle").first.focus()
    times: dict[str, list[float]] = {"bits": [], "granularity": [], "scheme": [], "clip": []}
    for i in range(-1, repeats):  # round -1 warms up and is not counted
        key = ("ArrowLeft", "ArrowRight")[(i + 1) % 2]  # 8 → 7 → 8 …: both are real changes
        times["bits"].append(timed_click(page, "quantization-dequantized", functools.partial(press_bits, page, key),
                                         start_event="keydown"))
        for control, options in (("granularity", ("per-channel", "per-tensor")), ("scheme", ("affine", "symmetric")),
                                 ("clip", ("percentile", "min-max"))):
            button = page.get_by_role("button", name=options[(i + 1) % 2], exact=True)
            times[control].append(timed_click(page, "quantization-grid" if control != "clip" else "quantization-clip",
                                              button.click))
        page.locator(".noUi-handle").first.focus()
        if i < 0:
            times = {control: [] for control in times}
    page.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--sweeps", type=int, default=3, help="0 skips the sweep")
    parser.add_argument("--models", nargs="+", default=["mnist-cnn", "mnist-vit"])
    parser.add_argument("--skip-ui", action="store_true")
    parser.add_argument("--opening", action="store_true", help="time opening the lesson (cold, cache, stored)")
    parser.add_argument("--open-once", nargs=2, metavar=("MODEL", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.open_once:
        open_once(*args.open_once)
        return
    if args.opening:
        for model in args.models:
            measure_opening(model)
    if args.sweeps:
        measure_sweep("mnist-cnn", args.sweeps)
    measure_int8("mnist-cnn")
    if args.skip_ui:
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}/{Path(APP).stem}"
    server = subprocess.Popen([sys.executable, "-m", "panel", "serve", APP, "--port", str(port), "--address",
                               "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(url)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            for model in args.models:
                for control, values in measure_controls(browser, url, model, args.repeats).items():
                    print(f"{model:10s} {control:12s} change: {summary(values)}  (n={len(values)})", flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

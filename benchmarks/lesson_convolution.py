"""The convolution lesson in Chromium: a window step, a layer change and a channel change.

    python benchmarks/lesson_convolution.py [--repeats 30] [--models mnist-cnn mobilenet_v2]

Serves tests/browser/apps/convolution_app.py (the lesson alone, without the optional tabs). After one
uncounted warm-up round:
- step: from the pointer release on "Step ▶" to one animation frame after the page's patch cells
  (source convolution-taps) hold the next position. Runs in the browser only (target: 50 ms p95).
- layer / channel: from choosing another convolution in the select, or typing another output
  channel, to one animation frame after the page holds that channel's precomputed positions
  (convolution-positions): a server round trip.
Also: the compute of one channel's positions in Python (math.channel_steps, no browser).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ui_latency import summary, timed_click  # noqa: E402
from explorer.core import zoo  # noqa: E402
from explorer.lessons.convolution import math  # noqa: E402
from explorer.session.state import ExplorerState  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, serve  # noqa: E402

APP = ROOT / "tests" / "browser" / "apps" / "convolution_app.py"


def open_lesson(browser, url: str) -> Page:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.locator(".conv-arithmetic").wait_for(timeout=120_000)
    page.wait_for_timeout(500)
    return page


def measure(browser, url: str, model: str, repeats: int) -> dict[str, list[float]]:
    page = open_lesson(browser, f"{url}?model={model}&parts=none")
    layers = page.get_by_role("combobox", name="Convolution")
    names = layers.locator("option").all_inner_texts()
    channel = page.get_by_role("textbox", name="Output channel")
    step = page.get_by_role("button", name="Step ▶")
    times: dict[str, list[float]] = {"step": [], "layer": [], "channel": []}
    for i in range(-1, repeats):  # round -1 warms up the page and is not counted
        layer = names[(i + 2) % len(names)]  # the page opens on names[0]
        times["layer"].append(timed_click(page, "convolution-positions",
                                          functools.partial(layers.select_option, layer), start_event=None))
        for _ in range(3):
            times["step"].append(timed_click(page, "convolution-taps", step.click))
        typed = str(1 + (i + 1) % 3)

        def type_channel(value: str = typed) -> None:
            channel.fill(value)
            channel.press("Enter")

        times["channel"].append(timed_click(page, "convolution-positions", type_channel, start_event=None))
        if i < 0:
            times = {control: [] for control in times}
    page.close()
    return times


def compute_ms(model: str, repeats: int) -> dict[str, float]:
    """Median milliseconds of math.channel_steps + math.after for each convolution of the model."""
    inference = ExplorerState(model=model).ensure()
    module = inference.model.module
    result = {}
    for name in math.conv_layers(module, inference.trace):
        conv, record = math.conv_module(module, name), inference.trace[name]
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            steps = math.channel_steps(conv, record.input, 0)
            math.after(module, math.following(inference.trace, name), 0, steps.output)
            samples.append((time.perf_counter() - start) * 1000)
        result[name] = statistics.median(samples)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=[n for n in ("mnist-cnn", "mobilenet_v2")
                                                          if zoo.is_available(n)])
    args = parser.parse_args()
    for model in args.models:
        per_layer = compute_ms(model, 5)
        slowest = max(per_layer, key=per_layer.get)
        print(f"{model:13s} compute one channel's positions: median over layers "
              f"{statistics.median(per_layer.values()):.1f} ms, slowest {slowest} {per_layer[slowest]:.1f} ms",
              flush=True)
    with serve(APP) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        for model in args.models:
            for control, values in measure(browser, url, model, args.repeats).items():
                print(f"{model:13s} {control:8s} change: {summary(values)}  (n={len(values)})", flush=True)
        browser.close()


if __name__ == "__main__":
    main()

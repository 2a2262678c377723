"""Receptive field and filter atlas: effective-field compute time, click → repaint and sort → repaint latency.

    python benchmarks/lesson_convolution_receptive.py [--repeats 20] [--skip-browser]

Compute: `effective_receptive_field` for MobileNetV2 (224×224, the gallery's first photo) on the CPU, at
the centre unit of a shallow, a middle and the deepest convolution (median and p95 of `--repeats` runs
after one warm-up; the issue's target is 100 ms). Browser: tests/browser/apps/convolution_parts_app.py
in Chromium; from the pointer release of a click on a unit of the layer's map (or on a sort button) to
one animation frame after the page holds the new effective-field heat map (or the re-sorted filters).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("EXPLORER_DEVICE", "cpu")  # the target is a CPU time, also on a machine with a GPU

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Page, sync_playwright  # noqa: E402

from benchmarks.ui_latency import click_point, launch, summary, timed_click, wait_for_http  # noqa: E402
from explorer.core import zoo  # noqa: E402
from explorer.core.gallery import gallery_for  # noqa: E402
from explorer.lessons.convolution import receptive  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, free_port, select_layer  # noqa: E402

APP = "tests/browser/apps/convolution_parts_app.py"
ERF_LAYERS = ("features.2.conv.1.0", "features.7.conv.1.0", "features.18.0")  # shallow, middle, deepest


def measure_erf(repeats: int) -> None:
    model = zoo.load("mobilenet_v2")
    item = gallery_for(model.card)[0]
    x = model.preprocess(item.source)
    start = time.perf_counter()
    fields = receptive.receptive_fields(model)
    print(f"receptive_fields(mobilenet_v2), first call: {(time.perf_counter() - start) * 1000:.0f} ms "
          f"({len(fields)} layers)")
    for layer in ERF_LAYERS:
        f = receptive.field_of(fields, layer)
        i, j = f.output_hw[0] // 2, f.output_hw[1] // 2
        times = []
        for k in range(-1, repeats):
            start = time.perf_counter()
            receptive.effective_receptive_field(model, x, layer, 0, i, j)
            if k >= 0:
                times.append((time.perf_counter() - start) * 1000)
        print(f"ERF mobilenet_v2 {layer:22s} (field {f.size[0]} px): {summary(times)}  (n={len(times)}, "
              f"{os.cpu_count()} CPUs, torch threads {__import__('torch').get_num_threads()})", flush=True)


def open_parts(browser, url: str, model: str) -> Page:
    page = browser.new_page(viewport={"width": 1300, "height": 1100})
    page.goto(f"{url}?model={model}")
    page.get_by_text("receptive=").wait_for(timeout=120_000)
    page.wait_for_timeout(500)
    return page


def measure_clicks(page: Page, layer: str, side: int, repeats: int) -> list[float]:
    """Clicks on units of `layer`'s map (side × side), each on another unit."""
    select_layer(page.get_by_role("combobox", name="Layer").first, layer)
    page.get_by_text(f"receptive={layer} ").wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    times = []
    for k in range(-1, repeats):
        row, column = (side // 2 + k) % side, (side // 3 + 2 * k) % side
        click = functools.partial(click_point, page, f"{layer}, channel", column + 0.5, row + 0.5)
        latency = timed_click(page, "convolution-rf-erf", click)
        if k >= 0:
            times.append(latency)
        page.wait_for_timeout(350)  # past Bokeh's double-tap window
    return times


def measure_sort(page: Page, repeats: int) -> list[float]:
    page.locator(".bk-tab", has_text="Filter atlas").click()
    page.wait_for_timeout(500)
    times = []
    for k in range(-1, repeats):
        button = page.get_by_role("button", name=("L2 norm", "index")[(k + 1) % 2], exact=True)  # opens on index
        latency = timed_click(page, "convolution-atlas-filters", button.click)
        if k >= 0:
            times.append(latency)
    return times


def measure_browser(repeats: int) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/{Path(APP).stem}"
    server = launch(port, APP)
    try:
        wait_for_http(url, timeout=120)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            cases = [("mnist-cnn", "features.0", 28), ("mnist-cnn", "features.8", 7)]
            if zoo.is_available("mobilenet_v2"):
                cases += [("mobilenet_v2", "features.2.conv.1.0", 56), ("mobilenet_v2", "features.14.conv.1.0", 7)]
            pages: dict[str, Page] = {}
            for model, layer, side in cases:
                if model not in pages:
                    pages[model] = open_parts(browser, url, model)
                times = measure_clicks(pages[model], layer, side, repeats)
                print(f"click unit → heat map shown, {model} {layer:22s}: {summary(times)}  (n={len(times)})",
                      flush=True)
            for model, page in pages.items():
                times = measure_sort(page, repeats)
                print(f"atlas sort change → filters shown, {model}: {summary(times)}  (n={len(times)})", flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-browser", action="store_true")
    args = parser.parse_args()
    if zoo.is_available("mobilenet_v2"):
        measure_erf(args.repeats)
    else:
        print("MobileNetV2 is not fetched here (explorer fetch mobilenet_v2): no ERF timing")
    if not args.skip_browser:
        measure_browser(args.repeats)


if __name__ == "__main__":
    main()

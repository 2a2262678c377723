"""The normalization lesson in Chromium: latency of each control change, for the MNIST models.

    python benchmarks/lesson_normalization.py [--repeats 20] [--models mnist-cnn mnist-vit]

Serves tests/browser/apps/normalization_app.py (the lesson alone). Latency, after one uncounted warm-up
round: from the pointer release on a button (kind, batch size), or the choice in a select (groups, layer),
to one animation frame after the page holds the new data of the Bokeh source that the change refreshes
(the axes picture, the batch-size marker, the what-if tiles, the statistics). The whole-network
prediction of a batch-size change is slow work, computed off the event loop and sent after that; it is not part
of the figure, and each round waits for it before the next change.
Also: the compute of one lesson update in Python (no browser). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ui_latency import summary, timed_click  # noqa: E402
from explorer.lessons.normalization.view import NormalizationLesson  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, serve  # noqa: E402

APP = ROOT / "tests" / "browser" / "apps" / "normalization_app.py"
KINDS = ("LayerNorm", "GroupNorm", "InstanceNorm", "RMSNorm", "BatchNorm")
BATCHES = ("1", "64", "2", "256", "16")


def open_lesson(browser, url: str) -> Page:
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(url)
    page.locator(".normalization-axes").get_by_text("BatchNorm").first.wait_for(timeout=120_000)
    page.wait_for_timeout(500)
    return page


def button(page: Page, name: str):
    return page.get_by_role("button", name=name, exact=True).click


def measure(browser, url: str, model: str, repeats: int) -> dict[str, list[float]]:
    page = open_lesson(browser, f"{url}?model={model}")
    layers = page.get_by_role("combobox", name="Norm layer")
    options = layers.locator("option").all_inner_texts()
    groups = page.get_by_role("combobox", name="Groups (GroupNorm)")
    times: dict[str, list[float]] = {"kind": [], "batch size": [], "groups": [], "layer": []}
    for i in range(-1, repeats):  # round -1 warms up the page and the caches and is not counted
        times["kind"].append(timed_click(page, "normalization-axes", button(page, KINDS[(i + 1) % len(KINDS)])))
        times["batch size"].append(timed_click(page, "normalization-batch-now",
                                               button(page, BATCHES[(i + 1) % len(BATCHES)])))
        expect(page.locator(".normalization-prediction")).not_to_contain_text("Running", timeout=60_000)
        choices = groups.locator("option").all_inner_texts()
        current = groups.input_value()
        other = next(g for g in (choices[(i + 2) % len(choices)], choices[0], choices[-1]) if g != current)
        times["groups"].append(timed_click(page, "normalization-whatif",
                                           functools.partial(groups.select_option, other), start_event=None))
        layer = options[(i + 2) % len(options)] if options[(i + 2) % len(options)] != layers.input_value() \
            else options[(i + 3) % len(options)]
        times["layer"].append(timed_click(page, "normalization-stats",
                                          functools.partial(layers.select_option, layer), start_event=None))
        page.wait_for_timeout(300)
        if i < 0:
            times = {control: [] for control in times}
    page.close()
    return times


def compute_only(model: str, repeats: int) -> dict[str, list[float]]:
    """The Python side of each change: the lesson's update with no browser attached."""
    lesson = NormalizationLesson(model=model)
    layers = lesson.param.layer.objects
    kinds = list(lesson.param.kind.objects)
    times: dict[str, list[float]] = {"kind": [], "batch size": [], "layer": []}
    for i in range(repeats):
        changes = {"kind": {"kind": kinds[(i + 1) % len(kinds)]}, "batch size": {"batch": int(BATCHES[i % 5])},
                   "layer": {"layer": layers[(i + 1) % len(layers)]}}
        for control, change in changes.items():
            start = time.perf_counter()
            lesson.param.update(**change)
            times[control].append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["mnist-cnn", "mnist-vit"])
    args = parser.parse_args()
    with serve(APP) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        for model in args.models:
            for control, values in measure(browser, url, model, args.repeats).items():
                print(f"{model:10s} {control:10s} change -> repainted: {summary(values)}  (n={len(values)})",
                      flush=True)
        browser.close()
    for model in args.models:
        for control, values in compute_only(model, args.repeats).items():
            print(f"{model:10s} {control:10s} compute only: median {statistics.median(values):6.1f} ms  "
                  f"(n={len(values)})", flush=True)


if __name__ == "__main__":
    main()

"""The app in Chromium: latency of an input, layer and channel change; cold start; memory per session.

    python benchmarks/ui_latency.py [--repeats 30] [--sessions 20] [--models mnist-cnn mnist-vit]

Latency, after uncounted warm-up rounds (one per layer of the cycle, so that every lesson it opens is
built): from the pointer release of a click (a gallery thumbnail; a layer in the overview strip; a
channel in the layer's grid) or the choice of a model, to
one animation frame after the page holds the new data (the Bokeh source that the change refreshes:
the strip, the channel grid, the channel picture). The open lesson follows in a second message once
the page has painted that (explorer/ui/after_paint.py); two more rows time it: an input change until
the convolution lesson shows the new input, and a layer click that opens another lesson until that
lesson shows the layer. Between clicks the benchmark waits 350 ms, as a student looks at the answer.
Cold start: from launching `panel serve app.py` to the prediction shown in a new page. Memory: the
server's resident memory after 1 and after 20 open sessions. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.core import zoo  # noqa: E402
from explorer.core.gallery import gallery_for  # noqa: E402
from explorer.core.names import labelled_name  # noqa: E402
from explorer.session.state import ExplorerState  # noqa: E402
from explorer.ui.overview import CELL, GRID_H, GRID_W  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, FIGURE_BOX, FIGURE_POINT, free_port  # noqa: E402

# Arm a timer: it starts at the next `startEvent` anywhere in the page (pointerup, for a click), or now when
# `startEvent` is null (a select: its events stay inside the widget's shadow DOM), and stops one frame after
# the named Bokeh source changes. `window.__latency` resolves to the milliseconds.
ARM = """([sourceName, startEvent]) => {
  const source = Bokeh.documents[0].get_model_by_name(sourceName);
  window.__latency = new Promise((resolve) => {
    let start = null;
    if (startEvent === null) start = performance.now();
    else window.addEventListener(startEvent, () => { start = performance.now(); }, {capture: true, once: true});
    const connection = () => {
      if (start === null) return;
      source.change.disconnect(connection);
      requestAnimationFrame(() => resolve(performance.now() - start));
    };
    source.change.connect(connection);
  });
}"""


def launch(port: int, app: str = "app.py") -> subprocess.Popen:
    """`panel serve APP` (relative to the repository), quietly, as app.py's own settings would run it."""
    return subprocess.Popen([sys.executable, "-m", "panel", "serve", app, "--port", str(port), "--address",
                             "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})


def wait_for_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def open_page(browser, url: str) -> Page:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.locator(".prediction-summary").get_by_text("The model says").wait_for(timeout=60_000)
    page.wait_for_timeout(300)
    return page


def timed_click(page: Page, source: str, click, start_event: str | None = "pointerup") -> float:
    page.evaluate(ARM, [source, start_event])
    click()
    timeout = "new Promise(r => setTimeout(() => r(null), 10000))"
    latency = page.evaluate(f"() => Promise.race([window.__latency, {timeout}])")
    if latency is None:
        raise RuntimeError(f"the click did not change {source} within 10 s")
    return latency


def click_point(page: Page, title: str, x: float, y: float) -> None:
    # into view first: a click that opens another lesson scrolls the page down to it (explorer/ui/shell.py)
    page.evaluate(FIGURE_BOX, title)
    page.mouse.click(*page.evaluate(FIGURE_POINT, [title, x, y]))


def measure_model(browser, url: str, model: str, repeats: int) -> dict[str, list[float]]:
    page = open_page(browser, f"{url}?model={model}")
    card = zoo.card(model)
    items = gallery_for(card)
    state = ExplorerState(model=model)
    names = state.ensure().trace.names
    maps = [n for n, r in zip(names, state.inference.trace.records, strict=True) if r.output.dim() >= 3][:6]
    layers = maps[1:] + maps[:1]  # the page opens on the first: each click must change the layer
    times: dict[str, list[float]] = {"input": [], "layer": [], "channel": []}
    # the uncounted rounds (i < 0) warm the page up (first paints, first JIT) and open, once, every lesson that a
    # layer of the cycle opens: a lesson's first opening builds it (up to 1.8 s with the attention lesson)
    for i in range(-len(layers), repeats):
        item = items[(i + 2) % len(items)]  # items[0] is already shown: clicking it changes nothing
        button = page.get_by_role("button", name=item.description)
        times["input"].append(timed_click(page, "overview-strip", button.click))
        page.wait_for_timeout(350)  # as a student looks before the next click: the open lesson has followed
        layer = layers[(i + 1) % len(layers)]
        x = (names.index(layer) + 1.5) * CELL
        strip_click = functools.partial(click_point, page, f"{model}:", x, 60)
        times["layer"].append(timed_click(page, "overview-grid", strip_click))
        page.wait_for_timeout(350)  # past Bokeh's double-tap window, so that each click is a plain tap
        channel = 1 + i % 3
        times["channel"].append(timed_click(page, "overview-channel", functools.partial(
            click_point, page, f"{labelled_name(state.inference.model.module, layer)}:", channel * GRID_W + GRID_W / 2,
            GRID_H / 2)))
        page.wait_for_timeout(350)
        if i < 0:
            times = {control: [] for control in times}
    page.close()
    return times


def lesson_filled(page: Page, source: str) -> None:
    page.wait_for_function("""(name) => {
      const source = Bokeh.documents[0].get_model_by_name(name);
      return source !== null && Object.values(source.data).some((column) => column.length > 0);
    }""", arg=source, timeout=60_000)
    page.wait_for_timeout(300)


def measure_lesson_follows_input(browser, url: str, model: str, repeats: int) -> list[float]:
    """An input change with the convolution lesson open, until the lesson shows the new input: the overview's
    message is painted first, the lesson's data comes in a second message (explorer/ui/after_paint.py)."""
    page = open_page(browser, f"{url}?model={model}&lesson=convolution")
    lesson_filled(page, "convolution-patches")
    items = gallery_for(zoo.card(model))
    times = []
    for i in range(-1, repeats):
        button = page.get_by_role("button", name=items[(i + 2) % len(items)].description)
        latency = timed_click(page, "convolution-patches", button.click)
        page.wait_for_timeout(350)
        if i >= 0:
            times.append(latency)
    page.close()
    return times


# mnist-cnn layers whose click opens another lesson, and a source that lesson refreshes for the new layer
LESSON_SWITCHES = (("features.1", "normalization-stats"), ("features.0", "convolution-patches"),
                   ("features.5", "normalization-stats"), ("features.4", "convolution-patches"))


def measure_lesson_switch(browser, url: str, repeats: int) -> list[float]:
    """mnist-cnn: a click on a layer of another kind (a BatchNorm, then a convolution, ...) opens the lesson that
    explains it; until that lesson shows the new layer (the overview's own answer is painted before)."""
    page = open_page(browser, f"{url}?model=mnist-cnn&lesson=convolution")
    lesson_filled(page, "convolution-patches")
    names = ExplorerState(model="mnist-cnn").ensure().trace.names
    times = []
    for i in range(-len(LESSON_SWITCHES), repeats):  # the first round builds each lesson once: not counted
        layer, source = LESSON_SWITCHES[i % len(LESSON_SWITCHES)]
        click = functools.partial(click_point, page, "mnist-cnn:", (names.index(layer) + 1.5) * CELL, 60)
        if i < 0:  # the lesson and its sources do not exist before it is first opened
            click()
            lesson_filled(page, source)
            continue
        times.append(timed_click(page, source, click))
        page.wait_for_timeout(350)
    page.close()
    return times


def measure_model_switch(browser, url: str, repeats: int) -> list[float]:
    """The model picker: mnist-cnn and mnist-vit in turn (the whole page is redrawn)."""
    page = open_page(browser, url)
    select = page.get_by_role("combobox", name="Model")
    times = []
    for i in range(-1, repeats):
        model = ("mnist-vit", "mnist-cnn")[(i + 1) % 2]  # the page opens on mnist-cnn
        latency = timed_click(page, "overview-strip", functools.partial(select.select_option, model),
                              start_event=None)
        if i >= 0:
            times.append(latency)
    page.close()
    return times


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):6.1f} ms, p95 {statistics.quantiles(values, n=20)[-1]:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=[n for n in ("mnist-cnn", "mnist-vit", "mobilenet_v2")
                                                          if zoo.is_available(n)])
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}/app"
    start = time.perf_counter()
    server = launch(port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            wait_for_http(url)
            first = open_page(browser, url)
            cold = time.perf_counter() - start
            print(f"cold start: panel serve app.py -> prediction shown: {cold:.2f} s", flush=True)
            if {"mnist-cnn", "mnist-vit"} <= set(args.models):
                switches = measure_model_switch(browser, url, args.repeats)
                print(f"{'mnist-cnn/vit':13s} model    change: {summary(switches)}  (n={len(switches)})", flush=True)
            for model in args.models:
                for control, values in measure_model(browser, url, model, args.repeats).items():
                    print(f"{model:13s} {control:8s} change: {summary(values)}  (n={len(values)})", flush=True)
                follows = measure_lesson_follows_input(browser, url, model, args.repeats)
                print(f"{model:13s} input -> convolution lesson shown: {summary(follows)}  (n={len(follows)})",
                      flush=True)
            if "mnist-cnn" in args.models:
                switches = measure_lesson_switch(browser, url, args.repeats)
                print(f"{'mnist-cnn':13s} layer -> another lesson shown: {summary(switches)}  (n={len(switches)})",
                      flush=True)
            baseline = rss_mb(server.pid)
            pages = [first] + [open_page(browser, url) for _ in range(args.sessions - 1)]
            grown = rss_mb(server.pid) - baseline
            print(f"memory: {baseline:.0f} MB with 1 session (after the benchmark), +{grown:.0f} MB for "
                  f"{len(pages) - 1} more, {grown / (len(pages) - 1):.1f} MB per session")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()

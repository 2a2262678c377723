"""The attention lesson in Chromium: latency of each control, and the compute behind one change.

    python benchmarks/lesson_attention.py [--repeats 30]

Latency, after one uncounted warm-up round: from the pointer release of a click (a patch of the input
picture, a patch in the layer × head grid) or from setting a widget's Bokeh model value in the page (layer,
head, query, temperature, head fusion, discard ratio), to one animation frame after the page holds the new
data of the Bokeh source that the control refreshes. Served by tests/browser/apps/attention_app.py with
the app's server tuning (TCP_NODELAY, no debounce). Compute: the server-side work of one change, without
the browser. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ui_latency import click_point, summary, timed_click  # noqa: E402
from explorer.lessons.attention.view import AttentionLesson  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, serve  # noqa: E402

APP = ROOT / "tests" / "browser" / "apps" / "attention_app.py"
PATCH = 7  # px, the MNIST ViT's patch side

# Set a property of the first widget model whose title (or, for button groups, labels) matches, as a student's
# change of that widget would; returns whether one was found.
SET_WIDGET = """([match, prop, value]) => {
  for (const m of Bokeh.documents[0].all_models) {
    const labels = m.labels ? m.labels.join(",") : null;
    if (m.title === match || labels === match) { m[prop] = value; return true; }
  }
  return false;
}"""


def set_widget(page: Page, match: str, prop: str, value: object) -> None:
    if not page.evaluate(SET_WIDGET, [match, prop, value]):
        raise RuntimeError(f"no widget titled {match!r} in the page")


def timed_set(page: Page, source: str, match: str, prop: str, value: object) -> float:
    """Latency of one widget change: the clock starts when ARM runs, just before the value is set."""
    return timed_click(page, source, functools.partial(set_widget, page, match, prop, value), start_event=None)


def measure(page: Page, repeats: int) -> dict[str, list[float]]:
    lesson = AttentionLesson(model="mnist-vit")  # for the grid's geometry only
    times: dict[str, list[float]] = {}
    for i in range(-1, repeats):  # round -1 warms up (first paints, first JIT) and is not counted
        row, col = divmod((i + 1) % 16, 4)  # a different patch each round; the page opens on the class token
        controls = {
            "patch click": ("attention-map", functools.partial(click_point, page, "your input", (col + 0.5) * PATCH,
                                                               (row + 0.5) * PATCH), "pointerup"),
            "grid click": ("attention-map", functools.partial(click_point, page, "where ",
                                                              *grid_point(lesson, i % 4, (i + 1) % 4, 3 - row, col)),
                           "pointerup"),
            "layer": ("attention-step-x", ("Layer", "value", f"blocks.{(i + 2) % 4}.attn")),
            "head": ("attention-step-q", ("Head", "value", (i + 2) % 4)),
            "query": ("attention-map", ("Query token", "value", "class token")),  # a patch click follows
            "temperature": ("attention-step-probs", ("Temperature τ", "value", (0.3, 2.0)[i % 2])),
            "head fusion": ("attention-rollout", ("mean,max,min", "active", (i + 2) % 3)),
            "discard ratio": ("attention-rollout", ("Discard ratio", "value", (0.5, 0.8)[i % 2])),
        }
        for name, (source, action, *start) in controls.items():
            if callable(action):
                latency = timed_click(page, source, action, start[0])
                page.wait_for_timeout(350)  # past Bokeh's double-tap window, so that each click is a plain tap
            else:
                latency = timed_set(page, source, *action)
            if i >= 0:
                times.setdefault(name, []).append(latency)
    return times


def grid_point(lesson: AttentionLesson, layer: int, head: int, row: int, col: int) -> tuple[float, float]:
    _, _, x, y, scale = lesson._heads.cell_geometry(layer, head)
    return x + (col + 0.5) * PATCH * scale, y + (row + 0.5) * PATCH * scale


def compute_ms(repeats: int) -> dict[str, list[float]]:
    """Server-side time of a change (the lesson's update, without sending), per control: wall and CPU time.

    CPU time (this process) is quoted beside wall time: on a shared, loaded machine the wall time mostly
    measures waiting for a core.
    """
    lesson = AttentionLesson(model="mnist-vit")
    changes = {"query": lambda i: setattr(lesson, "query", 1 + i % 16),
               "head": lambda i: setattr(lesson.state, "channel", i % 4),
               "temperature": lambda i: setattr(lesson, "temperature", (0.3, 2.0)[i % 2]),
               "discard ratio": lambda i: setattr(lesson, "discard_ratio", (0.5, 0.8)[i % 2])}
    times: dict[str, list[float]] = {f"{name} {clock}": [] for name in changes for clock in ("wall", "cpu")}
    for i in range(repeats):
        for name, change in changes.items():
            wall, cpu = time.perf_counter(), time.process_time()
            change(i)
            times[f"{name} cpu"].append((time.process_time() - cpu) * 1000)
            times[f"{name} wall"].append((time.perf_counter() - wall) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    for name, values in compute_ms(args.repeats).items():
        print(f"compute  {name:18s}: {summary(values)}  (n={len(values)})", flush=True)
    with serve(APP) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1300, "height": 3300})  # all figures on screen, for clicks
        page.goto(f"{url}?model=mnist-vit")
        page.get_by_text("Guided tour: attention").wait_for(timeout=60_000)
        page.wait_for_timeout(500)
        for name, values in measure(page, args.repeats).items():
            print(f"chromium {name:13s} change: {summary(values)}  (n={len(values)})", flush=True)
        browser.close()


if __name__ == "__main__":
    main()

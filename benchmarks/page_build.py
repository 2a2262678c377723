"""The server's CPU per page built and per lesson first opened, headless: what holds the event loop for one student.

    python benchmarks/page_build.py [--pages 12] [--students 5] [--model mnist-cnn]

No browser: sessions are made as `panel serve app.py` makes them (Bokeh's ApplicationContext running Panel's
Application around app.py's page), with tests/ui/test_shared_models.py's helpers, and each change is applied as
Bokeh applies a browser's message (under the document lock, then the page's answer to the after-paint ticket).
Every runtime tuning is on, as served (EXPLORER_TUNE=0: none).

- page built: --pages sessions opened one after the other, the CPU (thread_time) of each document's build, which
  a page's request does on the server's loop (its open lesson is built later, once the page has loaded); the
  median leaves out the first two (imports, the model's first load, results the process keeps).
- lesson first opening: --students more sessions, each opened on the last lesson and opening every other one,
  then the convolution lesson's parts built when their tab opens: the CPU of the tab's change, both steps of the
  lesson's opening (built, then placed on the page) and the work that waits for the page's paint; the median over
  the students, leaving out the first.

Each measured step runs with the garbage collector's survivors frozen and the collector off, as the served app's
idle collector keeps full collections out of a student's action (explorer/serve/idle_gc.py). On a server shared
by a class every such figure is stretched by the contention, and a message arriving meanwhile waits for it.
Prints figures; asserts nothing. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import statistics
import sys
import time
from collections.abc import Awaitable
from pathlib import Path

from bokeh.server.session import ServerSession

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "ui"))

from explorer import serve  # noqa: E402

serve.before_torch()

import panel as pn  # noqa: E402

serve.tune()
serve.serve_resources_locally()
pn.extension(inline=True, notifications=True)

from test_shared_models import PARTS, Server, click, open_part  # noqa: E402

from explorer.lessons.convolution.view import STEP_TABS  # noqa: E402
from explorer.session.state import ExplorerState  # noqa: E402
from explorer.ui.shell import LESSONS  # noqa: E402

PLACED_S = 0.1  # the lesson is placed on the page BETWEEN_STEPS_MS (20 ms) after it is built


async def cpu_ms(step: Awaitable[object]) -> float:
    """The CPU of the server's loop thread while `step` runs."""
    gc.collect()
    gc.freeze()
    gc.disable()
    start = time.thread_time()
    try:
        await step
        return 1000 * (time.thread_time() - start)
    finally:
        gc.enable()


async def open_lesson(session: ServerSession, state: ExplorerState, name: str) -> None:
    await click(session, lambda: setattr(state, "lesson", name))
    await asyncio.sleep(PLACED_S)


async def measure(pages: int, students: int, model: str) -> None:
    server = Server()
    built = [await cpu_ms(server.build_page(f"page-{i}", f"model={model}")) for i in range(pages)]
    print(f"page built ({pages} sessions, {model}): median {statistics.median(built[2:]):.0f} ms of CPU "
          f"(first two {built[0]:.0f}, {built[1]:.0f}; range of the rest {min(built[2:]):.0f}-{max(built[2:]):.0f})",
          flush=True)
    *first_opened, last = LESSONS
    parts = {title: source for title, source in PARTS.items() if title not in STEP_TABS}  # built with the lesson
    opened: dict[str, list[float]] = {name: [] for name in [*first_opened, *parts]}
    for student in range(students):
        # opened on the last lesson (built with the page once it has painted), so that the first is opened anew
        session = await server.open_page(f"student-{student}", f"model={model}&lesson={last}")
        state = server.states[session.document]
        for name in first_opened:
            opened[name].append(await cpu_ms(open_lesson(session, state, name)))
        for title, source in parts.items():  # the convolution lesson's parts, built when their tab opens
            opened[title].append(await cpu_ms(open_part(session, title, source)))
    print(f"lesson first opening (median over students 2-{students}, ms of CPU; the first student's in brackets):")
    for name, times in opened.items():
        print(f"  {name:16s} {statistics.median(times[1:]):6.0f}  ({times[0]:.0f})")
    await server.context._cleanup_sessions(0)  # the lessons' worker threads stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=12)
    parser.add_argument("--students", type=int, default=5)
    parser.add_argument("--model", default="mnist-cnn", choices=["mnist-cnn", "mnist-vit"])
    args = parser.parse_args()
    logging.getLogger("bokeh").setLevel(logging.ERROR)  # W-1002 for the placeholders of parts not yet built
    asyncio.run(measure(max(args.pages, 3), max(args.students, 2), args.model))


if __name__ == "__main__":
    main()

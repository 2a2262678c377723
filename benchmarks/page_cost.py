"""What a gallery click costs the student's browser, with each lesson open: the page's CPU against the server's.

    python benchmarks/page_cost.py [--clicks 10] [--model mnist-cnn] [LESSON ...]

One `explorer serve` (classroom.py's server) and one page in Chromium on a quiet machine. For each lesson (the
five of classroom.py by default), the page opens on it, waits for the lesson's input-dependent source to be shown,
clicks three gallery digits to settle, then clicks `--clicks` more, 1.5 s apart (each waits for its new
prediction). Printed per click: the CPU of Chromium's renderer processes (from /proc: the page's main thread, its
compositor and raster workers); the page's main-thread times from the DevTools protocol's Performance metrics
(script, style recalculation, layout, and the rest: paint, compositing, messages); and the server's CPU. Both CPU
figures are less their idle share over the same time, measured before the clicks: the page's over 10 s, the
server's once it is quiet (classroom.py's idle_rate, which waits for the work of the settling clicks to end). In a
class on one machine the browsers take most of it (docs/performance.md, "A class's machine"), so this is what a
student's wait is made of. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
import classroom as room  # noqa: E402

THINK_S = 1.5   # between clicks: each one's answer is painted before the next
IDLE_S = 10     # an idle page's CPU is measured over this long
SOURCES = {title.lower(): source for title, source in room.LESSONS.items()}  # a lesson's input-dependent source
SHOWN = "(name) => { const s = Bokeh.documents[0].get_model_by_name(name); return s !== null && s.get_length() > 0 }"
METRICS = {"TaskDuration": "main thread", "ScriptDuration": "script", "RecalcStyleDuration": "style",
           "LayoutDuration": "layout"}


def renderers_cpu_s() -> float:
    """CPU time so far of Chromium's renderer processes (the pages), user + system."""
    return room.browsers_cpu_s("renderer")


async def one_lesson(browser, url: str, server_pid: int, model: str, lesson: str, clicks: int) -> str:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    student = room.Student(0, page, room.course(model, url))
    await page.goto(f"{url}?model={model}&lesson={lesson}", timeout=120_000)
    await page.wait_for_function(room.TEXT_IN, arg=["prediction-summary", "The model says"], polling=100,
                                 timeout=120_000)
    student.item = student.course.items[0]
    await page.wait_for_function(SHOWN, arg=SOURCES[lesson], polling=100, timeout=120_000)
    for _ in range(3):
        await student.act("gallery")
        await asyncio.sleep(THINK_S)
    # the server's idle rate once the work the clicks started has ended (classroom.py's measure), then the page's
    server_idle_rate, _ = await room.idle_rate(server_pid)
    start = renderers_cpu_s()
    await asyncio.sleep(IDLE_S)
    idle_rate = (renderers_cpu_s() - start) / IDLE_S
    cdp = await context.new_cdp_session(page)
    await cdp.send("Performance.enable")

    async def metrics() -> dict[str, float]:
        return {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}

    before, page_start, server_start, t0 = await metrics(), renderers_cpu_s(), room.cpu_s(server_pid), time.monotonic()
    for _ in range(clicks):
        await student.act("gallery")
        await asyncio.sleep(THINK_S)
    after, elapsed = await metrics(), time.monotonic() - t0
    page_ms = 1000 * (renderers_cpu_s() - page_start - idle_rate * elapsed) / clicks
    server_ms = 1000 * (room.cpu_s(server_pid) - server_start - server_idle_rate * elapsed) / clicks
    main = {label: 1000 * (after[key] - before[key]) / clicks for key, label in METRICS.items()}
    other = main["main thread"] - main["script"] - main["style"] - main["layout"]
    await context.close()
    return (f"{lesson:14s} page {page_ms:5.0f} ms (main thread {main['main thread']:.0f}: script {main['script']:.0f}, "
            f"style {main['style']:.0f}, layout {main['layout']:.0f}, other {other:.0f}); server {server_ms:.0f} ms; "
            f"idle: the page {1000 * idle_rate:.0f}, the server {1000 * server_idle_rate:.0f} ms per s")


async def run(args: argparse.Namespace) -> None:
    server, url, log = room.start_server("page-cost-")
    try:
        await room.serving(server, log)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=room.CHROMIUM, args=room.CHROMIUM_FLAGS)
            print(f"per gallery click, {args.model}, {args.clicks} clicks each, CPU time:", flush=True)
            for lesson in args.lessons:
                print(await one_lesson(browser, url, server.pid, args.model, lesson, args.clicks), flush=True)
            await browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lessons", nargs="*", default=list(SOURCES), metavar="LESSON")
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--model", default="mnist-cnn")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

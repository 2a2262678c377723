"""What an action costs the student's browser, with each lesson open: the page's CPU against the server's.

    python benchmarks/page_cost.py [--action gallery|layer|lesson] [--clicks 10] [--model mnist-cnn] [LESSON ...]

One `explorer serve` (classroom.py's server) and one page in Chromium on a quiet machine. For each lesson (the
five of classroom.py by default), the page opens on it, waits for the lesson's input-dependent source to be shown
and clicks three gallery digits to settle. Then `--clicks` actions, each waiting for its answer (classroom.py's
Student.act) and SETTLE_S more: gallery clicks (the new prediction shown), layer clicks on the overview strip
(the layer summary names the layer; a click on a conv or norm layer opens the lesson that explains it, as in the
app, so with another lesson open the clicks include first openings of Convolution and Normalization), or first
openings of the lesson (`--action lesson`: each on a new page opened on another lesson, so that the lesson is built
for its session, until its input-dependent source is shown).
Printed per action: the CPU of Chromium's renderer processes (from /proc: the page's main thread, its compositor
and raster workers); the page's main-thread times from the DevTools protocol's Performance metrics (script, style
recalculation, layout, and the rest: paint, compositing, messages); and the server's CPU. Both CPU figures are
less their idle share over the same time, measured before the actions: the page's over 10 s, the server's once it
is quiet (classroom.py's idle_rate, which waits for the work of the settling clicks to end). In a class on one
machine the browsers take most of it (docs/performance.md, "A class's machine"), so this is what a student's
wait is made of. Prints figures; asserts nothing.
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
SETTLE_S = {"gallery": THINK_S, "layer": THINK_S, "lesson": 4.0}  # after the answer: the work it started ends
IDLE_S = 10     # an idle page's CPU is measured over this long
SOURCES = {title.lower(): source for title, source in room.LESSONS.items()}  # a lesson's input-dependent source
SHOWN = "(name) => { const s = Bokeh.documents[0].get_model_by_name(name); return s !== null && s.get_length() > 0 }"
ACTIONS = {"gallery": "gallery click", "layer": "layer click on the overview strip",
           "lesson": "first opening of the lesson (from another lesson's tab)"}
METRICS = {"TaskDuration": "main thread", "ScriptDuration": "script", "RecalcStyleDuration": "style",
           "LayoutDuration": "layout"}


def renderers_cpu_s() -> float:
    """CPU time so far of Chromium's renderer processes (the pages), user + system."""
    return room.browsers_cpu_s("renderer")


async def one_lesson(browser, url: str, server_pid: int, model: str, lesson: str, action: str, clicks: int) -> str:
    """The page's and the server's CPU per `action` with `lesson` open (for "lesson": per first opening of `lesson`
    from another lesson's tab, one page each time)."""
    start_on = lesson if action != "lesson" else next(other for other in SOURCES if other != lesson)
    context, student, cdp = await opened(browser, url, model, start_on)
    # the server's idle rate once the work the clicks started has ended (classroom.py's measure), then the page's
    server_idle_rate, _ = await room.idle_rate(server_pid)
    start = renderers_cpu_s()
    await asyncio.sleep(IDLE_S)
    idle_rate = (renderers_cpu_s() - start) / IDLE_S

    async def metrics() -> dict[str, float]:
        return {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}

    page_s = server_s = 0.0
    main = dict.fromkeys(METRICS.values(), 0.0)
    for n in range(clicks):
        if action == "lesson" and n > 0:  # a fresh page, its own session: the lesson is opened for the first time
            await context.close()
            context, student, cdp = await opened(browser, url, model, start_on)
            await room.idle_rate(server_pid)
        before, page_start, server_start, t0 = await metrics(), renderers_cpu_s(), room.cpu_s(server_pid), \
            time.monotonic()
        await student.act(action, lesson.title() if action == "lesson" else None)
        await asyncio.sleep(SETTLE_S[action])
        after, took = await metrics(), time.monotonic() - t0
        page_s += renderers_cpu_s() - page_start - idle_rate * took
        server_s += room.cpu_s(server_pid) - server_start - server_idle_rate * took
        for key, label in METRICS.items():
            main[label] += after[key] - before[key]
    await context.close()
    main = {label: 1000 * seconds / clicks for label, seconds in main.items()}
    other = main["main thread"] - main["script"] - main["style"] - main["layout"]
    return (f"{lesson:14s} page {1000 * page_s / clicks:5.0f} ms (main thread {main['main thread']:.0f}: script "
            f"{main['script']:.0f}, style {main['style']:.0f}, layout {main['layout']:.0f}, other {other:.0f}); "
            f"server {1000 * server_s / clicks:.0f} ms; idle: the page {1000 * idle_rate:.0f}, the server "
            f"{1000 * server_idle_rate:.0f} ms per s")


async def opened(browser, url: str, model: str, lesson: str):
    """A page in a new context of `browser` on `lesson`, its input-dependent source shown, three gallery clicks made
    to settle: (the context, the student, a DevTools session with the Performance metrics on)."""
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
    cdp = await context.new_cdp_session(page)
    await cdp.send("Performance.enable")
    return context, student, cdp


async def run(args: argparse.Namespace) -> None:
    server, url, log = room.start_server("page-cost-")
    try:
        await room.serving(server, log)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=room.CHROMIUM, args=room.CHROMIUM_FLAGS)
            print(f"per {ACTIONS[args.action]}, {args.model}, {args.clicks} each, CPU time:", flush=True)
            for lesson in args.lessons:
                print(await one_lesson(browser, url, server.pid, args.model, lesson, args.action, args.clicks),
                      flush=True)
            await browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lessons", nargs="*", default=list(SOURCES), metavar="LESSON")
    parser.add_argument("--action", choices=ACTIONS, default="gallery")
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--model", default="mnist-cnn")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

"""Server CPU per lesson opening: one student at a time on one `explorer serve` (classroom.py's server).

    python benchmarks/lesson_cpu.py [--lessons pruning saliency ...] [--students 5] [--switches 6]
                                    [--model mnist-cnn]

For each lesson, a fresh server; then --students students one after the other, each in a new Chromium context
(a new session, as a class arrives): the page opens on another lesson, and the student clicks the lesson's tab.
Three figures, each the server's CPU seconds (idle rate subtracted) from a quiet server before the click to a
quiet server after it, so that the work the opening starts after its answer counts:

- first opening: the session builds the lesson (its views, their Bokeh models, its first numbers) and sends it;
  the median over the students (the first also pays for what the process computes once: imports, kept results);
- switch back: --switches tab clicks between the built lesson and the other one, per click;
- after a new input: a gallery click with the lesson hidden, then the lesson's tab: the lesson catches up with
  the input it missed; per pair, less a gallery click and a switch measured alone.

With the click → shown latency (classroom.py's lesson check: the lesson's input-dependent source on screen with
data). Prints figures; asserts nothing. Run it on a quiet machine: the figures are CPU time, but a busy machine
slows every process's caches and clocks.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from collections.abc import Awaitable
from pathlib import Path

from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
import classroom as c  # noqa: E402  (this folder's own module)

# lesson name -> (tab title, a named source that changes with the input): classroom.py's, and Attention, which with a
# CNN shows its frequency section, whose per-layer curves follow the input
SOURCES = {title.lower(): (title, source)
           for title, source in {**c.LESSONS, "Attention": "attention-frequency-curves"}.items()}
QUIET = 0.05  # CPU s/s under which the server is taken to be idle


async def quiet(pid: int, timeout: float = 60) -> None:
    """Wait until the server has been idle for a whole 0.5-s window."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        start_cpu, start = c.cpu_s(pid), time.monotonic()
        await asyncio.sleep(0.5)
        if (c.cpu_s(pid) - start_cpu) / (time.monotonic() - start) < QUIET:
            return
    raise TimeoutError("the server did not become idle")


class Meter:
    """CPU seconds of the server between quiet points, less its idle rate."""

    def __init__(self, pid: int, idle: float):
        self.pid, self.idle = pid, idle

    async def cost(self, action: Awaitable[float]) -> tuple[float, float]:
        """(server CPU ms, latency ms) of `action` (not yet started: it runs once the server is quiet), which
        returns its latency."""
        await quiet(self.pid)
        start_cpu, start = c.cpu_s(self.pid), time.monotonic()
        latency = await action
        await quiet(self.pid)
        # the closing quiet window is idle time too: counted in the elapsed time, less its idle rate
        cpu = c.cpu_s(self.pid) - start_cpu - self.idle * (time.monotonic() - start)
        return 1000 * cpu, latency


async def click_tab(student: c.Student, title: str, source: str | None) -> float:
    """Click the lesson tab `title`; ms until `source` is on screen with data (or the tab is open)."""
    page = student.page
    await page.evaluate(c.ARM)
    await page.locator(".lesson-tabs .bk-tab").filter(has_text=re.compile(rf"^{title}$")).click()
    if source is None:
        handle = await page.wait_for_function(f"() => ({c.ACTIVE_LESSON})() === {title!r} && window.__t0 !== null"
                                              " && performance.now() - window.__t0", polling=c.POLL_MS)
    else:
        handle = await page.wait_for_function(c.LESSON_SHOWN, arg=[source, None], polling=c.POLL_MS,
                                              timeout=c.ANSWER_S * 1000)
    return await handle.json_value()


async def one_lesson(lesson: str, model: str, students: int, switches: int) -> str:
    title, source = SOURCES[lesson]
    other = "normalization" if lesson == "convolution" else "convolution"
    other_title = SOURCES[other][0]
    server, url, log = c.start_server("lesson-cpu-")
    first, switch, gallery, catch_up, latency = [], [], [], [], []
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=c.CHROMIUM, args=c.CHROMIUM_FLAGS)
            await c.serving(server, log)
            meter = None
            for number in range(students):
                context = await browser.new_context(viewport={"width": 1400, "height": 1000})
                student = c.Student(number, await context.new_page(), c.course(model, url))
                await student.page.goto(f"{url}?model={model}&lesson={other}", timeout=120_000)
                await student.page.wait_for_function(c.TEXT_IN, arg=["prediction-summary", "The model says"],
                                                     polling=100, timeout=120_000)
                student.item = student.course.items[0]
                if meter is None:
                    idle, _ = await c.idle_rate(server.pid)
                    meter = Meter(server.pid, idle)
                cpu, ms = await meter.cost(click_tab(student, title, source))
                first.append(cpu)
                latency.append(ms)
                if number == students - 1:  # the last student: switches, and catching up with a new input
                    for i in range(switches):
                        back = i % 2 == 0
                        cpu, _ = await meter.cost(click_tab(student, other_title if back else title,
                                                            None if back else source))
                        switch.append(cpu)
                    for _ in range(switches // 2):
                        await meter.cost(click_tab(student, other_title, None))
                        cpu, _ = await meter.cost(student.act("gallery"))
                        gallery.append(cpu)
                        cpu, _ = await meter.cost(click_tab(student, title, source))
                        catch_up.append(cpu)
                await context.close()
            await browser.close()
    finally:
        server.terminate()
        server.wait()
    later = first[1:] or first
    return (f"{lesson:14s} first opening {first[0]:6.0f} ms (first student), median of the next "
            f"{statistics.median(later):6.0f} ms; switch back {statistics.median(switch):5.0f} ms; after a new "
            f"input {statistics.median(catch_up) - statistics.median(switch):5.0f} ms more than a switch "
            f"(gallery click {statistics.median(gallery):4.0f} ms); click → shown median "
            f"{statistics.median(latency):5.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--students", type=int, default=5)
    parser.add_argument("--switches", type=int, default=6)
    parser.add_argument("--model", default="mnist-cnn", choices=["mnist-cnn", "mnist-vit"])
    args = parser.parse_args()
    for lesson in args.lessons:
        print(asyncio.run(one_lesson(lesson, args.model, args.students, args.switches)), flush=True)


if __name__ == "__main__":
    main()

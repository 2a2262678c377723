"""Server CPU per gallery click with each lesson open: one student on one `explorer serve` (classroom.py's server).

    python benchmarks/gallery_cpu.py [--lessons convolution saliency ...] [--seconds 45] [--model mnist-cnn]

For each lesson: a fresh server, one student (a Chromium context) opens the app with that lesson, clicks the gallery
(classroom.py's gallery action: the digits in turn, 0.5 s between an answer and the next click) for a while to
warm up, then for `--seconds`; the server's CPU seconds over those clicks (idle rate subtracted) per click, and
the click → new prediction latency. The digits come round again every 11 clicks, as a class clicks the same ones:
results that the class shares (explorer/core/shared_results.py) are computed in the first round and read after.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
import classroom as c  # noqa: E402  (this folder's own module)

from explorer.session.state import LESSON_NAMES  # noqa: E402

WARM_UP_CLICKS = 5


async def one_lesson(lesson: str, model: str, seconds: float) -> str:
    server, url, log = c.start_server("gallery-cpu-")
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=c.CHROMIUM, args=c.CHROMIUM_FLAGS)
            await c.serving(server, log)
            context = await browser.new_context(viewport={"width": 1400, "height": 1000})
            student = c.Student(0, await context.new_page(), c.course(model, url))
            await student.page.goto(f"{url}?model={model}&lesson={lesson}", timeout=120_000)
            await student.page.wait_for_function(c.TEXT_IN, arg=["prediction-summary", "The model says"],
                                                 polling=100, timeout=120_000)
            student.item = student.course.items[0]
            for _ in range(WARM_UP_CLICKS):
                await student.act("gallery")
                await asyncio.sleep(0.5)
            idle, _ = await c.idle_rate(server.pid)
            start_cpu, start = c.cpu_s(server.pid), time.monotonic()
            latencies = []
            while time.monotonic() < start + seconds:
                latencies.append(await student.act("gallery"))
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)  # the open lesson's follow-up of the last click
            cpu = c.cpu_s(server.pid) - start_cpu - idle * (time.monotonic() - start)
            await browser.close()
    finally:
        server.terminate()
        server.wait()
    n = len(latencies)
    return (f"{lesson:14s} {n:4d} clicks   server CPU {1000 * cpu / n:6.1f} ms/click   "
            f"click → prediction median {statistics.median(latencies):5.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", nargs="+", default=list(LESSON_NAMES), choices=list(LESSON_NAMES))
    parser.add_argument("--seconds", type=float, default=45)
    parser.add_argument("--model", default="mnist-cnn", choices=["mnist-cnn", "mnist-vit"])
    args = parser.parse_args()
    for lesson in args.lessons:
        print(asyncio.run(one_lesson(lesson, args.model, args.seconds)), flush=True)


if __name__ == "__main__":
    main()

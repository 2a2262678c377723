"""Whether a student who leaves takes their memory with them: server RSS over sessions opened and closed in turn.

    python benchmarks/session_memory.py [--cycles 6] [--model mnist-cnn]

One `explorer serve` (classroom.py's server) that discards a closed page's session after 2 s instead of the
class's 2 minutes (explorer/cli.py). Each cycle, one student arrives in a new browser context, opens every lesson
(each lesson's input-dependent source shown with data, as classroom.py checks it), and closes the page; once the
server has discarded that session, its RSS is read. The first cycles grow while the process fills its caches
(models, kept results) and the allocator its arenas; after that, a session whose memory is freed leaves RSS flat
from cycle to cycle (the next session reuses what it freed), and one that leaks adds about a session with every
lesson built (tens of MB) each cycle. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
import classroom as room  # noqa: E402

DISCARD_MS = 2000  # a closed page's session is discarded this long after it closed, checked every second
SETTLE_S = 6       # > DISCARD_MS + the check's period: the session is gone when RSS is read


async def cycles(n: int, model: str) -> None:
    server, url, log = room.start_server("session-memory-",
                                         ["--unused-session-lifetime", str(DISCARD_MS),
                                          "--check-unused-sessions", "1000"])
    try:
        await room.serving(server, log)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=room.CHROMIUM, args=room.CHROMIUM_FLAGS)
            for cycle in range(n):
                context = await browser.new_context(viewport={"width": 1400, "height": 1000})
                page = await context.new_page()
                await page.goto(f"{url}?model={model}", timeout=120_000)
                await page.wait_for_function(room.TEXT_IN, arg=["prediction-summary", "The model says"],
                                             polling=100, timeout=120_000)
                for title, source in room.LESSONS.items():
                    await page.evaluate(room.ARM)
                    await page.locator(".lesson-tabs .bk-tab").filter(has_text=re.compile(rf"^{title}$")).click()
                    await page.wait_for_function(room.LESSON_SHOWN, arg=[source, None], polling=100,
                                                 timeout=120_000)
                open_mb = room.rss_mb(server.pid)
                await context.close()
                await asyncio.sleep(SETTLE_S)
                print(f"cycle {cycle}: RSS {open_mb:.0f} MB with every lesson open, {room.rss_mb(server.pid):.0f} MB "
                      f"once the session was discarded", flush=True)
            await browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"sessions the server destroyed: {log.read_text().count(room.DESTROYED)} of {n}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--model", default="mnist-cnn", choices=["mnist-cnn", "mnist-vit"])
    args = parser.parse_args()
    asyncio.run(cycles(args.cycles, args.model))


if __name__ == "__main__":
    main()

"""Screenshots of every lesson of the real app at the four screen sizes the layout is tested at.

    python scripts/screenshots.py [--out screenshots]

Serves `panel serve app.py` on a free port, opens each lesson in Debian's chromium (as tests/browser does), and for
each size scrolls the lesson's tabs to the top of the window and saves that screen: the lesson's first screen as a
student sees it after choosing it (the page brings the lesson into view so; not the full page), its tour held at
the bottom of the window. `<lesson>-<width>x<height>.png`, and `convolution-<part>-<width>x<height>.png` for the
convolution lesson's other parts. Attention is shown on mnist-vit
(on a CNN it only says that it needs a ViT), every other lesson on mnist-cnn.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Scrolls the lesson's tabs to just under the page's fixed header, in whichever box scrolls the main area (the main
# column beside the sidebar, the whole content on a narrow screen).
LESSON_AT_TOP = """(lesson) => {
  const header = document.getElementById("header").getBoundingClientRect().bottom;
  for (const box of [document.getElementById("main"), document.getElementById("content"), document.scrollingElement])
    if (box.scrollHeight > box.clientHeight && getComputedStyle(box).overflowY !== "visible") {
      box.scrollTop += lesson.getBoundingClientRect().top - header;
      return;
    }
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="folder for the PNG files")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))  # the browser tests' server and waits, from a checkout
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, serve
    from tests.browser.test_responsive import CASES, CONVOLUTION_PARTS, SIZES, open_case, settle

    args.out.mkdir(parents=True, exist_ok=True)
    with serve(ROOT / "app.py") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        for model, lesson in CASES:
            narrowest = dict(zip(("width", "height"), SIZES[0], strict=True))
            page = browser.new_page(viewport=narrowest)  # widened size by size, as the layout test does
            open_case(page, url, model, lesson)
            for part in CONVOLUTION_PARTS if lesson == "convolution" else ("",):
                if part:
                    page.set_viewport_size(narrowest)
                    page.locator(".bk-tab", has_text=re.compile(f"^{part}$")).click()
                name = lesson if part in ("", CONVOLUTION_PARTS[0]) else f"{lesson}-{part.lower().replace(' ', '-')}"
                for width, height in SIZES:
                    page.set_viewport_size({"width": width, "height": height})
                    settle(page)
                    page.locator(".lesson-tour").first.evaluate(LESSON_AT_TOP)
                    page.wait_for_timeout(200)  # a scrolled page paints its canvases in the next frames
                    path = args.out / f"{name}-{width}x{height}.png"
                    page.screenshot(path=path)
                    print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
            page.close()
        browser.close()


if __name__ == "__main__":
    main()

"""Each lesson's first screen on the real app.py: its main figure (CSS class `main-figure`) is large and in sight once
a student opens the lesson from the lesson strip, at a laptop's 1440×900 and on a 390×844 phone; on the phone, the
lesson strip and the prediction come before the sidebar's controls.

"In sight": the figure's top is below the page's header and at least SEEN_PX above the lower edge of what is
seen, the window's or the guided tour's, which sits on the window's bottom edge over the lesson.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from explorer.ui.shell import LESSONS

from .test_responsive import settle
from .test_screens import DESKTOP, PHONE, open_app, open_lesson, wait_until_in_view

SEEN_PX = 150  # of the figure's height, on the first screen: more than a title or an axis
# The least widths of the main figure and of its first figure (pruning: the weights before, 240 px of pixels and an
# axis; saliency: the first map, which grows with the lesson): at 1440 px the lesson is about 1040 px wide beside the
# sidebar, on the phone 390 px.
LEAST_WIDTH = {"desktop": {"pruning": (600, 280), "saliency": (1000, 450)},
               "phone": {"pruning": (360, 280), "saliency": (360, 360)}}
SCREENS = {"desktop": DESKTOP, "phone": PHONE}

# The open lesson's main figure and its first Bokeh figure (through shadow roots; a closed tab's lesson stays laid out,
# hidden), the header's bottom, and the top of the sticky tour where it is shown.
MEASURE = """() => {
  const shown = (el) => el.checkVisibility({visibilityProperty: true}) && el.getBoundingClientRect().width > 0;
  function find(root, selector) {
    for (const el of root.querySelectorAll(selector)) if (shown(el)) return el;
    for (const el of root.querySelectorAll("*")) {
      if (el.shadowRoot) { const hit = find(el.shadowRoot, selector); if (hit) return hit; }
    }
    return null;
  }
  const box = (el) => { const b = el.getBoundingClientRect(); return {top: b.top, width: b.width, height: b.height}; };
  const figure = find(document, ".main-figure");
  const first = figure && find(figure.shadowRoot || figure, ".bk-Figure, .bk-Canvas");
  const tour = find(document, ".lesson-tour");
  return {figure: figure && box(figure), first: first && box(first),
          header: document.getElementById("header").getBoundingClientRect().bottom,
          seen: Math.min(window.innerHeight, tour ? tour.getBoundingClientRect().top : Infinity)};
}"""

# Until the main figure's top has not moved for 500 ms: the lesson scrolls smoothly into view, and figures are laid
# out after their data arrives.
STILL = f"""() => new Promise((resolve) => {{
  const top = () => JSON.stringify(({MEASURE})().figure);
  let last = top(), since = performance.now();
  const tick = () => {{
    const now = top();
    if (now !== last) {{ last = now; since = performance.now(); }}
    if (now !== "null" && performance.now() - since >= 500) resolve(true); else requestAnimationFrame(tick);
  }};
  tick();
}})"""


# The sidebar's top and the main area's bottom, read together once neither has moved for 500 ms
SETTLED_ORDER = """() => new Promise((resolve) => {
  const read = () => ({sidebar: document.getElementById("sidebar").getBoundingClientRect().top,
                       main: document.getElementById("main").getBoundingClientRect().bottom});
  let last = JSON.stringify(read()), since = performance.now();
  const tick = () => {
    const now = read(), text = JSON.stringify(now);
    if (text !== last) { last = text; since = performance.now(); }
    if (performance.now() - since >= 500) resolve(now); else requestAnimationFrame(tick);
  };
  tick();
})"""


@pytest.fixture(params=list(SCREENS))
def screen(request, browser: Browser) -> Iterator[tuple[str, Page]]:
    context = browser.new_context(**SCREENS[request.param])
    yield request.param, context.new_page()
    context.close()


def first_screen_of(page: Page, lesson: str) -> dict:
    open_lesson(page, LESSONS[lesson].title)
    wait_until_in_view(page)
    settle(page)
    page.wait_for_function(STILL, timeout=30_000)
    return page.evaluate(MEASURE)


@pytest.mark.parametrize("lesson", ["pruning", "saliency"])
def test_the_main_figure_is_large_and_on_the_lessons_first_screen(screen, app_url: str, lesson: str):
    name, page = screen
    errors = open_app(page, app_url)
    m = first_screen_of(page, lesson)
    page.screenshot(path=f"/tmp/first-screen-{lesson}-{name}.png")
    assert m["figure"] is not None, "no main figure shown"
    figure, first = m["figure"], m["first"]
    assert m["header"] - 1 <= figure["top"] <= m["seen"] - SEEN_PX, m
    least, least_first = LEAST_WIDTH[name][lesson]
    assert figure["width"] >= least, m
    assert first is not None and first["width"] >= least_first, m
    assert errors == []


def test_on_a_phone_the_lessons_and_the_prediction_come_before_the_controls(browser: Browser, app_url: str):
    context = browser.new_context(**PHONE)
    page = context.new_page()
    errors = open_app(page, app_url)
    height = PHONE["viewport"]["height"]
    for selector in ("nav.lesson-links", ".prediction-summary"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["y"] + box["height"] <= height, f"{selector} is not on the first screen: {box}"
    # one read, once the page's layout has settled: the open lesson arrives after the first paint and lengthens the
    # main area (read apart, the sidebar's place was taken before the lesson came, the main area's after)
    boxes = page.evaluate(SETTLED_ORDER)
    assert boxes["sidebar"] >= boxes["main"] - 1  # the controls follow the main area, reached by scrolling
    page.get_by_role("button", name="Draw", exact=True).scroll_into_view_if_needed()
    assert page.get_by_role("button", name="Draw", exact=True).is_visible()
    context.close()
    assert errors == []

"""The page layout in a real browser, on the real app.py: a 1440×900 desktop and a 390×844 phone.

On a phone (its touch screen and pixel density emulated) nothing may be wider than the window (text cut at the
right edge), every lesson opened, and the page is drawn at the phone's own width; the lessons are named on the
first screen, and one opened from elsewhere comes into view; Clear takes the drawing's prediction away. (Windows of
every size, each lesson's box included: test_responsive.py.)
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import torch
from playwright.sync_api import Browser, Page, expect

from explorer.core import images, trace, zoo
from explorer.core.gallery import mnist_gallery
from explorer.ui.overview import CELL
from explorer.ui.shell import LESSONS

from .conftest import FIGURE_POINT, draw_vertical_line, place_every_part

DESKTOP = dict(viewport={"width": 1440, "height": 900})
PHONE = dict(viewport={"width": 390, "height": 844}, device_scale_factor=3, is_mobile=True, has_touch=True)

# How far the page and the main area reach past the window.
OVERFLOW = """() => {
  const main = document.getElementById("main");
  return {page: document.documentElement.scrollWidth - window.innerWidth,
          main: main.scrollWidth - main.clientWidth,
          mainRight: main.getBoundingClientRect().right - window.innerWidth};
}"""


# The open tab holds the lesson, no longer its placeholder.
LESSON_BUILT = """() => {
  const tabs = [...Bokeh.documents[0].all_models].find((m) => (m.css_classes || []).includes("lesson-tabs"));
  const first = tabs.tabs[tabs.active].child.children[0];
  return !(typeof first.text === "string" && first.text.includes("Loading the lesson"));
}"""


def traced_summary(source: object, description: str) -> re.Pattern:
    """The prediction line for `source` on mnist-cnn, from an independent path: preprocess, trace, softmax."""
    model = zoo.load("mnist-cnn")
    probs = trace.run(model.module, images.to_input(source, model.card)).logits[0].softmax(-1)
    return re.compile(rf"The model says {re.escape(model.labels[int(probs.argmax())])} \({probs.max():.1%}\) "
                      rf"for {re.escape(description)}\.")


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(**PHONE)
    yield context.new_page()
    context.close()


def open_app(page: Page, url: str) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    expect(page.locator(".prediction-summary")).to_contain_text("The model says", timeout=60_000)
    return errors


def open_lesson(page: Page, title: str) -> None:
    """Through the lesson strip, as a student would; waits until the lesson has been built and laid out."""
    page.locator("nav.lesson-links a", has_text=re.compile(f"^{title}$")).click()
    expect(page.locator("nav.lesson-links a[aria-current=page]")).to_have_text(title)
    expect(page.locator(".lesson-tabs .bk-tab.bk-active").first).to_have_text(title, timeout=30_000)
    page.wait_for_function(LESSON_BUILT, timeout=60_000)
    page.wait_for_timeout(1500)  # its figures are laid out after their data arrives


def lesson_top(page: Page) -> float:
    return page.locator(".lesson-tabs").bounding_box()["y"]


def wait_until_in_view(page: Page, timeout: float = 10) -> None:
    """Until the lesson tabs' top has scrolled (smoothly) into the upper half of the window."""
    deadline = time.monotonic() + timeout
    while not 0 <= (top := lesson_top(page)) < 450:
        assert time.monotonic() < deadline, f"the lesson stayed {top:.0f} px from the top of the window"
        page.wait_for_timeout(100)


def test_on_a_phone_no_part_of_the_page_is_wider_than_the_window_with_any_lesson_open(phone: Page, app_url: str):
    page = phone
    errors = open_app(page, app_url)
    assert page.locator('meta[name=viewport]').get_attribute("content") == "width=device-width, initial-scale=1"
    # The phone lays the page out at its own 390 px, not at 980 px zoomed out (text about 5 px on screen)
    assert page.evaluate("[window.innerWidth, window.visualViewport.scale]") == [PHONE["viewport"]["width"], 1]
    too_wide = {}
    for lesson in LESSONS.values():
        open_lesson(page, lesson.title)
        place_every_part(page)  # every part of the lesson, as a student scrolling through it sees them
        overflow = page.evaluate(OVERFLOW)
        page.screenshot(path=f"/tmp/screens-phone-{lesson.title.lower()}.png")
        # A wide figure may scroll inside its own box (the overview's strip of a deep model), never the page
        found = {key: overflow[key] for key in ("page", "main", "mainRight") if overflow[key] > 0}
        if found:
            too_wide[lesson.title] = found
    assert too_wide == {}
    assert errors == []


def test_on_a_phone_the_main_area_comes_first_and_the_sidebar_after_it_both_full_width(phone: Page, app_url: str):
    page = phone
    open_app(page, app_url)
    sidebar, main = (page.locator(selector).bounding_box() for selector in ("#sidebar", "#main"))
    assert sidebar["width"] == main["width"] == 390
    assert sidebar["y"] >= main["y"] + main["height"] - 1  # the prediction and the lessons first, the pickers after
    page.get_by_role("button", name="Toggle sidebar").click()  # folds the pickers away, the main area stays
    expect(page.locator("#sidebar")).to_be_hidden()
    assert page.locator("#main").bounding_box()["y"] == main["y"]


def test_a_digit_drawn_with_a_finger_on_a_phone_is_classified(phone: Page, app_url: str):
    page = phone
    errors = open_app(page, app_url)
    page.get_by_role("button", name="Draw", exact=True).click()
    canvas = page.get_by_role("img", name=re.compile("Drawing area"))
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x, top, bottom = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.15, box["y"] + box["height"] * 0.85
    canvas_top = box["y"]
    touch = page.context.new_cdp_session(page)  # a real touch: the browser makes the pointer events from it
    touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": top}]})
    for i in range(1, 21):
        touch.send("Input.dispatchTouchEvent",
                   {"type": "touchMove", "touchPoints": [{"x": x + 2 * (i % 2), "y": top + (bottom - top) * i / 20}]})
        page.wait_for_timeout(20)
    touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    expect(page.locator(".prediction-summary")).to_contain_text(re.compile(r"The model says 1 \(.*\) for your drawing"))
    # The finger drew, not scrolled: the canvas is where it was on the screen. (The page's scroll position may
    # move: the prediction above it changes height, and the browser's scroll anchoring keeps the canvas in place.)
    assert abs(canvas.bounding_box()["y"] - canvas_top) <= 1
    page.screenshot(path="/tmp/screens-phone-drawn.png")
    assert errors == []


def test_the_first_screen_names_every_lesson_and_a_click_there_brings_the_lesson_into_view(page: Page, app_url: str):
    page.set_viewport_size(DESKTOP["viewport"])
    errors = open_app(page, app_url)
    strip = page.locator("nav.lesson-links")
    expect(strip.locator("a")).to_have_text([lesson.title for lesson in LESSONS.values()])
    expect(strip).to_contain_text(f"{len(LESSONS)} lessons")
    expect(strip.locator("a[aria-current=page]")).to_have_text(LESSONS["convolution"].title)
    assert strip.bounding_box()["y"] + strip.bounding_box()["height"] <= 900  # on the first screen
    assert re.search(r"[?&]lesson=pruning(&|$)", strip.locator("a", has_text="Pruning").get_attribute("href"))
    assert lesson_top(page) > 900  # below the fold
    page.screenshot(path="/tmp/screens-desktop-first.png")
    strip.locator("a", has_text="Pruning").click()
    # the tabs switch once the lesson is built (2 s alone, more on a loaded machine)
    expect(page.locator(".lesson-tabs .bk-tab.bk-active").first).to_have_text("Pruning", timeout=30_000)
    expect(strip.locator("a[aria-current=page]")).to_have_text("Pruning")
    wait_until_in_view(page)
    expect(page).to_have_url(re.compile(r"[?&]lesson=pruning(&|$)"))
    page.screenshot(path="/tmp/screens-desktop-revealed.png")
    assert errors == []


def test_a_layer_clicked_in_the_overview_opens_its_lesson_in_view(page: Page, app_url: str):
    page.set_viewport_size(DESKTOP["viewport"])
    errors = open_app(page, app_url)
    page.wait_for_timeout(1000)  # the open lesson is built after the first paint
    names = zoo.load("mnist-cnn").trace(torch.zeros(1, 1, 28, 28)).names
    norm = next(n for n in names if isinstance(zoo.load("mnist-cnn").module.get_submodule(n), torch.nn.BatchNorm2d))
    assert lesson_top(page) > 900  # below the fold
    page.mouse.click(*page.evaluate(FIGURE_POINT, ["mnist-cnn:", (names.index(norm) + 1.5) * CELL, 60]))
    expect(page.locator(".lesson-tabs .bk-tab.bk-active").first).to_have_text("Normalization", timeout=30_000)
    wait_until_in_view(page)
    assert errors == []


def test_clear_takes_the_drawings_prediction_away_and_shows_the_input_from_before(page: Page, app_url: str):
    page.set_viewport_size(DESKTOP["viewport"])
    errors = open_app(page, app_url)
    item = mnist_gallery()[11]
    page.get_by_role("button", name=item.description).click()
    expect(page.locator(".prediction-summary")).to_have_text(traced_summary(item.source, item.description))
    page.get_by_role("button", name="Draw", exact=True).click()
    draw_vertical_line(page)
    expect(page.locator(".prediction-summary")).to_contain_text("for your drawing")
    page.get_by_role("button", name="Clear", exact=True).click()
    expect(page.locator(".prediction-summary")).to_have_text(traced_summary(item.source, item.description))
    expect(page.get_by_text("Input: your drawing")).to_have_count(0)
    page.screenshot(path="/tmp/screens-desktop-cleared.png")
    assert errors == []

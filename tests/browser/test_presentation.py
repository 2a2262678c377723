"""Presentation mode on the real app (`panel serve app.py`) at a projector's 1920×1080: a shared `?present=1` link
hides the sidebar and the explanations and draws body text at 24 px or more, ←/→ step the open lesson's tour (not
while typing in a field), and the header's switch turns it all back, with the URL following. The figures grow into
the room the sidebar leaves, without the page growing wider than the window, and a hover or a tap on an enlarged
figure still lands on the glyph under the pointer."""

from __future__ import annotations

import re
import time

from playwright.sync_api import Page, expect

from explorer.ui.overview import GRID_COLS, GRID_H, GRID_W

from .conftest import FIGURE_POINT, FIND_FIGURE, screenshot

PROJECTOR = {"width": 1920, "height": 1080}
POSITION = ".lesson-tour .narrative-position pre"  # the open tour's "step / steps"
LESSON = "normalization"  # its introduction is an explanation, and its batch size is a field that takes arrows
BODY_TEXT_PX = 24

# The font size of every paragraph and list item on screen in the main area, through Panel's shadow roots.
TEXT_SIZES = """() => {
  const sizes = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll("p, li")) {
      if (el.textContent.trim() && el.checkVisibility({visibilityProperty: true}))
        sizes.push([parseFloat(getComputedStyle(el).fontSize), el.textContent.trim().slice(0, 40)]);
    }
    for (const el of root.querySelectorAll("*")) if (el.shadowRoot) walk(el.shadowRoot);
  };
  walk(document.getElementById("main"));
  return sizes;
}"""


# The size of the canvas of the figure whose title starts with the argument, as drawn on the screen; or null.
CANVAS_SIZE = f"""(title) => {{
  {FIND_FIGURE}
  const view = findFigure(title);
  if (!view) return null;
  const box = view.canvas_view.el.getBoundingClientRect();
  return [box.width, box.height];
}}"""
CANVAS_BOX = f"""(title) => {{
  {FIND_FIGURE}
  const box = findFigure(title).canvas_view.el.getBoundingClientRect();
  return {{left: box.left, bottom: box.bottom, width: box.width, height: box.height}};
}}"""
# What scrolls sideways: the page, and every box in the main area that scrolls its content sideways.
SIDEWAYS = """() => {
  const wide = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll("*")) {
      if (el.scrollWidth > el.clientWidth + 1 && ["auto", "scroll"].includes(getComputedStyle(el).overflowX))
        wide.push(`${el.tagName}.${el.className}: ${el.scrollWidth} px in ${el.clientWidth}`);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document.getElementById("main"));
  const page = document.documentElement;
  if (page.scrollWidth > page.clientWidth) wide.push(`the page: ${page.scrollWidth} px in ${page.clientWidth}`);
  return wide;
}"""
# The page's change to a model's size, sent to the server (Bokeh's own reports of sizes drawn are inner_/outer_)
SIZE_SENT = re.compile(r'"attr":\s*"(frame_)?(width|height)"')
LESSON_FIGURE = "Mean before normalization"  # sized by its outer width: it grows by the whole factor
GRID = "conv 3×3, 1→16 (features.0):"  # the overview's channels of the first layer: a hover and a tap each
WIDER_GRID = "batch norm, 32 channels (features.5):"  # four rows: the server makes the figure taller
CHANNEL = 13  # second row, sixth column: a pointer off by the enlargement would land on another channel
# At 1920 px the normalization lesson and the overview fit at the largest enlargement, 1.5 (measured)
LEAST_ENLARGEMENT = 1.4


def main_width(page: Page) -> float:
    return page.locator("#main").evaluate("(main) => main.getBoundingClientRect().width")


def tour_length(page: Page) -> int:
    """n, read from the tour's position "0 / n" once it shows it. One read after an expectation can come while the
    page draws the pane again (its <pre> is empty for a moment, measured under load): the number is taken from a
    read that shows it."""
    position = page.locator(POSITION)
    expect(position).to_have_text(re.compile(r"0 / \d+"), timeout=60_000)
    deadline = time.monotonic() + 10
    while (shown := re.fullmatch(r"0 / (\d+)", position.inner_text())) is None:
        assert time.monotonic() < deadline, f"the tour's position reads {position.inner_text()!r}, not '0 / n'"
        page.wait_for_timeout(50)
    return int(shown.group(1))


def test_a_present_link_opens_a_projector_page_whose_arrows_step_the_tour_and_the_switch_turns_it_off(
        page: Page, app_url: str):
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size(PROJECTOR)
    page.goto(f"{app_url}?lesson={LESSON}&present=1")
    position = page.locator(POSITION)
    steps = tour_length(page)
    assert steps >= 3, "the arrow checks below need three steps"
    explanations = page.locator(".explanation")  # how to read the page, the overview's, the open lesson's
    switch = page.get_by_role("button", name="Present")

    expect(page.locator("html")).to_have_class(re.compile(r"\bpresenting\b"))
    expect(switch).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#sidebar")).to_be_hidden()
    assert main_width(page) == PROJECTOR["width"]  # the room that figures which stretch grow into
    expect(page.locator(".lesson-tabs .explanation")).to_have_count(1)
    expect(explanations).to_have_count(3)
    for explanation in explanations.all():
        expect(explanation).to_be_hidden()
    sizes = page.evaluate(TEXT_SIZES)
    assert sizes, "no text on screen to measure"
    small = [(size, text) for size, text in sizes if size < BODY_TEXT_PX]
    assert small == [], f"text under {BODY_TEXT_PX} px on the projector: {small}"
    screenshot(page, "presentation-1920x1080")

    page.locator("body").click(position={"x": 5, "y": 5})  # nothing focused that takes arrows
    for key, shown in [("ArrowRight", 1), ("ArrowRight", 2), ("ArrowRight", 3), ("ArrowLeft", 2)]:
        page.keyboard.press(key)
        expect(position).to_have_text(f"{shown} / {steps}")
    screenshot(page, "presentation-1920x1080-tour")

    # In a text field the arrows move the caret. Had they stepped the tour (up, twice), the step back below could
    # never show step 1: every message reaches the server in order, so no passing state can fake the answer.
    field = page.locator("#main input[type='text']").first
    field.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("ArrowLeft")
    expect(position).to_have_text(f"1 / {steps}")

    switch.click()
    expect(page).to_have_url(re.compile(r"[?&]present=0\b"))
    expect(page.locator("html")).not_to_have_class(re.compile(r"\bpresenting\b"))
    expect(switch).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#sidebar")).to_be_visible()
    assert main_width(page) < PROJECTOR["width"] - 300  # beside the sidebar again
    for explanation in explanations.all():
        expect(explanation).to_be_visible()
    assert max(size for size, _ in page.evaluate(TEXT_SIZES)) < BODY_TEXT_PX
    page.keyboard.press("ArrowRight")  # the page's own again: a step here would show step 2
    switch.click()  # after the key, so that the URL's answer comes after the key's would have
    expect(page).to_have_url(re.compile(r"[?&]present=1\b"))
    expect(position).to_have_text(f"1 / {steps}")
    expect(page.locator("#sidebar")).to_be_hidden()
    assert errors == []


def canvas_size(page: Page, title: str) -> tuple[float, float]:
    page.wait_for_function(f"(title) => ({CANVAS_SIZE})(title) !== null", arg=title)
    return tuple(page.evaluate(CANVAS_SIZE, title))


def channel_point(page: Page, channel: int, rows: int) -> tuple[float, float]:
    """The centre of a channel's cell in the overview's grid, on the screen, from the canvas's box and the grid's
    layout alone (not from Bokeh's scales): the frame fills the canvas's width and ends at its bottom."""
    box = page.evaluate(CANVAS_BOX, GRID)
    scale = box["width"] / (GRID_COLS * GRID_W)
    column, row = channel % GRID_COLS, channel // GRID_COLS
    return box["left"] + (column + 0.5) * GRID_W * scale, box["bottom"] - (rows - row - 0.5) * GRID_H * scale


def test_presenting_enlarges_the_figures_into_the_freed_width_and_their_tools_still_hit_the_glyphs(
        page: Page, app_url: str):
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sent: list[str] = []
    page.on("websocket", lambda socket: socket.on("framesent", lambda frame: sent.append(str(frame))))
    page.set_viewport_size(PROJECTOR)
    page.goto(f"{app_url}?lesson={LESSON}&present=0")
    expect(page.locator(POSITION)).to_have_text(re.compile(r"0 / \d+"), timeout=60_000)
    switch = page.get_by_role("button", name="Present")
    expect(switch).to_have_attribute("data-enlargement", "1.000")
    # The grid is one row tall until the server has filled it: 16 channels in two rows
    page.wait_for_function(f"(title) => ({CANVAS_SIZE})(title)?.[1] === {2 * GRID_H + 30}", arg=GRID)
    normal = {title: canvas_size(page, title) for title in (LESSON_FIGURE, GRID)}
    assert normal[GRID] == (GRID_COLS * GRID_W, 2 * GRID_H + 30)

    sent.clear()
    switch.click()
    expect(switch).not_to_have_attribute("data-enlargement", "1.000")
    factor = float(switch.get_attribute("data-enlargement"))
    assert LEAST_ENLARGEMENT <= factor <= 1.5
    for title, (width, height) in normal.items():
        enlarged = canvas_size(page, title)
        # within a pixel: the page rounds each size down to whole pixels, and shows the factor to three decimals
        assert abs(enlarged[0] - width * factor) <= 1 and abs(enlarged[1] - height * factor) <= 1, (title, enlarged)
    assert page.evaluate(SIDEWAYS) == []
    small = [(size, text) for size, text in page.evaluate(TEXT_SIZES) if size < BODY_TEXT_PX]
    assert small == [], f"text under {BODY_TEXT_PX} px on the projector: {small}"
    assert [frame for frame in sent if SIZE_SENT.search(frame)] == []  # the server lays nothing out again
    screenshot(page, "presentation-1920x1080-enlarged")

    page.mouse.move(*channel_point(page, CHANNEL, rows=2))
    expect(page.locator(".bk-tooltip-content").filter(has_text="number:")).to_have_text(
        re.compile(rf"number:\s*{CHANNEL}\b"))
    page.mouse.click(*channel_point(page, CHANNEL, rows=2))
    page.wait_for_function(f"(title) => ({CANVAS_SIZE})(title) !== null",
                           arg=f"conv 3×3, 1→16 (features.0), channel {CHANNEL} of 16")

    # A size the server changes while presenting (the grid grows to four rows for 32 channels) is enlarged too.
    names = page.evaluate("() => [...Bokeh.documents[0].get_model_by_name('overview-strip').data.name]")
    centres = page.evaluate("() => [...Bokeh.documents[0].get_model_by_name('overview-strip').data.cx]")
    page.mouse.click(*page.evaluate(FIGURE_POINT, ["mnist-cnn:", centres[names.index("features.5")], 60]))
    four_rows = (4 * GRID_H + 30) * factor
    page.wait_for_function(f"([title, height]) => Math.abs(({CANVAS_SIZE})(title)?.[1] - height) <= 1",
                           arg=[WIDER_GRID, four_rows])

    switch.click()
    expect(switch).to_have_attribute("data-enlargement", "1.000")
    assert canvas_size(page, LESSON_FIGURE) == normal[LESSON_FIGURE]
    assert canvas_size(page, WIDER_GRID) == (GRID_COLS * GRID_W, 4 * GRID_H + 30)  # the server's latest size
    assert errors == []

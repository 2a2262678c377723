"""Presentation mode on the real app (`panel serve app.py`) at a projector's 1920×1080: a shared `?present=1` link
hides the sidebar and the explanations and draws body text at 24 px or more, ←/→ step the open lesson's tour (not
while typing in a field), and the header's switch turns it all back, with the URL following."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from .conftest import screenshot

PROJECTOR = {"width": 1920, "height": 1080}
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


def main_width(page: Page) -> float:
    return page.locator("#main").evaluate("(main) => main.getBoundingClientRect().width")


def test_a_present_link_opens_a_projector_page_whose_arrows_step_the_tour_and_the_switch_turns_it_off(
        page: Page, app_url: str):
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size(PROJECTOR)
    page.goto(f"{app_url}?lesson={LESSON}&present=1")
    position = page.locator(".lesson-tour .narrative-position pre")
    expect(position).to_have_text(re.compile(r"0 / \d+"), timeout=60_000)
    steps = int(position.inner_text().split("/")[1])
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

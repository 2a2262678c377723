"""The real app (`panel serve app.py`): one tour on the page, under the open lesson and held at the window's bottom;
Next brings the step's section into view, above the tour, which stays in sight."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from .conftest import screenshot

# The section's box and the tour's, found through Bokeh's shadow roots (the first one on screen of each class).
BOXES = """([section]) => {
  function find(root, selector) {
    for (const el of root.querySelectorAll(selector)) if (el.getClientRects().length > 0) return el
    for (const el of root.querySelectorAll("*")) {
      if (el.shadowRoot) { const hit = find(el.shadowRoot, selector); if (hit) return hit }
    }
    return null
  }
  const target = find(document, "." + section), tour = find(document, ".lesson-tour")
  if (!target || !tour) return null
  const t = target.getBoundingClientRect(), b = tour.getBoundingClientRect()
  return {top: t.top, height: t.height, tourTop: b.top, tourBottom: b.bottom, viewport: window.innerHeight}
}"""

# True once the section's top is inside the window, above the tour, and the tour itself is in the window.
IN_VIEW = f"""([section]) => {{
  const box = ({BOXES})([section])
  return box !== null && box.tourTop >= 0 && box.tourBottom <= box.viewport + 1
      && box.top >= -1 && box.top < box.tourTop - 40
}}"""


def test_next_scrolls_the_steps_section_into_view_above_the_tour(page: Page, app_url: str):
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": 1300, "height": 900})
    page.goto(f"{app_url}?lesson=normalization")
    tour = page.locator(".lesson-tour")
    expect(tour.get_by_text("Guided tour: normalization")).to_have_count(1, timeout=60_000)
    expect(page.locator(".narrative")).to_have_count(1)  # no other tour on the page
    section = "normalization-part-3"  # section 3: the batch-size curve, far below the lesson's top
    page.wait_for_function(f"([s]) => {{ const b = ({BOXES})([s]); return b !== null && b.height > 0 }}",
                           arg=[section], timeout=60_000)
    assert page.evaluate(BOXES, [section])["top"] > 900, "the section starts out of view"
    next_button = tour.get_by_role("button", name="Next ▶")
    for step in range(1, 5):  # step 4, "One image is not a batch", is about section 3
        next_button.click()
        expect(tour.get_by_text(f"{step} / 7")).to_be_visible()
    expect(tour).to_contain_text("One image is not a batch")
    page.wait_for_function(IN_VIEW, arg=[section], timeout=15_000)
    expect(next_button).to_be_in_viewport()  # the tour stays in sight: the next step is one click away
    screenshot(page, "tour-step-4-normalization")
    assert errors == []

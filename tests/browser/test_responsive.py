"""Every lesson of the real app.py at a phone's 390×844, a tablet's 768×1024, a laptop's 1440×900 and a projector's
1920×1080: nothing wider than the window, the open lesson no wider than its box, no box that scrolls up and down
inside the page (it hides what is below its first screenful), no figure whose plot area a stretching box widened past
the frame_width it asks for (its canvas stays behind and cuts off what is drawn at its right edge), and no text under
12 px.

Text: every visible text node of the page, in open shadow roots too (Panel and Bokeh draw there), by its element's
computed font size; and the text Bokeh draws on its canvases (tick labels, legends, labels), by the font size its
model asks for. One page per lesson is opened at the phone's size and widened to each size in turn (a phone turned,
a window made wider); mnist-vit for attention, mnist-cnn for every other lesson, each part of the convolution lesson.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from explorer.ui.shell import LESSONS

from .conftest import place_every_part
from .test_screens import LESSON_BUILT

SIZES = ((390, 844), (768, 1024), (1440, 900), (1920, 1080))  # narrowest first
LEAST_FONT_PX = 12
CONVOLUTION_PARTS = ("Step through", "Playground", "Receptive field", "Filter atlas")
# A lesson that adds its sections after slow work: the text that says they have arrived
ADDED_LATER = {"attention": "1. Patches, patch embedding and positions"}
CASES = [("mnist-vit" if name == "attention" else "mnist-cnn", name) for name in LESSONS]  # attention needs a ViT

# The open lesson's box: the element of the view of the lesson tabs' active child (Bokeh views, shadow DOM).
LESSON_BOX = """function lessonBox() {
  const seen = new Set();
  const kids = (view) => [...(view.child_views || []), ...(view._child_views ? view._child_views.values() : [])];
  function find(view) {
    if (!view || seen.has(view)) return null;
    seen.add(view);
    if ((view.model.css_classes || []).includes("lesson-tabs")) {
      const child = view.model.tabs[view.model.active].child;
      return kids(view).find((k) => k.model === child) || null;
    }
    for (const k of kids(view)) { const found = find(k); if (found) return found; }
    return null;
  }
  for (const root of Object.values(Bokeh.index)) { const view = find(root); if (view) return view.el; }
  return null;
}"""

# What the page measures: widths of the page and the lesson's box, visible DOM text under the least size, and the
# font sizes Bokeh's models ask for their canvas text.
MEASURE = f"""(least) => {{
  {LESSON_BOX}
  const small = new Set(), seen = new Set(), inner = new Set();
  const walk = (root) => {{
    const texts = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let node = texts.nextNode(); node; node = texts.nextNode()) {{
      const el = node.parentElement, text = node.textContent.trim();
      if (!text || !el || seen.has(el) || ["STYLE", "SCRIPT", "TITLE"].includes(el.tagName)) continue;
      seen.add(el);
      // closed tabs stay laid out, hidden: only what is seen counts
      if (!el.checkVisibility({{visibilityProperty: true, opacityProperty: true}})) continue;
      const box = el.getBoundingClientRect();
      const size = parseFloat(getComputedStyle(el).fontSize);
      if (box.width > 0 && box.height > 0 && size < least) small.add(`${{size}} px: ${{text.slice(0, 50)}}`);
    }}
    for (const el of root.querySelectorAll("*")) {{
      if (el.shadowRoot) walk(el.shadowRoot);
      // a box that scrolls up and down inside the page hides what is below its first screenful (the template's
      // sidebar and main columns scroll on their own beside each other: they are the page)
      if (!["sidebar", "main", "content"].includes(el.id) && ["auto", "scroll"].includes(getComputedStyle(el).overflowY)
          && el.scrollHeight > el.clientHeight + 1 && el.checkVisibility({{visibilityProperty: true}}))
        inner.add(`${{el.scrollHeight}} px of ${{el.className || el.tagName}} in ${{el.clientHeight}} px`);
    }}
  }};
  walk(document);
  const lesson = lessonBox();
  // a figure sized by its plot area (frame_width) that a stretching box widened: its canvas stays behind, and what is
  // drawn at its right edge (a colour bar's labels) is cut off, which no box's scrollWidth shows
  const stretched = [], seenViews = new Set();
  const views = (view) => {{
    if (!view || seenViews.has(view)) return;
    seenViews.add(view);
    const m = view.model;
    if (m.frame_width != null && view.frame && view.el.checkVisibility({{visibilityProperty: true}})
        && view.frame.bbox.width > m.frame_width + 1)
      stretched.push(`a figure (${{m.title ? m.title.text : m.type}}) has a ` +
                     `${{view.frame.bbox.width.toFixed(0)}}-px plot area for frame_width ${{m.frame_width}}`);
    for (const k of [...(view.child_views || []), ...(view._child_views ? view._child_views.values() : [])]) views(k);
  }};
  for (const root of Object.values(Bokeh.index)) views(root);
  for (const model of Bokeh.documents[0].all_models) {{
    if (model.visible === false) continue;
    for (const [name, property] of Object.entries(model.properties)) {{
      if (!name.endsWith("font_size")) continue;
      let value = property.get_value();
      if (value && typeof value === "object") value = value.value;  // a glyph's vectorized spec
      const px = typeof value === "string" && value.endsWith("px") ? parseFloat(value) : null;
      if (px !== null && px < least) small.add(`${{model.type}}.${{name}} = ${{value}}`);
    }}
  }}
  const page = document.documentElement;
  return {{page: [page.scrollWidth, page.clientWidth], lesson: lesson && [lesson.scrollWidth, lesson.clientWidth],
          stretched, small: [...small], inner: [...inner]}};
}}"""

# Layout numbers that stop changing once the lesson has been laid out after its data arrived.
LAYOUT = f"""() => {{
  {LESSON_BOX}
  const el = lessonBox();
  return el ? [el.scrollWidth, el.scrollHeight, document.documentElement.scrollWidth] : null;
}}"""


def open_case(page: Page, url: str, model: str, lesson: str) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}?model={model}&lesson={lesson}")
    expect(page.locator(".lesson-tabs .bk-tab.bk-active").first).to_have_text(LESSONS[lesson].title, timeout=60_000)
    page.wait_for_function(LESSON_BUILT, timeout=60_000)
    if lesson in ADDED_LATER:
        expect(page.get_by_text(ADDED_LATER[lesson]).first).to_be_visible(timeout=60_000)
    place_every_part(page)  # every part of the lesson, as a student scrolling through it sees them
    return errors


def settle(page: Page, quiet_ms: int = 400, timeout_s: float = 30) -> None:
    """Until the lesson's box and the page keep their sizes for `quiet_ms`: figures are laid out after their data."""
    page.wait_for_function(f"""() => new Promise((resolve) => {{
      const layout = {LAYOUT};
      let last = JSON.stringify(layout()), since = performance.now();
      const tick = () => {{
        const now = JSON.stringify(layout());
        if (now !== last) {{ last = now; since = performance.now(); }}
        if (layout() !== null && performance.now() - since >= {quiet_ms}) resolve(true);
        else requestAnimationFrame(tick);
      }};
      tick();
    }})""", timeout=timeout_s * 1000)


def problems_at_each_size(page: Page) -> dict[str, list[str]]:
    found = {}
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        settle(page)
        m = page.evaluate(MEASURE, LEAST_FONT_PX)
        wrong = list(m["small"]) + [f"an inner scroll box: {box}" for box in m["inner"]]
        wrong += m["stretched"]
        if m["page"][0] > m["page"][1]:
            wrong.append(f"the page is {m['page'][0]} px wide in a {m['page'][1]}-px window")
        if m["lesson"] is None:
            wrong.append("no open lesson found")
        elif m["lesson"][0] > m["lesson"][1]:
            wrong.append(f"the lesson is {m['lesson'][0]} px wide in its {m['lesson'][1]}-px box")
        if wrong:
            found[f"{width}x{height}"] = wrong
    return found


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=dict(zip(("width", "height"), SIZES[0], strict=True)))
    yield context.new_page()
    context.close()


@pytest.mark.parametrize(("model", "lesson"), CASES, ids=[f"{lesson}-{model}" for model, lesson in CASES])
def test_nothing_is_wider_than_the_window_and_no_text_is_under_12_px(page: Page, app_url: str, model: str,
                                                                     lesson: str):
    errors = open_case(page, app_url, model, lesson)
    parts = CONVOLUTION_PARTS if lesson == "convolution" else ("",)
    found = {}
    for part in parts:
        if part:
            page.set_viewport_size({"width": SIZES[0][0], "height": SIZES[0][1]})
            page.locator(".bk-tab", has_text=re.compile(f"^{part}$")).click()
            expect(page.locator(".bk-tab.bk-active", has_text=re.compile(f"^{part}$"))).to_have_count(1)
        for size, wrong in problems_at_each_size(page).items():
            found[f"{part or lesson} at {size}"] = wrong
    assert found == {}
    assert errors == []

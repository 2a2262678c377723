"""The attention lesson in a real browser: a student clicks a patch and the attention shown follows it; section 6
(what attention filters) arrives and draws, on a ViT and on a CNN.

Serves tests/browser/apps/attention_app.py (the lesson alone, plus a line of text with its selection) and
leaves screenshots in screenshots/attention-*.png.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from explorer.core import zoo
from explorer.lessons import plots
from explorer.lessons.attention.view_figures import QUERY_COLOUR

from .conftest import FIGURE_BOX, click_figure, open_page, screenshot, serve

APP = "tests/browser/apps/attention_app.py"
PATCH = 7  # px: the MNIST ViT's patch side

# What the page holds for the enlarged attention map (the named Bokeh source), as a plain list.
SHOWN_MAP = """() => Array.from(Bokeh.documents[0].get_model_by_name("attention-map").data.image[0])"""


@pytest.fixture(scope="module")
def attention_url() -> Iterator[str]:
    with serve(Path(APP)) as url:
        yield url


def grid_point(layer: int, head: int, row: int, col: int) -> tuple[float, float]:
    """Data coordinates of patch (row, col) in the layer × head grid's picture of (layer, head)."""
    from explorer.lessons.attention.view import AttentionLesson

    lesson = AttentionLesson(model="mnist-vit")
    _, _, x, y, scale = lesson._heads.cell_geometry(layer, head)
    return x + (col + 0.5) * PATCH * scale, y + (row + 0.5) * PATCH * scale


def open_lesson(page: Page, url: str, model: str) -> list[str]:
    # The whole lesson on screen: click_figure needs it.
    return open_page(page, f"{url}?model={model}", "Attention: how a vision transformer looks at your image",
                     height=3300)


@pytest.mark.skipif(not zoo.is_available("mnist-vit"), reason="mnist-vit weights are not installed")
def test_clicking_a_patch_makes_it_the_query(page: Page, attention_url: str):
    errors = open_lesson(page, attention_url, "mnist-vit")
    expect(page.get_by_text("layer=blocks.0.attn head=0 query=0")).to_be_visible()
    before = page.evaluate(SHOWN_MAP)
    assert len(before) == 16 and abs(sum(before) - 1) > 1e-3  # 4×4 patches; the class token keeps some weight
    click_figure(page, "your input, cut into patches", 2.5 * PATCH, 1.5 * PATCH)  # row 1, column 2: token 7
    expect(page.get_by_text("layer=blocks.0.attn head=0 query=7")).to_be_visible()
    page.wait_for_function(f"(before) => ({SHOWN_MAP})().some((v, i) => v !== before[i])", arg=before)
    after = page.evaluate(SHOWN_MAP)
    assert len(after) == 16 and max(abs(a - b) for a, b in zip(after, before, strict=True)) > 1e-3
    expect(page.get_by_text("The query is the patch at row 1, column 2")).to_be_visible()
    for _ in range(2):  # the first Next starts the tour; step 2: the class token in the last layer
        page.get_by_role("button", name="Next ▶").click()
    expect(page.get_by_text("layer=blocks.3.attn head=0 query=0")).to_be_visible()
    page.wait_for_timeout(350)  # past Bokeh's double-tap window
    click_figure(page, "where the class token looks", *grid_point(layer=1, head=2, row=3, col=3))
    expect(page.get_by_text("layer=blocks.1.attn head=2 query=16")).to_be_visible()
    page.wait_for_timeout(300)
    screenshot(page, "attention-mnist-vit", full_page=True)
    assert errors == []


def test_a_cnn_gets_a_clear_message_instead_of_figures(page: Page, attention_url: str):
    errors = open_lesson(page, attention_url, "mnist-cnn")
    expect(page.get_by_text("This model has no attention layers")).to_be_visible()
    expect(page.get_by_text("1. Patches, patch embedding and positions")).to_be_hidden()
    expect(page.get_by_text("Guided tour: attention")).to_be_hidden()  # its steps would point at hidden figures
    expect(page.get_by_text("6. What attention filters")).to_be_visible()  # a CNN is half of its comparison
    assert page.get_by_text("Traceback").count() == 0
    screenshot(page, "attention-mnist-cnn")
    assert errors == []


SHOWN_HIGHS = """() => Array.from(Bokeh.documents[0].get_model_by_name("attention-frequency-layers").data.high)"""


def pixels_of(page: Page, colour: str, title: str) -> int:
    """How many pixels of the figure titled `title` are (nearly) `colour`, as the browser painted them."""
    box = page.evaluate(FIGURE_BOX, title)
    assert box is not None, f"no figure titled {title!r}"
    picture = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB"), dtype=int)
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(picture - rgb).sum(axis=-1) < 40).sum())


@pytest.mark.skipif(not zoo.is_available("mnist-vit"), reason="mnist-vit weights are not installed")
def test_what_attention_filters_opens_and_draws(page: Page, attention_url: str):
    errors = open_lesson(page, attention_url, "mnist-vit")
    heading = page.get_by_text("6. What attention filters")
    heading.scroll_into_view_if_needed()
    expect(heading).to_be_visible()
    # The spectra come from slow work after the page (9 stream points of mnist-vit, 12 layers of mnist-cnn, ...), at
    # background priority: on a shared, busy 2-core machine that can take a minute
    page.wait_for_function(f"() => ({SHOWN_HIGHS})().length >= 9", timeout=180_000)
    highs = page.evaluate(SHOWN_HIGHS)
    assert all(isinstance(h, float | int) for h in highs)
    expect(page.get_by_text("attention layers lower it")).to_be_visible()
    page.wait_for_timeout(300)  # the canvases paint after the data arrives
    # the first model's line (mnist-vit, the first categorical colour) and the chosen layer's thick curve are painted
    assert pixels_of(page, plots.CATEGORICAL[0], "high frequencies through the network") > 50
    assert pixels_of(page, QUERY_COLOUR, "Δ log amplitude over frequency") > 50
    screenshot(page, "attention-frequency", full_page=True)
    assert errors == []

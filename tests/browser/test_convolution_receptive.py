"""The receptive-field panel and the filter atlas in Chromium, used as a student would.

Serves tests/browser/apps/convolution_parts_app.py; leaves screenshots in screenshots/convolution-rf-*.png
and screenshots/convolution-atlas-*.png.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from explorer.core import zoo

from .conftest import click_figure, screenshot, select_layer, serve

APP = "tests/browser/apps/convolution_parts_app.py"

# A source's data as text in the page, to compare before and after a click.
SOURCE_DATA = """(name) => {
  const source = Bokeh.documents[0].get_model_by_name(name);
  return JSON.stringify(Object.entries(source.data).map(([k, v]) => [k, Array.from(v, (x) =>
      (x && x.length !== undefined) ? Array.from(x).reduce((a, b) => (a * 31 + b) % 1000000007, 7) : x)]));
}"""


@pytest.fixture(scope="module")
def parts_url() -> Iterator[str]:
    with serve(Path(APP)) as url:
        yield url


def open_parts(page: Page, url: str, model: str, first: str) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": 1300, "height": 1100})
    page.goto(f"{url}?model={model}")
    expect(page.get_by_text(f"receptive={first}")).to_be_visible(timeout=60_000)
    page.wait_for_timeout(500)  # the canvas paints after the text arrives
    return errors


def data(page: Page, name: str) -> str:
    return page.evaluate(SOURCE_DATA, name)


def test_clicking_a_unit_moves_the_box_and_the_heat_map(page: Page, parts_url: str):
    errors = open_parts(page, parts_url, "mnist-cnn", "features.0")
    expect(page.get_by_text("receptive=features.0 unit=(14, 14)")).to_be_visible()
    expect(page.locator(".rf-summary").get_by_text("a 3×3 px theoretical receptive field")).to_be_visible()
    box, heat = data(page, "convolution-rf-box"), data(page, "convolution-rf-erf")
    click_figure(page, "features.0, channel 0", 5.5, 20.5)  # column 5, row 20
    expect(page.get_by_text("receptive=features.0 unit=(20, 5)")).to_be_visible()
    expect(page.locator(".rf-summary").get_by_text("can see input rows 19…21 and columns 4…6")).to_be_visible()
    page.wait_for_timeout(300)
    assert data(page, "convolution-rf-box") != box
    assert data(page, "convolution-rf-erf") != heat
    # A deeper layer, picked in the depth plot: its field is larger
    select_layer(page.get_by_role("combobox", name="Layer").first, "features.8")
    expect(page.get_by_text("receptive=features.8 unit=(3, 3)")).to_be_visible()
    expect(page.locator(".rf-summary").get_by_text("a 18×18 px theoretical receptive field")).to_be_visible()
    page.wait_for_timeout(400)
    screenshot(page, "convolution-rf-mnist-cnn", full_page=True)
    assert errors == []


def test_opening_the_atlas_and_changing_the_sort(page: Page, parts_url: str):
    errors = open_parts(page, parts_url, "mnist-cnn", "features.0")
    page.locator(".bk-tab", has_text="Filter atlas").click()
    expect(page.locator(".atlas-legend").get_by_text("All 16 filters")).to_be_visible()
    filters = data(page, "convolution-atlas-filters")
    maps = data(page, "convolution-atlas-maps")
    page.get_by_role("button", name="L2 norm").click()
    expect(page.get_by_text("atlas=features.0 sort=L2 norm")).to_be_visible()
    expect(page.locator(".atlas-legend").get_by_text("largest weights first")).to_be_visible()
    page.wait_for_timeout(300)
    assert data(page, "convolution-atlas-filters") != filters
    assert data(page, "convolution-atlas-maps") != maps  # the maps follow the filters' order
    page.wait_for_timeout(300)
    screenshot(page, "convolution-atlas-mnist-cnn", full_page=True)
    assert errors == []


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
def test_mobilenet_atlas_flags_the_near_zero_rgb_filters(page: Page, parts_url: str):
    errors = open_parts(page, parts_url, "mobilenet_v2", "features.0.0")
    select_layer(page.get_by_role("combobox", name="Layer").first, "features.7.conv.1.0")  # depthwise, 14×14
    expect(page.get_by_text("receptive=features.7.conv.1.0 unit=(7, 7)")).to_be_visible(timeout=15_000)
    expect(page.locator(".rf-summary").get_by_text("a 75×75 px theoretical receptive field")).to_be_visible()
    page.wait_for_timeout(400)
    screenshot(page, "convolution-rf-mobilenet", full_page=True)
    page.locator(".bk-tab", has_text="Filter atlas").click()
    # The session has one layer: the atlas opens on the one picked in the receptive field, and its menu picks another
    expect(page.get_by_text("atlas=features.7.conv.1.0")).to_be_visible(timeout=15_000)
    select_layer(page.get_by_role("combobox", name="Layer").first, "features.0.0")  # the visible one: the atlas's
    expect(page.get_by_text("receptive=features.0.0 unit=(56, 56) atlas=features.0.0")).to_be_visible(timeout=15_000)
    legend = page.locator(".atlas-legend")
    expect(legend.get_by_text("an RGB composite")).to_be_visible()
    expect(legend.get_by_text("5 of 32")).to_be_visible()
    page.get_by_role("button", name="L2 norm").click()
    expect(page.get_by_text("atlas=features.0.0 sort=L2 norm")).to_be_visible()
    page.wait_for_timeout(400)
    screenshot(page, "convolution-atlas-mobilenet", full_page=True)
    assert errors == []

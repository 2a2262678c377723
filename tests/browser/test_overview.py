"""The overview in a real browser: clicks on the canvas select layers and channels; pictures keep their orientation.

Serves tests/browser/apps/overview_app.py (the overview alone, plus a line of text with the state it
writes) and leaves screenshots in screenshots/overview-*.png.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bokeh.embed import file_html
from bokeh.layouts import row
from bokeh.models import LinearColorMapper
from bokeh.plotting import figure
from bokeh.resources import INLINE
from PIL import Image
from playwright.sync_api import Page, expect

from explorer.core import zoo
from explorer.lessons import plots
from explorer.ui.overview import CELL, GRID_H, GRID_W

from .conftest import click_figure, screenshot, serve

APP = "tests/browser/apps/overview_app.py"



@pytest.fixture(scope="module")
def overview_url() -> Iterator[str]:
    with serve(Path(APP)) as url:
        yield url


def open_overview(page: Page, url: str, model: str, first_layer: str) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": 1400, "height": 950})
    page.goto(f"{url}?model={model}")
    expect(page.get_by_text(f"layer={first_layer} lesson=convolution channel=0")).to_be_visible(timeout=30_000)
    page.wait_for_timeout(300)  # the canvas paints after the text arrives
    return errors


def strip_x(names: tuple[str, ...], name: str) -> float:
    return (names.index(name) + 1.5) * CELL  # column 0 holds the input picture


def traced_names(model: str) -> tuple[str, ...]:
    from explorer.session.state import ExplorerState

    state = ExplorerState()
    state.model = model
    return state.ensure().trace.names


def test_clicking_a_cnn_layer_and_a_channel_selects_them(page: Page, overview_url: str):
    errors = open_overview(page, overview_url, "mnist-cnn", "features.0")
    names = traced_names("mnist-cnn")
    click_figure(page, "mnist-cnn:", strip_x(names, "features.5"), 60)
    expect(page.get_by_text("layer=features.5 lesson=normalization channel=0")).to_be_visible()
    expect(page.get_by_text("(features.5) · BatchNorm2d · output 1×32×14×14")).to_be_visible()
    expect(page.locator(".layer-summary")).to_contain_text("can be folded into the convolution before it")
    click_figure(page, "batch norm, 32 channels (features.5):", 3 * GRID_W + GRID_W / 2, GRID_H / 2)  # channel 3
    expect(page.get_by_text("layer=features.5 lesson=normalization channel=3")).to_be_visible()
    expect(page.get_by_text("features.5, channel 3 of 32")).to_have_count(0)  # a canvas title, not DOM text
    click_figure(page, "mnist-cnn:", strip_x(names, "features.4"), 60)  # often within Bokeh's double-tap window
    expect(page.get_by_text("layer=features.4 lesson=convolution channel=3")).to_be_visible()  # channel kept
    page.wait_for_timeout(300)
    screenshot(page, "overview-mnist-cnn", full_page=True)
    assert errors == []


@pytest.mark.skipif(not zoo.is_available("mnist-vit"), reason="mnist-vit weights are not installed")
def test_clicking_a_vit_attention_layer_opens_the_attention_lesson(page: Page, overview_url: str):
    errors = open_overview(page, overview_url, "mnist-vit", "patch_embed")
    names = traced_names("mnist-vit")
    click_figure(page, "mnist-vit:", strip_x(names, "blocks.0.attn"), 60)
    expect(page.get_by_text("layer=blocks.0.attn lesson=attention channel=0")).to_be_visible()
    click_figure(page, "self-attention, 4 heads (blocks.0.attn):", 2 * GRID_W + GRID_W / 2, GRID_H / 2)  # head 2
    expect(page.get_by_text("layer=blocks.0.attn lesson=attention channel=2")).to_be_visible()
    expect(page.locator(".layer-summary")).to_contain_text("0 parameters of its own")
    page.wait_for_timeout(300)
    screenshot(page, "overview-mnist-vit", full_page=True)
    assert errors == []


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 weights are not installed")
def test_mobilenet_strip_scrolls_inside_the_page(page: Page, overview_url: str):
    errors = open_overview(page, overview_url, "mobilenet_v2", "features.0.0")
    names = traced_names("mobilenet_v2")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400  # the strip scrolls, not the page
    click_figure(page, "mobilenet_v2:", strip_x(names, "features.2.conv.1.1"), 60)
    expect(page.get_by_text("layer=features.2.conv.1.1 lesson=normalization channel=0")).to_be_visible()
    expect(page.get_by_text("Channels 0–63 of 96")).to_be_visible()  # a page of 64 at a time
    page.wait_for_timeout(300)
    screenshot(page, "overview-mobilenet_v2", full_page=True)
    assert errors == []


def test_the_logits_are_labelled_with_their_classes(page: Page, overview_url: str):
    errors = open_overview(page, overview_url, "mnist-cnn", "features.0")
    names = traced_names("mnist-cnn")
    click_figure(page, "mnist-cnn:", strip_x(names, "classifier"), 60)
    expect(page.get_by_text("layer=classifier lesson=convolution channel=0")).to_be_visible()
    expect(page.get_by_text("These are the model's 10 logits")).to_be_visible()
    page.wait_for_timeout(300)
    screenshot(page, "overview-mnist-cnn-logits", full_page=True)
    assert errors == []


def test_pictures_render_with_row_zero_at_the_top(page: Page):
    """to_rgba on a pixel_range (the strip and grid) and a colour-mapped image (the big view), as drawn."""
    values = np.zeros((4, 4))
    values[0, :] = 1.0   # top row: +limit, red
    values[1:, 0] = -1.0  # left column below it: -limit, blue
    rgba_fig = figure(width=200, height=200, x_range=(0, 4), y_range=plots.pixel_range(4), toolbar_location=None,
                      min_border=0)
    rgba_fig.image_rgba(image=[plots.to_rgba(values, signed=True, limit=1.0)], x=0, y=0, dw=4, dh=4)
    mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1)
    mapped_fig = figure(width=200, height=200, x_range=(0, 4), y_range=plots.pixel_range(4), toolbar_location=None,
                        min_border=0)
    mapped_fig.image(image=[values], x=0, y=0, dw=4, dh=4, color_mapper=mapper)
    for fig in (rgba_fig, mapped_fig):
        fig.axis.visible = False
    page.set_content(file_html(row(rgba_fig, mapped_fig), INLINE, "orientation"))
    canvases = page.locator(".bk-Canvas")
    expect(canvases).to_have_count(2)
    page.wait_for_timeout(300)
    red, blue = plots.DIVERGING[-1], plots.DIVERGING[0]
    for i in range(2):
        shot = np.asarray(Image.open(io.BytesIO(canvases.nth(i).screenshot())).convert("RGB")).astype(int)
        assert np.abs(cell(shot, 0, 2) - rgb(red)).max() <= 2, "row 0 must be drawn at the top"
        assert np.abs(cell(shot, 3, 0) - rgb(blue)).max() <= 2, "column 0 must be drawn on the left"
        assert np.abs(cell(shot, 3, 3) - 255).max() <= 2, "zero must be white"  # 2: canvas colour rounding


def cell(shot: np.ndarray, r: int, c: int) -> np.ndarray:
    """The screenshot's colour at the middle of cell (r, c) of a 4×4 picture filling it."""
    h, w, _ = shot.shape
    return shot[int((r + 0.5) * h / 4), int((c + 0.5) * w / 4)]


def rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[k:k + 2], 16) for k in (1, 3, 5)])

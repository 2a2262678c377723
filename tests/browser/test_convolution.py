"""The convolution lesson in a real browser: stepping the window shows the value F.conv2d computes there.

Serves tests/browser/apps/convolution_app.py (the lesson alone, plus a line with the state it writes)
and leaves screenshots in screenshots/convolution-*.png.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch.nn.functional as F
from playwright.sync_api import Page, expect

from explorer.core import zoo
from explorer.session.state import ExplorerState

from .conftest import screenshot, select_layer, serve

APP = "tests/browser/apps/convolution_app.py"


@pytest.fixture(scope="module")
def convolution_url() -> Iterator[str]:
    with serve(Path(APP)) as url:
        yield url


def open_lesson(page: Page, url: str, query: str = "parts=none", first_layer: str = "features.0") -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"{url}?{query}")
    expect(page.get_by_text(f"layer={first_layer} channel=0")).to_be_visible(timeout=60_000)
    # The page writes the arithmetic once the step-through's positions arrive: slow work answering after the lesson
    # shows, seconds later for MobileNetV2's 112×112 positions on a loaded machine (5 s was too short once in CI).
    expect(page.locator(".conv-arithmetic")).to_be_visible(timeout=60_000)
    return errors


def shown_number(page: Page, selector: str) -> float:
    return float(page.locator(selector).first.inner_text().replace("−", "-"))


def conv_output(model: str, layer: str, channel: int) -> tuple:
    """What F.conv2d computes for the layer on the app's default input: (output map, trace)."""
    inference = ExplorerState(model=model).ensure()
    conv = inference.model.module.get_submodule(layer)
    record = inference.trace[layer]
    out = F.conv2d(record.input, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return out[0, channel], inference.trace


def test_stepping_the_window_shows_the_conv2d_value(page: Page, convolution_url: str):
    errors = open_lesson(page, convolution_url)
    select_layer(page.get_by_role("combobox", name="Convolution"), "features.4")
    expect(page.get_by_text("layer=features.4 channel=0")).to_be_visible()
    expect(page.get_by_text("(of 0–195)")).to_be_visible()
    expected, trace = conv_output("mnist-cnn", "features.4", 0)
    step = page.get_by_role("button", name="Step ▶")
    for k in range(1, 18):  # into the second row: output row 1, column 3
        step.click()
        expect(page.get_by_text(f"Window position {k}", exact=True)).to_be_visible()
        i, j = divmod(k, 14)
        assert shown_number(page, ".conv-value") == pytest.approx(float(expected[i, j]), rel=5e-3, abs=1e-3)
    expect(page.get_by_text("output row 1, column 3")).to_be_visible()
    # what follows: BatchNorm, then ReLU, as the model computed them
    after = [shown_number(page, f".conv-after >> nth={n}") for n in range(2)]
    assert after[0] == pytest.approx(float(trace["features.5"].output[0, 0, 1, 3]), rel=5e-3, abs=1e-3)
    assert after[1] == pytest.approx(float(trace["features.6"].output[0, 0, 1, 3]), rel=5e-3, abs=1e-3)
    page.get_by_role("button", name="◀ Step").click()
    expect(page.get_by_text("Window position 16", exact=True)).to_be_visible()
    page.wait_for_timeout(200)
    screenshot(page, "convolution-step-through", full_page=True)
    page.get_by_role("button", name="▶ Play").click()
    page.wait_for_timeout(1200)  # 8 positions per second
    page.get_by_role("button", name="❚❚ Pause").click()
    position = int(page.locator(".conv-arithmetic b").first.inner_text().split()[-1])
    assert 18 <= position <= 40, f"playing for 1.2 s at 8 per second reached position {position}"
    assert errors == []


def test_playground_shows_the_size_formula_and_errors(page: Page, convolution_url: str):
    errors = open_lesson(page, convolution_url)
    page.locator(".bk-tab", has_text="Playground").click()
    expect(page.get_by_text("⌊(28 + 2·1 − 1·(3 − 1) − 1) / 1⌋ + 1 = 28").first).to_be_visible()
    editor = page.get_by_role("textbox", name="Kernel (one row per line)")
    before = editor.input_value()
    page.get_by_role("combobox", name="Image").select_option("camera")
    page.get_by_role("combobox", name="Preset").select_option("Gabor")
    expect(page.get_by_text("⌊(128 + 2·1 − 1·(3 − 1) − 1) / 1⌋ + 1 = 128").first).to_be_visible()
    # the server writes the Gabor kernel into the editor: typed before it arrives, the text would be overwritten
    expect(editor).not_to_have_value(before)
    editor.fill("1 2\n3")
    editor.blur()
    expect(page.get_by_text("every kernel row needs the same number of values; got rows of 2, 1.")).to_be_visible()
    editor.fill("1 0 -1\n2 0 -2\n1 0 -1")
    editor.blur()
    expect(page.locator(".playground-error")).to_be_hidden()
    page.wait_for_timeout(300)
    screenshot(page, "convolution-playground", full_page=True)
    assert errors == []


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 weights are not installed")
def test_mobilenet_depthwise_window(page: Page, convolution_url: str):
    errors = open_lesson(page, convolution_url, "model=mobilenet_v2&parts=none", "features.0.0")
    select_layer(page.get_by_role("combobox", name="Convolution"), "features.2.conv.1.0")
    expect(page.get_by_text("only input channel 0 (1 of 96)")).to_be_visible()
    expected, _ = conv_output("mobilenet_v2", "features.2.conv.1.0", 0)
    page.get_by_role("button", name="Step ▶").click()
    expect(page.get_by_text("Window position 1", exact=True)).to_be_visible()
    assert shown_number(page, ".conv-value") == pytest.approx(float(expected[0, 1]), rel=5e-3, abs=1e-3)
    page.wait_for_timeout(200)
    screenshot(page, "convolution-mobilenet-depthwise", full_page=True)
    assert errors == []


def test_whole_lesson_opens_every_tab(page: Page, convolution_url: str):
    """With the optional parts (receptive field, filter atlas) where they are present."""
    errors = open_lesson(page, convolution_url, "model=mnist-cnn")
    tabs = page.locator(".bk-tab").all_inner_texts()
    assert tabs[:2] == ["Step through", "Playground"]
    for title in tabs[2:]:
        page.locator(".bk-tab", has_text=title).click()
        page.wait_for_timeout(6000)  # the tab's Viewer is built when it first opens
        screenshot(page, f"convolution-{title.lower().replace(' ', '-')}", full_page=True)
    page.locator(".bk-tab", has_text="Step through").click()
    for _ in range(2):  # this lesson's narrative (the first): Next starts it, then step 2, the playground
        page.get_by_role("button", name="Next ▶").first.click()
    expect(page.get_by_text("⌊(28 + 2·1 − 1·(3 − 1) − 1) / 1⌋ + 1 = 28").first).to_be_visible()
    assert errors == []

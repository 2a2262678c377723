"""The normalization lesson in a real browser: a student changes the kind and the batch size and reads the numbers.

Serves tests/browser/apps/normalization_app.py (the lesson alone) and leaves screenshots in
screenshots/normalization-*.png. The expected numbers come from torch.nn.functional on the traced layer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch.nn.functional as F
from playwright.sync_api import Page, expect

from explorer.lessons import plots
from explorer.session.state import ExplorerState

from .conftest import place_every_part, screenshot, serve

APP = "tests/browser/apps/normalization_app.py"


@pytest.fixture(scope="module")
def lesson_url() -> Iterator[str]:
    with serve(Path(APP)) as url:
        yield url


def open_lesson(page: Page, url: str, model: str) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": 1300, "height": 1000})
    page.goto(f"{url}?model={model}")
    expect(page.locator(".normalization-axes")).to_contain_text("BatchNorm", timeout=60_000)
    place_every_part(page)  # sections 3 to 6 lie below the first screen
    page.wait_for_timeout(300)  # the canvases paint after the text arrives
    return errors


def test_changing_the_kind_and_the_batch_size_updates_the_numbers(page: Page, lesson_url: str):
    errors = open_lesson(page, lesson_url, "mnist-cnn")
    axes = page.locator(".normalization-axes")
    # features.1 takes (batch, 16, 28, 28): BatchNorm keeps 16 statistics, shared by 8 × 784 values each
    expect(axes).to_contain_text("the 6,272 highlighted values")
    expect(axes).to_contain_text("this layer's input (8×16×28×28) gets 16 separate means and variances")
    screenshot(page, "normalization-mnist-cnn", full_page=True)

    page.get_by_role("button", name="LayerNorm", exact=True).click()
    expect(axes).to_contain_text("LayerNorm: one per sample")
    expect(axes).to_contain_text("the 12,544 highlighted values")  # 16 channels × 784 positions of your image
    expect(axes).to_contain_text("gets 8 separate means and variances")

    page.get_by_role("button", name="GroupNorm", exact=True).click()
    expect(axes).to_contain_text("group of 4 channels (4 groups)")
    expect(axes).to_contain_text("gets 32 separate means and variances")

    # Batch size 1: BatchNorm in train mode normalizes your image by its own statistics
    record = ExplorerState(model="mnist-cnn").ensure().trace["features.1"]
    own = F.batch_norm(record.input, None, None, record.params["weight"], record.params["bias"], training=True)
    expected = plots.format_value(float((own - record.output).abs().mean()))
    page.get_by_role("button", name="1", exact=True).click()
    batch = page.locator(".normalization-batch")
    expect(batch).to_contain_text(f"Train vs eval at batch size 1: BatchNorm with the batch's statistics changes your "
                                  f"output at features.1 by {expected} on average")
    expect(page.locator(".normalization-prediction")).to_contain_text(re.compile(r"batch of 1: the model gives"))
    page.get_by_role("button", name="256", exact=True).click()
    expect(batch).to_contain_text("Train vs eval at batch size 256")
    expect(page.locator(".normalization-stats")).to_contain_text("the batch of 256 has")
    page.wait_for_timeout(300)
    screenshot(page, "normalization-mnist-cnn-batch256", full_page=True)
    assert errors == []


def test_vit_layer_norm_does_not_depend_on_the_batch(page: Page, lesson_url: str):
    errors = open_lesson(page, lesson_url, "mnist-vit")
    page.get_by_role("button", name="LayerNorm", exact=True).click()
    axes = page.locator(".normalization-axes")
    expect(axes).to_contain_text("LayerNorm: one per token, over its 64 features")
    page.get_by_role("button", name="32", exact=True).click()
    batch = page.locator(".normalization-batch")
    expect(batch).to_contain_text("Batch size 32: this layer is a LayerNorm, which never looks at the other samples")
    page.wait_for_timeout(300)
    screenshot(page, "normalization-mnist-vit", full_page=True)
    assert errors == []

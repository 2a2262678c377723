"""The quantization lesson in a real browser: a student moves the bits slider; accuracy and prediction follow; after
a model switch every result on the page names the new model.

Serves tests/browser/apps/quantization_app.py and leaves screenshots in screenshots/quantization-*.png.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from explorer.session.tags import MODEL_TAG

from .conftest import open_page, place_every_part, screenshot, serve

APP = "tests/browser/apps/quantization_app.py"
MEASURED = 120_000  # ms: an accuracy pass over 10,000 test digits on a busy 2-core machine
# The `explorer-model=` tags of every model of the page's Bokeh document
MODEL_TAGS = f"""() => [...Bokeh.documents[0].all_models].flatMap(m => m.tags)
    .filter(t => typeof t === "string" && t.startsWith("{MODEL_TAG}"))"""


@pytest.fixture(scope="module")
def quantization_url() -> Iterator[str]:
    with serve(Path(APP)) as url:
        yield url


def open_lesson(page: Page, url: str, model: str) -> list[str]:
    errors = open_page(page, f"{url}?model={model}", "Quantization, step by step", width=1400, height=1800)
    place_every_part(page)  # the curves lie below the first screen
    return errors


def text_of(page: Page, css_class: str) -> str:
    """The text a pane shows (Panel draws it inside the element's shadow root)."""
    return page.locator(f".{css_class}").first.evaluate("e => (e.shadowRoot || e).textContent")


def press_slider(page: Page, key: str, times: int) -> None:
    """Move the bits slider with the keyboard, one step per key press, as a student may."""
    handle = page.locator(".noUi-handle").first
    handle.focus()
    for _ in range(times):
        handle.press(key)


def test_fewer_bits_change_the_accuracy_and_the_prediction_shown(page: Page, quantization_url: str):
    errors = open_lesson(page, quantization_url, "mnist-cnn")
    expect(page.get_by_text("bits=8 act_bits=0 granularity=per-tensor")).to_be_visible()
    accuracy, summary = page.locator(".quantization-accuracy"), page.locator(".quantization-summary")
    expect(accuracy).to_contain_text("10,000 images")  # at once: kept, or said to be measuring
    expect(accuracy).not_to_contain_text("measuring", timeout=MEASURED)
    expect(accuracy).to_contain_text("quantized")
    expect(accuracy).to_contain_text("n = 10,000")  # each accuracy with its 95 % interval
    expect(summary).to_contain_text("8-bit symmetric per-tensor weights")  # the input's explanation has arrived
    before_accuracy, before_summary = text_of(page, "quantization-accuracy"), text_of(page, "quantization-summary")
    assert "8-bit symmetric per-tensor weights" in before_summary
    press_slider(page, "ArrowLeft", 6)  # 8 → 2 bits
    expect(page.get_by_text("bits=2 act_bits=0")).to_be_visible()
    expect(summary).to_contain_text("2-bit symmetric per-tensor weights")
    expect(page.locator(".quantization-arithmetic")).to_contain_text("qmin = −2 to qmax = 1 (4 marks)")
    expect(accuracy).not_to_have_text(before_accuracy, timeout=MEASURED)
    expect(accuracy).not_to_contain_text("measuring", timeout=MEASURED)
    after = text_of(page, "quantization-accuracy")
    assert "float32 99.60%" in after and "points lost" in after
    shown_before = before_summary.split("quantized says")[1].split(",")[0]
    shown_after = text_of(page, "quantization-summary").split("quantized says")[1].split(",")[0]
    assert shown_after != shown_before  # the quantized model's answer or its probability moved
    page.wait_for_timeout(500)
    screenshot(page, "quantization-mnist-cnn", full_page=True)
    assert errors == []


def test_the_tour_sets_the_controls(page: Page, quantization_url: str):
    errors = open_lesson(page, quantization_url, "mnist-cnn")
    for _ in range(3):  # the first Next starts the tour at step 1; step 3
        page.get_by_role("button", name="Next ▶").click()
    expect(page.get_by_text("bits=4 act_bits=0 granularity=per-channel scheme=symmetric clip=min-max")
           ).to_be_visible()
    expect(page.get_by_text("One scale per channel")).to_be_visible()
    expect(page.locator(".quantization-summary")).to_contain_text("4-bit symmetric per-channel weights")
    assert errors == []


def test_real_int8_is_built_and_measured(page: Page, quantization_url: str):
    errors = open_lesson(page, quantization_url, "mnist-cnn")
    page.get_by_role("button", name="Build real int8 with onnxruntime").click()
    result = page.locator(".quantization-int8")
    expect(result).to_contain_text("× smaller", timeout=MEASURED)
    text = text_of(page, "quantization-int8")
    assert "file size" in text and "latency, 100 images (median of" in text and "MNIST test set, 10,000 images" in text
    assert "95 % intervals of the accuracy" in text
    page.wait_for_timeout(300)
    screenshot(page, "quantization-int8", full_page=True)
    assert errors == []


def test_after_a_model_switch_every_result_names_the_new_model(page: Page, quantization_url: str):
    errors = open_lesson(page, quantization_url, "mnist-cnn")
    accuracy = page.locator(".quantization-accuracy")
    expect(accuracy).not_to_contain_text("measuring", timeout=MEASURED)
    before = text_of(page, "quantization-accuracy")
    assert set(page.evaluate(MODEL_TAGS)) == {MODEL_TAG + "mnist-cnn"}
    page.locator(".model-picker select").select_option("mnist-vit")
    expect(page.locator(".quantization-arithmetic")).to_contain_text("The arithmetic of patch_embed")
    expect(accuracy).not_to_have_text(before)
    tags = page.evaluate(MODEL_TAGS)
    assert len(tags) >= 15 and set(tags) == {MODEL_TAG + "mnist-vit"}
    expect(accuracy).not_to_contain_text("measuring", timeout=MEASURED)
    assert set(page.evaluate(MODEL_TAGS)) == {MODEL_TAG + "mnist-vit"}
    assert errors == []

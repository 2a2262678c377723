"""The pruning lesson in a real browser: a student drags the sparsity slider and the prediction and accuracy follow;
kept curves and sensitivities arrive with the page.

Serves tests/browser/apps/pruning_app.py and leaves screenshots in screenshots/pruning-*.png.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from explorer.core import zoo
from explorer.lessons.pruning import math as pm
from explorer.lessons.pruning import measured
from explorer.lessons.pruning.measured import Point

from .conftest import open_page, place_every_part, screenshot, serve

APP = "tests/browser/apps/pruning_app.py"
SHOWN_PROBS = """() => Array.from(Bokeh.documents[0].get_model_by_name("pruning-pruned").data.prob)"""
SHOWN = """(name) => Object.fromEntries(Object.entries(Bokeh.documents[0].get_model_by_name(name).data)
    .map(([k, v]) => [k, Array.from(v, (x) => (ArrayBuffer.isView(x) ? Array.from(x) : x))]))"""
MEASURED = 120_000  # ms: one accuracy pass over 10,000 test digits on a busy 2-core machine


@pytest.fixture(scope="module")
def pruning_url() -> Iterator[str]:
    with serve(Path(APP)) as url:
        yield url


def open_lesson(page: Page, url: str, model: str) -> list[str]:
    errors = open_page(page, f"{url}?model={model}", "Guided tour: pruning", height=2000)
    place_every_part(page)  # the curves lie below the first screen
    return errors


def drag_slider_to(page: Page, fraction: float) -> None:
    """Press the slider's handle and drag it to `fraction` of the track, as a student would."""
    handle = page.locator(".noUi-handle").first
    track = page.locator(".noUi-base").first.bounding_box()
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + fraction * track["width"], box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()


def test_dragging_the_slider_changes_prediction_and_measured_accuracy(page: Page, pruning_url: str):
    errors = open_lesson(page, pruning_url, "mnist-cnn")
    expect(page.get_by_text("method=magnitude scope=layer sparsity=50")).to_be_visible()
    accuracy, prediction = page.locator(".pruning-accuracy"), page.locator(".pruning-prediction")
    expect(accuracy).to_contain_text("Accuracy at 50 %:", timeout=MEASURED)
    expect(prediction).to_contain_text("pruned at 50 %")
    before = page.evaluate(SHOWN_PROBS)
    drag_slider_to(page, 0.97)
    expect(page.get_by_text(re.compile(r"method=magnitude scope=layer sparsity=9\d"))).to_be_visible()
    expect(prediction).to_contain_text(re.compile(r"pruned at 9\d %"))
    assert page.evaluate(SHOWN_PROBS) != before  # the pruned model's bars changed
    expect(accuracy).to_contain_text(re.compile(r"Accuracy at 9\d %: \*?\*?\d+\.\d\d%"), timeout=MEASURED)
    expect(accuracy).to_contain_text("measured on MNIST test set, 10,000 images")
    expect(accuracy).to_contain_text("n = 10,000")  # with its 95 % interval
    expect(accuracy).to_contain_text("dense model: 99.60%")
    page.wait_for_timeout(300)
    screenshot(page, "pruning-mnist-cnn", full_page=True)
    assert errors == []


def test_structured_step_of_the_tour_shows_real_speed(page: Page, pruning_url: str):
    errors = open_lesson(page, pruning_url, "mnist-cnn")
    for _ in range(5):  # the first Next starts the tour at step 1; step 5
        page.get_by_role("button", name="Next ▶").click()
    expect(page.get_by_text("method=filters-l1 scope=layer sparsity=40")).to_be_visible()
    page.get_by_role("button", name="Measure latency").click()
    expect(page.locator(".pruning-speed")).to_contain_text("physically smaller model", timeout=60_000)
    page.wait_for_timeout(300)
    screenshot(page, "pruning-structured", full_page=True)
    assert errors == []


def _all_kept(name: str) -> bool:
    """Every point the lesson opens on is kept (stored beside the card, or in this machine's cache)."""
    model = zoo.load(name)
    points = [*measured.curve_points("layer"), *measured.sensitivity_points(model, "magnitude", 0.5)]
    return all(measured.kept(model, p) is not None for p in points)


@pytest.mark.skipif(not _all_kept("mnist-cnn"), reason="run `explorer measure mnist-cnn` first")
def test_kept_curves_and_sensitivity_arrive_with_the_page(page: Page, pruning_url: str):
    errors = open_lesson(page, pruning_url, "mnist-cnn")
    curves, bars = page.evaluate(SHOWN, "pruning-curves"), page.evaluate(SHOWN, "pruning-sensitivity")
    model = zoo.load("mnist-cnn")
    for method, xs, ys in zip(pm.METHODS, curves["xs"], curves["ys"], strict=True):
        assert xs == pytest.approx([100 * a for a in measured.CURVE_AMOUNTS])
        assert ys == pytest.approx([100 * measured.kept(model, Point(method, a)) for a in measured.CURVE_AMOUNTS])
    assert bars["layer"] == list(pm.prunable_layers(model.module))
    assert bars["top1"] == pytest.approx(
        [100 * measured.kept(model, Point("magnitude", 0.5, "layer", n)) for n in bars["layer"]])
    top1 = measured.kept(model, Point("magnitude", 0.5))
    # in the page's first document: nothing is measured, so no measuring time to wait for
    expect(page.locator(".pruning-accuracy")).to_contain_text(f"Accuracy at 50 %: {top1:.2%}", timeout=2_000)
    assert errors == []

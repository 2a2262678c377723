"""Shared links on the real app (`panel serve app.py`), one per lesson: a student sets the input and a few settings
with the page's own controls, the page's URL follows, and that URL opened in a new browser context (another
student) shows the same screen: the same controls' values, input and prediction."""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, Page, expect

from explorer.core import input_link, zoo
from explorer.core.gallery import mnist_gallery

from .conftest import draw_vertical_line, select_layer
from .test_app import summary

TIMEOUT_MS = 60_000  # a lesson's first build on a loaded machine
DRAWN_POINTS = 21    # draw_vertical_line: the pen down, then 20 moves, each to a new pixel


def active(page: Page, name: str):
    """The button of a button group (a radio button group, the input's modes) named `name`."""
    return page.get_by_role("button", name=name, exact=True)


def pick_digit(index: int) -> Callable[[Page], None]:
    def pick(page: Page) -> None:
        page.get_by_role("button", name=mnist_gallery()[index].description).click()
    return pick


def draw(page: Page) -> None:
    page.get_by_role("button", name="Draw", exact=True).click()
    page.get_by_role("img", name=re.compile("Drawing area")).scroll_into_view_if_needed()  # the lesson is lower down
    draw_vertical_line(page, wiggle=True, pause_ms=20)
    expect(page.locator(".prediction-summary")).to_contain_text("for your drawing", timeout=TIMEOUT_MS)


@dataclass(frozen=True)
class Case:
    query: str                              # what the first student opens
    ready: str                              # a text shown once the lesson is built
    act: Callable[[Page], None]             # the settings the student chooses, with the page's controls
    url: dict[str, str]                     # what the URL must then hold
    check: Callable[[Page], None]           # the controls' values on the other student's page
    description: str                        # the input's description


def convolution_act(page: Page) -> None:
    pick_digit(4)(page)
    select_layer(page.get_by_role("combobox", name="Convolution"), "features.4")
    page.locator(".bk-tab", has_text="Playground").click()
    page.get_by_role("combobox", name="Preset").select_option("Gabor")


def convolution_check(page: Page) -> None:
    expect(page.locator(".bk-tab.bk-active", has_text="Playground")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_role("combobox", name="Preset")).to_have_value("Gabor")


def normalization_act(page: Page) -> None:
    active(page, "LayerNorm").click()
    active(page, "32").click()
    draw(page)


def normalization_check(page: Page) -> None:
    expect(active(page, "LayerNorm")).to_have_class(re.compile(r"\bbk-active\b"), timeout=TIMEOUT_MS)
    expect(active(page, "32")).to_have_class(re.compile(r"\bbk-active\b"))
    expect(active(page, "Draw")).to_have_class(re.compile(r"\bbk-active\b"))  # the drawing's tab, with the drawing
    ink = page.get_by_role("img", name=re.compile("Drawing area")).evaluate(
        "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.filter((v, i) => i % 4 == 0 && v > 127)"
        ".length")
    assert ink > 1000, "the drawing is not on the canvas"


def attention_act(page: Page) -> None:
    pick_digit(22)(page)
    page.get_by_role("combobox", name="Query token").select_option(label="patch (row 2, column 3)")
    page.locator(".attention-part-4").scroll_into_view_if_needed()  # rollout, below the first screen
    active(page, "max").click()


def attention_check(page: Page) -> None:
    expect(page.get_by_role("combobox", name="Query token")).to_have_value("patch (row 2, column 3)",
                                                                           timeout=TIMEOUT_MS)
    page.locator(".attention-part-4").scroll_into_view_if_needed()
    expect(active(page, "max")).to_have_class(re.compile(r"\bbk-active\b"))
    expect(page.get_by_text("Head: 2")).to_be_visible()


def pruning_act(page: Page) -> None:
    pick_digit(9)(page)
    active(page, "random (baseline)").click()
    active(page, "one threshold over all layers").click()


def pruning_check(page: Page) -> None:
    expect(active(page, "random (baseline)")).to_have_class(re.compile(r"\bbk-active\b"), timeout=TIMEOUT_MS)
    expect(active(page, "one threshold over all layers")).to_have_class(re.compile(r"\bbk-active\b"))
    expect(page.get_by_text("Sparsity").first).to_be_visible()


def quantization_act(page: Page) -> None:
    pick_digit(15)(page)
    active(page, "affine").click()
    page.get_by_role("combobox", name="Activation bits").select_option(label="4 bits")


def quantization_check(page: Page) -> None:
    expect(active(page, "affine")).to_have_class(re.compile(r"\bbk-active\b"), timeout=TIMEOUT_MS)
    expect(page.get_by_role("combobox", name="Activation bits")).to_have_value("4 bits")


def saliency_act(page: Page) -> None:
    pick_digit(27)(page)
    page.get_by_role("combobox", name="IG baseline").select_option("blurred")
    page.get_by_role("combobox", name="Class explained").select_option("3")


def saliency_check(page: Page) -> None:
    expect(page.get_by_role("combobox", name="IG baseline")).to_have_value("blurred", timeout=TIMEOUT_MS)
    expect(page.get_by_role("combobox", name="Class explained")).to_have_value("3")


CASES = {
    "convolution": Case("?lesson=convolution", "Convolution, step by step", convolution_act,
                        {"lesson": "convolution", "layer": "features.4", "tab": "Playground", "kernel": "Gabor",
                         "input": f"gallery:{mnist_gallery()[4].key}"}, convolution_check,
                        mnist_gallery()[4].description),
    "normalization": Case("?lesson=normalization", "Guided tour: normalization", normalization_act,
                          {"lesson": "normalization", "norm": "layer", "batch": "32"}, normalization_check,
                          "your drawing"),
    "attention": Case("?model=mnist-vit&lesson=attention&channel=2", "Guided tour: attention", attention_act,
                      {"model": "mnist-vit", "channel": "2", "fusion": "max",
                       "input": f"gallery:{mnist_gallery()[22].key}"},
                      attention_check, mnist_gallery()[22].description),
    "pruning": Case("?lesson=pruning&sparsity=80", "Guided tour: pruning", pruning_act,
                    {"sparsity": "80", "prune": "random", "scope": "global",
                     "input": f"gallery:{mnist_gallery()[9].key}"}, pruning_check, mnist_gallery()[9].description),
    "quantization": Case("?lesson=quantization&bits=3", "Quantization, step by step", quantization_act,
                         {"bits": "3", "scheme": "affine", "act_bits": "4",
                          "input": f"gallery:{mnist_gallery()[15].key}"}, quantization_check,
                         mnist_gallery()[15].description),
    "saliency": Case("?lesson=saliency", "Guided tour: saliency", saliency_act,
                     {"baseline": "blurred", "target": "3", "input": f"gallery:{mnist_gallery()[27].key}"},
                     saliency_check, mnist_gallery()[27].description),
}


def wait_for_query(page: Page, expected: dict[str, str]) -> None:
    """Until the page's URL holds every expected value (the server writes it as the settings change)."""
    page.wait_for_function("""(expected) => {
      const query = new URLSearchParams(window.location.search);
      return Object.entries(expected).every(([name, value]) => query.get(name) === value);
    }""", arg=expected, timeout=TIMEOUT_MS)


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def open_student(browser: Browser, url: str, ready: str) -> tuple[Page, list[str]]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    expect(page.get_by_text(ready).first).to_be_visible(timeout=TIMEOUT_MS)
    return page, errors


def shown_input(page: Page, model: str, points: int | None) -> tuple[object, str]:
    """The input the page's URL names, decoded independently of the page; for a drawing, once the URL holds its last
    update (`points` points: the canvas also sends the stroke while it grows)."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        name = query_of(page.url)["input"]
        source, description = input_link.input_named(name, zoo.card(model))
        if points is None or sum(map(len, source.strokes)) == points or time.monotonic() > deadline:
            return source, description
        page.wait_for_timeout(50)


@pytest.mark.parametrize("lesson", list(CASES))
def test_a_shared_link_opens_the_same_screen(lesson: str, browser: Browser, app_url: str):
    case = CASES[lesson]
    page, errors = open_student(browser, app_url + case.query, case.ready)
    case.act(page)
    wait_for_query(page, case.url)
    model = query_of(page.url).get("model", "mnist-cnn")
    source, description = shown_input(page, model, DRAWN_POINTS if case.description == "your drawing" else None)
    assert description == case.description
    said = summary(model, source, description)  # the prediction, computed here from what the URL names
    expect(page.locator(".prediction-summary")).to_have_text(said, timeout=TIMEOUT_MS)
    shared = page.url

    other, other_errors = open_student(browser, shared, case.ready)
    wait_for_query(other, case.url)
    case.check(other)
    expect(other.get_by_text(f"Input: {case.description}", exact=True)).to_be_visible()
    expect(other.locator(".prediction-summary")).to_have_text(said)
    expect(other.get_by_text(re.compile("The link asked for|The link's input"))).to_have_count(0)  # none refused
    assert query_of(other.url) == query_of(shared), "the new page's URL differs from the one it opened"
    assert errors == [] and other_errors == []
    page.context.close()
    other.context.close()


def test_a_bad_link_says_which_values_it_could_not_use(browser: Browser, app_url: str):
    page, errors = open_student(browser, f"{app_url}?lesson=pruning&input=gallery:chelsea&sparsity=500",
                                "Guided tour: pruning")
    expect(page.get_by_role("alert").filter(has_text="The link asked for sparsity=500")).to_be_visible(
        timeout=TIMEOUT_MS)
    wait_for_query(page, {"sparsity": "50", "input": f"gallery:{mnist_gallery()[0].key}"})
    expect(page.get_by_text(f"Input: {mnist_gallery()[0].description}", exact=True)).to_be_visible()
    assert errors == []
    page.context.close()

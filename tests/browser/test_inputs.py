"""The input picker in a real browser: gallery clicks, uploads and drawings reach the model.

Served alone (tests/browser/apps/inputs_app.py) beside a line "prediction: L (p%) | input: ...";
every expected prediction is computed here independently, with trace.run on images.to_input.
"""

from __future__ import annotations

import io
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from explorer.core import images, trace, zoo
from explorer.core.gallery import mnist_gallery, photo_gallery
from explorer.ui.inputs import too_large_message
from tests.browser.conftest import screenshot as save_screenshot
from tests.browser.conftest import serve

APP = Path(__file__).resolve().parent / "apps" / "inputs_app.py"
MODEL = "mnist-cnn"  # ExplorerState's default model


@pytest.fixture(scope="module")
def inputs_url() -> Iterator[str]:
    with serve(Path(APP)) as url:
        yield url


@pytest.fixture
def app(page: Page, inputs_url: str) -> Iterator[Page]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": 900, "height": 1000})
    page.goto(inputs_url)
    expect(page.locator(".prediction")).to_contain_text("prediction:", timeout=30_000)
    yield page
    assert errors == []


@pytest.fixture
def rnd() -> random.Random:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"random seed {seed}")  # pytest shows it on failure
    return random.Random(seed)


def predicted(source: object) -> str:
    """The independent path: preprocess, trace, argmax."""
    model = zoo.load(MODEL)
    logits = trace.run(model.module, images.to_input(source, model.card)).logits
    return model.labels[int(logits.argmax())]


def prediction_line(label: str, description: str) -> re.Pattern:
    return re.compile(rf"prediction: {re.escape(label)} \(.*\) \| input: {re.escape(description)}$")


def screenshot(page: Page, name: str) -> None:
    save_screenshot(page, f"inputs-{name}", full_page=True)


def png(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_clicking_a_gallery_digit_shows_its_traced_prediction(app: Page, rnd: random.Random):
    gallery = mnist_gallery()
    i = rnd.randrange(1, len(gallery) - 1)  # not the first (the default input) nor the last (it has no next)
    item, following = gallery[i], gallery[i + 1]
    button = app.get_by_role("button", name=item.description)
    expect(button).to_have_attribute("aria-pressed", "false")
    button.click()
    expect(app.locator(".prediction")).to_have_text(prediction_line(predicted(item.source), item.description))
    expect(button).to_have_attribute("aria-pressed", "true")
    expect(app.get_by_role("img", name=f"What {MODEL} sees: {item.description}, 28×28 px")).to_be_visible()
    app.keyboard.press("ArrowRight")  # focus moves to the next thumbnail; Enter picks it
    app.keyboard.press("Enter")
    expect(app.locator(".prediction")).to_have_text(prediction_line(predicted(following.source), following.description))
    screenshot(app, "gallery")


def test_a_bad_upload_shows_its_error_and_the_app_keeps_working(app: Page, rnd: random.Random):
    default = mnist_gallery()[0]  # the first input of a new session
    before = prediction_line(predicted(default.source), default.description)
    expect(app.locator(".prediction")).to_have_text(before)
    app.get_by_role("button", name="Upload", exact=True).click()
    chooser = app.locator("input[type=file]")
    chooser.set_input_files(files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"my homework"}])
    alert = app.get_by_role("alert")
    with pytest.raises(images.InputError) as error:
        images.open_image(b"my homework", "notes.txt")
    expect(alert).to_have_text(str(error.value))
    expect(app.locator(".prediction")).to_have_text(before)
    screenshot(app, "upload-error")

    size = images.MAX_BYTES + 1  # kept back by the browser, never sent to the server
    chooser.set_input_files(files=[{"name": "huge.png", "mimeType": "image/png", "buffer": bytes(size)}])
    expect(alert).to_have_text(too_large_message("huge.png", size))
    expect(app.locator(".prediction")).to_have_text(before)

    item = rnd.choice(mnist_gallery())
    data = png(255 - item.source)  # dark ink on white paper, as a scan would be
    chooser.set_input_files(files=[{"name": "scan.png", "mimeType": "image/png", "buffer": data}])
    expect(app.locator(".prediction")).to_have_text(prediction_line(predicted(data), "upload: scan.png"))
    expect(alert).to_be_hidden()
    screenshot(app, "upload")

    app.get_by_role("button", name="Gallery", exact=True).click()
    other = rnd.choice(mnist_gallery())
    app.get_by_role("button", name=other.description).click()
    expect(app.locator(".prediction")).to_have_text(prediction_line(predicted(other.source), other.description))


def test_drawing_a_vertical_line_updates_the_prediction_while_drawing_and_reads_one(app: Page):
    default = mnist_gallery()[0]  # the first input of a new session: Clear brings it back
    app.get_by_role("button", name="Draw", exact=True).click()
    canvas = app.get_by_role("img", name=re.compile("Drawing area"))
    expect(canvas).to_be_visible()
    box = canvas.bounding_box()
    x = box["x"] + box["width"] / 2
    top, bottom = box["y"] + box["height"] * 0.15, box["y"] + box["height"] * 0.85
    app.mouse.move(x, top)
    app.mouse.down()
    for i in range(1, 11):  # the first half of the stroke, slowly: throttled updates arrive meanwhile
        app.mouse.move(x, top + (bottom - top) * i / 20)
        app.wait_for_timeout(40)
    expect(app.locator(".prediction")).to_contain_text("input: your drawing")  # the mouse is still down
    for i in range(11, 21):
        app.mouse.move(x, top + (bottom - top) * i / 20)
    app.mouse.up()
    expect(app.locator(".prediction")).to_have_text(prediction_line("1", "your drawing"))
    expect(app.get_by_role("img", name=f"What {MODEL} sees: your drawing, 28×28 px")).to_be_visible()
    # Live mode computed the same answer in the page, without the server.
    app.wait_for_function("window.explorerLive && window.explorerLive.runs > 0 && !window.explorerLive.busy",
                          timeout=60_000)
    live_logits = app.evaluate("() => Array.from(window.explorerLive.logits)")
    assert max(range(10), key=live_logits.__getitem__) == 1
    screenshot(app, "draw")

    app.get_by_role("button", name="Clear").click()  # the input from before the drawing comes back
    expect(app.get_by_role("alert")).to_be_hidden()
    expect(app.locator(".prediction")).to_have_text(prediction_line(predicted(default.source), default.description))


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="run `explorer fetch mobilenet_v2` first")
def test_an_imagenet_model_offers_photos_and_classifies_the_clicked_one(page: Page, inputs_url: str):
    page.set_viewport_size({"width": 900, "height": 1000})
    page.goto(f"{inputs_url}?model=mobilenet_v2")
    photos = photo_gallery()
    expect(page.locator(".prediction")).to_contain_text(f"input: {photos[0].description}", timeout=30_000)
    for item in photos:
        expect(page.get_by_role("button", name=item.description)).to_be_visible()
    item = photos[1]
    page.get_by_role("button", name=item.description).click()
    model = zoo.load("mobilenet_v2")
    expected = model.labels[int(trace.run(model.module, images.to_input(item.source, model.card)).logits.argmax())]
    expect(page.locator(".prediction")).to_have_text(prediction_line(expected, item.description))
    expect(page.get_by_role("img", name=f"What mobilenet_v2 sees: {item.description}, 224×224 px")).to_be_visible()
    screenshot(page, "photos")

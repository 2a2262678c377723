"""The Camera input tab in Chromium, with Chromium's fake camera playing a photo of a handwritten digit.

The fake camera (--use-fake-device-for-media-stream) plays a Y4M file made here: an MNIST test digit written
dark on slightly uneven white paper. Checked on the real app (`panel serve app.py`): the tab shows the video;
the page's 28x28 input equals the Python reference of the same steps on the very frame the page took
(explorer.core.images' conversion of a photo of a digit, then scikit-image's Otsu threshold); the page's logits
equal torch's on that input; the frames per second appear; "Take picture" makes the server classify that frame
as an uploaded photo (the prediction line says so, computed here on an independent path), with no traceback
in the server's log. A page whose camera permission is denied, and one without getUserMedia (an insecure
context), show their messages; leaving the tab or hiding the page stops the camera. (The JS steps are checked
one by one on random photos in Node.js: tests/test_export_site.py.)
"""

from __future__ import annotations

import os
import re
import statistics
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from explorer.core import images, trace, zoo
from explorer.core.gallery import mnist_gallery
from explorer.ui.camera import CAPTURE_PX
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, ROOT, screenshot, serve
from tests.test_export_site import camera_digit_reference

FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
MODEL = "mnist-cnn"  # the app's default model
FRAME_W, FRAME_H = 640, 480


@pytest.fixture(scope="module")
def digit() -> tuple[str, np.ndarray]:
    """An MNIST test digit other than the app's default input (a 0): its label and its 28x28 pixels."""
    item = next(item for item in mnist_gallery() if item.description.startswith("MNIST test digit 3"))
    return "3", item.source


def paper_photo(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`pixels` (white on black, 28x28) as dark ink on white paper with uneven light: FRAME_H x FRAME_W grey levels."""
    ink = np.asarray(Image.fromarray(pixels).resize((224, 224), Image.Resampling.BILINEAR), np.float32) / 255
    photo = np.linspace(235, 200, FRAME_W)[None, :] + rng.normal(0, 2, (FRAME_H, FRAME_W))  # a shadow to the right
    top, left = (FRAME_H - 224) // 2, (FRAME_W - 224) // 2
    photo[top:top + 224, left:left + 224] *= 1 - 0.85 * ink
    return np.clip(np.rint(photo), 0, 255).astype(np.uint8)


def write_y4m(path: Path, grey: np.ndarray, frames: int = 2) -> None:
    """A grey picture as a YUV 4:2:0 video (Y4M, full-range "jpeg" chroma siting) for Chromium's fake camera."""
    h, w = grey.shape
    chroma = np.full((h // 2) * (w // 2), 128, np.uint8).tobytes()  # no colour
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + grey.tobytes() + chroma + chroma)


@pytest.fixture(scope="module")
def camera_browser(playwright, digit, tmp_path_factory) -> Iterator[Browser]:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"paper noise seed {seed}")  # pytest shows it on failure
    rng = np.random.default_rng(seed)
    video = tmp_path_factory.mktemp("camera") / "digit.y4m"
    write_y4m(video, paper_photo(digit[1], rng))
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
        *CHROMIUM_FLAGS, *FAKE_CAMERA, f"--use-file-for-fake-video-capture={video}"])
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """The real app, with its log kept for the test to read."""
    log = tmp_path_factory.mktemp("log") / "panel.log"
    with serve(ROOT / "app.py", log=log) as url:
        yield url, log


def open_camera_tab(page: Page, url: str) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(url)
    expect(page.locator(".prediction-summary")).to_contain_text("The model says", timeout=60_000)
    page.get_by_role("button", name="Camera", exact=True).click()
    return errors


def predicted_summary(source: object, description: str) -> re.Pattern:
    """The app's prediction line for `source`, computed on an independent path: preprocess, trace, softmax."""
    model = zoo.load(MODEL)
    probs = trace.run(model.module, images.to_input(source, model.card)).logits[0].softmax(-1)
    label = model.labels[int(probs.argmax())]
    return re.compile(rf"The model says {re.escape(label)} \({probs.max():.1%}\) for {re.escape(description)}\.")


def test_the_camera_tab_predicts_live_and_take_picture_sends_the_frame(camera_browser, served, digit):
    url, log = served
    label, _ = digit
    page = camera_browser.new_page()
    errors = open_camera_tab(page, url)
    expect(page.get_by_text("frames per second")).to_be_visible(timeout=60_000)
    page.wait_for_timeout(3000)  # a few seconds of frames, for the rate
    got = page.evaluate("""() => { const c = window.explorerCamera; return { rgba: Array.from(c.rgba),
        pixels: c.pixels, input: c.input, logits: c.logits, fps: c.fps, frames: c.frames, backend: c.backend } }""")
    video = page.get_by_label("The camera's picture")
    assert video.evaluate("v => v.videoWidth") == FRAME_W and not video.evaluate("v => v.paused")
    rgba = np.array(got["rgba"], np.uint8).reshape(CAPTURE_PX, CAPTURE_PX, 4)
    expected = camera_digit_reference(rgba)
    assert expected is not None, "the fake camera's frame holds a digit"
    np.testing.assert_array_equal(np.array(got["pixels"], np.uint8).reshape(28, 28), expected)
    model = zoo.load(MODEL)
    x = images.view_to_input(expected, model.card)
    np.testing.assert_array_equal(np.array(got["input"], np.float32), x.numpy().ravel())
    logits = trace.run(model.module, x).logits[0]
    np.testing.assert_allclose(got["logits"], logits.numpy(), atol=1e-4, rtol=0)  # float32 kernels differ
    assert model.labels[int(logits.argmax())] == label
    expect(page.locator(".bar.best")).to_contain_text(label)
    assert got["fps"] > 0
    print(f"camera live mode ({got['backend']}): {got['fps']} frames per second, square -> digit -> model -> bars "
          f"median {statistics.median(got['frames']):.1f} ms over {len(got['frames'])} frames")
    screenshot(page, "camera-live")

    page.get_by_role("button", name="Take picture").click()
    page.wait_for_function("window.explorerCamera.pictures === 1")
    sent = np.array(page.evaluate("() => Array.from(window.explorerCamera.picture)"), np.uint8)
    expect(page.locator(".prediction-summary")).to_have_text(
        predicted_summary(sent.reshape(CAPTURE_PX, CAPTURE_PX, 4), "camera picture 1"), timeout=30_000)
    expect(page.locator(".prediction-summary")).to_contain_text(f"The model says {label} (")
    assert errors == []
    assert "Traceback" not in log.read_text()
    page.close()


def test_a_denied_camera_shows_how_to_allow_it(playwright, served):
    url, _ = served
    # --use-fake-ui-for-media-stream accepts every request, whatever the context's permissions: without it, a
    # context that is not granted the camera is refused it (NotAllowedError), as when a student clicks "Block".
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, FAKE_CAMERA[0]])
    try:
        page = browser.new_context(permissions=[]).new_page()
        open_camera_tab(page, url)
        expect(page.get_by_role("alert").filter(has_text="The camera is blocked for this page")).to_be_visible(
            timeout=30_000)
        assert page.get_by_role("button", name="Take picture").is_disabled()
        assert page.evaluate("() => window.explorerCamera.liveTracks()") == []
        screenshot(page, "camera-denied")
    finally:
        browser.close()


def test_without_getusermedia_the_page_says_the_camera_needs_https_or_localhost(camera_browser, served):
    url, _ = served
    page = camera_browser.new_page()
    # What an http page from another host sees: no navigator.mediaDevices at all.
    page.add_init_script("Object.defineProperty(Navigator.prototype, 'mediaDevices', { get: () => undefined })")
    open_camera_tab(page, url)
    expect(page.get_by_role("alert").filter(has_text="The camera needs a secure page")).to_contain_text(
        "https, or at http://localhost")
    page.close()


def test_leaving_the_tab_or_hiding_the_page_stops_the_camera(camera_browser, served):
    url, _ = served
    page = camera_browser.new_page()
    open_camera_tab(page, url)
    page.wait_for_function("window.explorerCamera?.streaming", timeout=60_000)
    assert page.evaluate("() => window.explorerCamera.liveTracks()") == ["video"]
    tracks = "() => window.explorerCamera.liveTracks()"
    page.get_by_role("button", name="Gallery", exact=True).click()
    page.wait_for_function("!window.explorerCamera.streaming")
    assert page.evaluate(tracks) == []
    page.get_by_role("button", name="Camera", exact=True).click()
    page.wait_for_function("window.explorerCamera.streaming")
    page.evaluate("""() => {
        Object.defineProperty(document, 'visibilityState', { value: 'hidden', configurable: true })
        document.dispatchEvent(new Event('visibilitychange')) }""")
    page.wait_for_function("!window.explorerCamera.streaming")
    assert page.evaluate(tracks) == []
    page.close()

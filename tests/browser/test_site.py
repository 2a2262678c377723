"""The static export in Chromium: served by `python -m http.server`, a student picks a sample and draws a digit.

The logits (and feature maps, attention maps) computed by onnxruntime-web in the page equal torch's on the
same input within 1e-4, and the page's drawing -> 28x28 conversion matches the server's (images.to_input).
"""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from playwright.sync_api import Page

from explorer.core import data, images, trace, zoo
from explorer.web import site
from tests.browser.conftest import CHROMIUM, free_port, screenshot
from tests.core.test_export import torch_value

MODELS = ["mnist-cnn", "mnist-vit"]
# A "4": two strokes in canvas pixels (280 x 280 canvas).
FOUR = [[(90, 50), (70, 150), (190, 150)], [(170, 60), (170, 240)]]


@pytest.fixture(scope="module", params=MODELS)
def site_url(request, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """The site for one model, exported and served by Python's static file server on a free port."""
    folder = tmp_path_factory.mktemp(request.param)
    site.build(request.param, folder, backends=("wasm",))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d",
                               str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                pytest.fail("python -m http.server did not start")
            time.sleep(0.2)
    try:
        yield request.param, url
    finally:
        server.terminate()
        server.wait(timeout=10)


class IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with the headers that make a page cross-origin isolated (SharedArrayBuffer, threads)."""

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve_isolated(folder: Path) -> Iterator[str]:
    """`folder` over HTTP with cross-origin isolation headers, on a free port, in a thread; yields the URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()),
                                             functools.partial(IsolatedHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def open_site(page: Page, url: str) -> None:
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    page.wait_for_function("window.explorer && (window.explorer.runs > 0 || window.explorer.error)", timeout=60_000)
    assert page.evaluate("window.explorer.error") is None
    assert all(r.startswith(url) for r in requests), f"fetched from elsewhere: {requests}"


def finished_run(page: Page, action) -> dict:
    """Do `action`, wait for the next forward pass to finish, return what the page computed."""
    runs = page.evaluate("window.explorer.runs")
    action()
    page.wait_for_timeout(100)  # the last frame's drawing is handed over
    page.wait_for_function(f"window.explorer.runs > {runs} && !window.explorer.busy", timeout=30_000)
    return page.evaluate("""() => { const e = window.explorer; return {
        input: Array.from(e.input), pixels: Array.from(e.pixels), logits: e.logits, source: e.source,
        strokes: e.strokes, backend: e.backend, threads: e.threads,
        outputs: Object.fromEntries(Object.entries(e.outputs).map(([k, v]) => [k, Array.from(v.data)])) } }""")


def check_against_torch(name: str, got: dict) -> torch.Tensor:
    model = zoo.load(name)
    x = torch.tensor(got["input"], dtype=torch.float32).view(1, 1, 28, 28)
    t = trace.run(model.module, x)
    np.testing.assert_allclose(got["logits"], t.logits[0].numpy(), atol=1e-4, rtol=0)
    metadata = site.export.default_layers(model.module)
    for layer in metadata:
        np.testing.assert_allclose(got["outputs"][layer], torch_value(t, layer).ravel(),
                                   atol=1e-4, rtol=0, err_msg=layer)
    return t.logits[0]


def test_a_sample_digit_gives_torchs_logits(site_url, page: Page):
    name, url = site_url
    open_site(page, url)
    got = finished_run(page, lambda: page.locator("#samples button").nth(7).click())
    assert got["source"] == "sample:7" and got["backend"] == "wasm" and got["threads"] == 1
    sample = site.sample_digits()[7]
    assert got["pixels"] == sample["pixels"]
    expected = data.normalize_digits(np.array(sample["pixels"], np.uint8).reshape(1, 28, 28), (0.1307,), (0.3081,))
    np.testing.assert_array_equal(np.array(got["input"], np.float32), expected.numpy().ravel())
    logits = check_against_torch(name, got)
    shown = page.locator("#verdict").inner_text()
    assert shown.startswith(f"The model says {int(logits.argmax())} (")
    assert page.locator(".bar").count() == 10


def draw(page: Page, strokes) -> None:
    box = page.locator("#draw").bounding_box()
    scale = box["width"] / 280
    for stroke in strokes:
        (x0, y0), *rest = stroke
        page.mouse.move(box["x"] + x0 * scale, box["y"] + y0 * scale)
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=12)
        page.mouse.up()


def test_a_drawn_digit_gives_torchs_logits_and_the_servers_input(site_url, page: Page):
    name, url = site_url
    open_site(page, url)
    got = finished_run(page, lambda: draw(page, FOUR))
    assert got["source"] == "drawing"
    logits = check_against_torch(name, got)
    assert int(logits.argmax()) == 4
    server = images.model_view(images.Strokes(got["strokes"], 280, 280), zoo.card(name))
    browser = np.array(got["pixels"], np.uint8).reshape(28, 28)
    # The browser rasterizes with canvas antialiasing, the server with Pillow: the faint edge pixels differ, which can
    # move the ink's bounding box, and so the placed digit, by one pixel.
    aligned = min(np.abs(np.roll(browser.astype(int), (dy, dx), (0, 1)) - server).mean()
                  for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert aligned < 6, (browser, server)
    server_logits = zoo.load(name).module(images.to_input(images.Strokes(got["strokes"], 280, 280), zoo.card(name)))
    assert int(server_logits.argmax()) == int(logits.argmax())
    path = screenshot(page, f"site-{name}", full_page=True)
    assert path.exists()


def test_clearing_and_the_layer_picker(site_url, page: Page):
    name, url = site_url
    open_site(page, url)
    options = page.locator("#layer option")
    assert options.count() == (4 if name == "mnist-cnn" else 1)
    module = zoo.load(name).module
    first = site.export.default_layers(module)[0]
    assert page.locator("#maps canvas").count() == trace.run(module, torch.zeros(1, 1, 28, 28))[first].output.shape[1]
    if name == "mnist-cnn":
        page.select_option("#layer", index=2)
        assert page.locator("#maps canvas").count() == 32
    else:
        assert page.locator(".att-row").count() == 4 and page.locator(".att-row canvas").count() == 16
    page.locator("#clear").click()
    assert page.locator("#verdict").inner_text() == "Draw a digit, or pick a sample."


def test_threads_only_where_the_page_is_cross_origin_isolated(site_url, page: Page, tmp_path):
    name, _ = site_url
    site.build(name, tmp_path, backends=("wasm",))
    with serve_isolated(tmp_path) as url:
        open_site(page, url)
        assert page.evaluate("self.crossOriginIsolated")
        got = finished_run(page, lambda: page.locator("#samples button").nth(3).click())
        assert got["backend"] == "wasm" and got["threads"] == min(4, page.evaluate("navigator.hardwareConcurrency"))
        check_against_torch(name, got)
        assert page.locator("#runtime").inner_text().endswith("threads") == (got["threads"] > 1)


# Chromium's software WebGPU (SwiftShader): the WebGPU build runs where no GPU is present.
WEBGPU_FLAGS = ["--headless", "--no-sandbox", "--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader",
                "--enable-features=Vulkan", "--use-angle=swiftshader"]


def test_webgpu_is_used_where_the_browser_has_it(site_url, playwright, tmp_path):
    name, _ = site_url
    site.build(name, tmp_path)  # both builds
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=WEBGPU_FLAGS)
    try:
        page = browser.new_page()
        with serve_isolated(tmp_path) as url:
            page.goto(url)
            if not page.evaluate("async () => 'gpu' in navigator && (await navigator.gpu.requestAdapter()) !== null"):
                pytest.skip("this Chromium offers no WebGPU adapter, not even SwiftShader's")
            open_site(page, url)
            got = finished_run(page, lambda: page.locator("#samples button").nth(12).click())
            assert got["backend"] == "webgpu"
            check_against_torch(name, got)
            assert "webgpu" in page.locator("#runtime").inner_text()
    finally:
        browser.close()


def test_site_files(site_url):
    name, url = site_url
    listing = urllib.request.urlopen(url + "ort/").read().decode()
    assert "ort-wasm-simd-threaded.wasm" in listing and "webgpu" not in listing
    for file in ["index.html", "site.js", "canvas.js", "painter.js", "mnist.js", "runtime.js", "model.onnx",
                 "model.json", "data.json"]:
        assert urllib.request.urlopen(url + file).status == 200


def test_pages_files_exist():
    for file in site.PAGE_FILES:
        assert (Path(site.STATIC) / file).exists()

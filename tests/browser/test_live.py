"""Live mode in Chromium: drawing on the canvas updates the prediction computed in the browser, with no server trip.

The page's logits equal torch's on the page's input within 1e-4, that input equals the server's conversion of the
same strokes (images.to_input), and onnxruntime-web's files come from `panel serve` itself (no flags, no CDN).
"""

from __future__ import annotations

import base64
import statistics
import urllib.request
from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest
import torch
from playwright.sync_api import Page

from explorer.core import images, trace, zoo
from explorer.ui.live import LiveInference
from explorer.web import bundle
from tests.browser.conftest import ROOT, screenshot, serve
from tests.browser.test_site import FOUR

APP = ROOT / "tests" / "browser" / "apps" / "live_app.py"


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    with serve(APP) as url:
        yield url


def drawn(page: Page, url: str, name: str) -> dict:
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{url}?model={name}")
    page.wait_for_selector(".live .status:not(:text('loading…'))", timeout=60_000)
    page.wait_for_function("window.explorerLive && window.explorerLive.backend", timeout=60_000)
    canvas = page.locator(".drawing canvas")
    box = canvas.bounding_box()
    page.evaluate("() => { window.explorerLive.runs = 0 }")
    left, top = box["x"] + 2, box["y"] + 2  # inside the canvas's 1 px border; canvas pixels = CSS pixels
    for (x0, y0), *rest in FOUR:
        page.mouse.move(left + x0, top + y0)
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(left + x, top + y, steps=15)
        page.mouse.up()
    page.wait_for_timeout(200)
    page.wait_for_function("window.explorerLive.runs > 0 && !window.explorerLive.busy")
    origin = url.rsplit("/", 1)[0]
    elsewhere = [r for r in requests if not r.removeprefix("blob:").startswith(origin)]
    assert elsewhere == [], f"fetched from elsewhere: {elsewhere}"
    return page.evaluate("() => { const e = window.explorerLive; return { input: e.input, logits: e.logits, "
                         "strokes: e.strokes, frames: e.frames, runs: e.runs, backend: e.backend } }")


@pytest.mark.parametrize("name", ["mnist-cnn", "mnist-vit"])
def test_drawing_updates_the_live_prediction_computed_in_the_browser(live_url, page: Page, name):
    got = drawn(page, live_url, name)
    assert got["runs"] > 3, "the prediction follows the stroke, frame by frame"
    model = zoo.load(name)
    x = torch.tensor(got["input"], dtype=torch.float32).view(1, 1, 28, 28)
    logits = trace.run(model.module, x).logits[0]
    np.testing.assert_allclose(got["logits"], logits.numpy(), atol=1e-4, rtol=0)
    server = images.to_input(images.Strokes(got["strokes"], 280, 280), model.card)
    assert int(model.module(server).argmax()) == int(logits.argmax()) == 4
    bars = page.locator(".live .bar")
    assert bars.count() == 10 and page.locator(".live .bar.best").inner_text().startswith("4")
    assert page.locator(".live .maps canvas").count() == 16
    print(f"{name}: {len(got['frames'])} frames, drawing -> bars and maps median "
          f"{statistics.median(got['frames']):.1f} ms, max {max(got['frames']):.1f} ms ({got['backend']})")
    screenshot(page, f"live-{name}")


def test_panel_serve_serves_the_runtime_files_without_flags(live_url):
    root = live_url.rsplit("/", 1)[0]
    for path in ["ort/ort.wasm.min.mjs", "ort/ort-wasm-simd-threaded.wasm", "static/mnist.js"]:
        with urllib.request.urlopen(f"{root}/{bundle.app_url_path()}{path}") as response:
            assert response.status == 200
            if path.endswith(".wasm"):
                assert response.headers["Content-Type"] == "application/wasm"
    with pytest.raises(urllib.error.HTTPError) as refused:  # only the listed files, nothing else of the package
        urllib.request.urlopen(f"{root}/{bundle.app_url_path()}bundle.py")
    assert refused.value.code in (403, 404)


def test_switching_the_network_sends_its_model_and_metadata():
    live = LiveInference()
    cnn = base64.b64decode(live.onnx)
    live.network = "mnist-vit"
    assert live.metadata["name"] == "mnist-vit" and base64.b64decode(live.onnx) != cnn
    session = ort.InferenceSession(base64.b64decode(live.onnx), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [o["name"] for o in live.metadata["outputs"]]
    assert [o["layer"] for o in live.metadata["outputs"]] == [None, "patch_embed"]  # no attention maps: not shown


def test_without_onnxruntime_web_live_mode_says_why_and_the_app_still_builds(monkeypatch, tmp_path):
    monkeypatch.setattr(bundle, "ROOT", tmp_path)  # no node_modules there
    monkeypatch.setattr(bundle, "APP_COPY", tmp_path / "ort")
    live = LiveInference()
    assert "run `npm ci`" in live.problem

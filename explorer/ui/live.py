"""Live mode: while a student draws, the prediction and the first layer's activations, computed in the browser.

onnxruntime-web (wasm, or WebGPU where the browser has it) runs the model exported by
explorer.core.export on every animation frame of a stroke: no server round trip. The drawing comes
from the app's DrawingCanvas as a DOM event on `window`, `explorer:strokes`, whose `detail` is
`{strokes, width, height, lineWidth}` (canvas pixels, as DrawingCanvas.strokes), sent on every change.
The drawing is converted exactly as the server does (explorer/web/static/mnist.js, tested against
explorer.core.images), so the live numbers equal the server's trace, which still drives the lessons.

The browser side is live.js beside this file. It paints the bars and maps with the static site's
explorer/web/static/painter.js, and loads the onnxruntime files and those shared page scripts from Panel's
component resource route (explorer.web.bundle.OrtFiles): plain `panel serve app.py` needs no flags or
static folders. `BrowserModel` holds what any such component needs (the exported model and where the
runtime is served); the camera input (explorer/ui/camera.py) is the other one.
`window.explorerLive` holds the last input, logits and per-frame times, for tests and benchmarks.
"""

from __future__ import annotations

import base64
import functools
import json
import tempfile
from pathlib import Path

import panel as pn
import param
from panel.custom import JSComponent

from explorer.core import export, zoo
from explorer.errors import InputError
from explorer.web import bundle, site


@functools.lru_cache(maxsize=4)
def exported(name: str) -> tuple[str, dict]:
    """`name` as ONNX (base64) with its first feature maps, and its metadata: made once per process."""
    model = zoo.load(name)
    probes = set(export.attention_probes(model.module))
    layers = [layer for layer in export.default_layers(model.module) if layer not in probes][:2]
    with tempfile.TemporaryDirectory() as tmp:
        metadata = json.loads(export.export_model(model, tmp, layers).read_text())
        onnx = base64.b64encode((Path(tmp) / export.MODEL_FILE).read_bytes()).decode()
    return onnx, metadata


LIVE_MODELS = ("mnist-cnn", "mnist-vit")  # the pages convert their input as a digit
# painter.js's probability bars, and the status line beside the heading
BAR_STYLES = """
.head { font-weight: 600; }
.status { font-weight: normal; color: #555; }
.bar { display: grid; grid-template-columns: 1.2em 140px 4em; gap: 6px; align-items: center; height: 18px; }
.track { background: #eee; height: 11px; border-radius: 2px; overflow: hidden; }
.fill { display: block; height: 100%; background: #7a9cc6; }
.bar.best .fill { background: #1f5fa8; }
.value { text-align: right; font-variant-numeric: tabular-nums; }
"""


class BrowserModel(JSComponent):
    """A component that runs a zoo model in the page: the exported model, and where onnxruntime-web is served."""

    network = param.Selector(default=LIVE_MODELS[0], objects=list(LIVE_MODELS),
                             doc="The zoo model to run (an MNIST model: the page's input is a digit).")
    onnx = param.String(default="", doc="The exported model, base64; set from `network`.")
    metadata = param.Dict(default={}, doc="explorer.core.export metadata of `onnx`.")
    base_url = param.String(default="", doc="Where OrtFiles are served, relative to the page.")
    problem = param.String(default="", doc="Why the model cannot run here (e.g. onnxruntime-web not installed).")

    def __init__(self, **params):
        params.setdefault("base_url", f"{pn.state.rel_path}/{bundle.app_url_path()}" if pn.state.rel_path
                          else bundle.app_url_path())
        try:
            bundle.prepare_app_copy()
        except InputError as error:  # the rest of the app works without the model in the page
            params.setdefault("problem", str(error))
        super().__init__(**params)

    @param.depends("network", watch=True, on_init=True)
    def _export(self) -> None:
        self.onnx, self.metadata = exported(self.network) if self.network else ("", {})


class LiveInference(BrowserModel):
    """Live prediction bars and first-layer maps for the drawing on the page, computed in the browser."""

    palettes = param.Dict(default={}, doc="The lessons' colour maps as RGB triples.")

    _esm = Path(__file__).with_name("live.js")

    _stylesheets = [BAR_STYLES, """
    .live { font-size: 0.92em; display: flex; flex-direction: column; gap: 4px; }
    .live .maps { display: grid; grid-template-columns: repeat(8, 34px); gap: 3px; }
    .live .maps canvas { width: 34px; height: 34px; image-rendering: pixelated; border: 1px solid #ccc; }
    .live .maps-title, .live .timing { color: #555; }
    """]

    def __init__(self, **params):
        params.setdefault("palettes", site.palettes())
        super().__init__(**params)

"""`explorer export-site MODEL --out DIR`: a static page that runs the model in the browser, offline.

DIR gets index.html and its scripts (static/), model.onnx and model.json (explorer.core.export),
data.json (a few MNIST test digits, the colour palettes of explorer.lessons.plots, which onnxruntime
backends are included) and ort/ (onnxruntime-web's files, explorer.web.bundle). Any static file
server works (`python -m http.server -d DIR`); browsers refuse ES modules from file:// URLs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from explorer.core import data, export, zoo
from explorer.errors import InputError
from explorer.web import bundle

STATIC = Path(__file__).parent / "static"
PAGE_FILES = ("index.html", "site.js", "canvas.js", "painter.js", "mnist.js", "runtime.js")
DATA_FILE = "data.json"
ORT_FOLDER = "ort"
SAMPLES_PER_CLASS = 2


def sample_digits(per_class: int = SAMPLES_PER_CLASS) -> list[dict]:
    """The first `per_class` digits of each class in the shipped MNIST test sample, in class order."""
    digits = data.mnist("sample")
    picked = [i for label in range(10) for i in np.flatnonzero(digits.labels == label)[:per_class]]
    return [{"label": int(digits.labels[i]), "index": int(digits.indices[i]),
             "pixels": digits.images[i].ravel().tolist()} for i in picked]


def palettes() -> dict[str, list[list[int]]]:
    """The lessons' colour maps as RGB triples (plots.py picks them; the page colours maps the same way)."""
    from explorer.lessons import plots

    def rgb(colours: tuple[str, ...]) -> list[list[int]]:
        return [[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in colours]

    return {"diverging": rgb(plots.DIVERGING), "sequential": rgb(plots.SEQUENTIAL)}


def build(model_name: str, out: str | Path, backends: tuple[str, ...] = tuple(bundle.RUNTIME),
          per_class: int = SAMPLES_PER_CLASS) -> Path:
    """Write the site for `model_name` into `out`; return the path of its index.html."""
    model = zoo.load(model_name)
    if model.card.preprocess != "mnist":
        raise InputError(f"the static site draws and shows MNIST digits; {model_name} takes "
                         f"{model.card.preprocess!r} inputs. Choose one of: "
                         f"{', '.join(n for n in zoo.list(available_only=True) if zoo.card(n).preprocess == 'mnist')}.")
    if "wasm" not in backends:
        raise InputError("the site needs the wasm backend: it is the fallback wherever WebGPU is missing.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bundle.copy_runtime(out / ORT_FOLDER, backends)
    export.export_model(model, out)
    for name in PAGE_FILES:
        shutil.copyfile(STATIC / name, out / name)
    site_data = {"samples": sample_digits(per_class), "palettes": palettes(), "backends": list(backends),
                 "ort_version": bundle.version()}
    (out / DATA_FILE).write_text(json.dumps(site_data, separators=(",", ":")))
    return out / "index.html"

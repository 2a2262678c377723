"""`explorer export` and `explorer export-site`: the files written, onnxruntime-web's files, the scripts the page
shares with the app, and the page's preprocessing (static/mnist.js: drawings, and the app's camera frames) and
colouring (static/painter.js), run in Node.js, against explorer.core.images, scikit-image, Pillow and
explorer.lessons.plots on random data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from skimage.filters import threshold_otsu

from explorer import cli
from explorer.core import data, export, images
from explorer.errors import InputError
from explorer.lessons import plots
from explorer.ui.camera import CAPTURE_PX
from explorer.ui.canvas import DrawingCanvas
from explorer.ui.live import LiveInference
from explorer.web import bundle, site

NODE = shutil.which("node")


def test_export_command_writes_the_model_and_its_metadata(tmp_path):
    done = subprocess.run([sys.executable, "-m", "explorer.cli", "export", "mnist-cnn", "--out", str(tmp_path),
                           "--layers", "features.0,features.3"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    metadata = json.loads((tmp_path / export.METADATA_FILE).read_text())
    assert [o["name"] for o in metadata["outputs"]] == ["logits", "features.0", "features.3"]
    session = ort.InferenceSession(str(tmp_path / export.MODEL_FILE), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "features.0", "features.3"]


def test_export_of_an_unknown_layer_fails_cleanly(tmp_path, capsys):
    assert cli.main(["export", "mnist-cnn", "--out", str(tmp_path), "--layers", "features.99"]) == 2
    assert capsys.readouterr().err == "explorer: the model has no layer named features.99\n"


@pytest.fixture(scope="module")
def vit_site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    assert cli.main(["export-site", "mnist-vit", "--out", str(out)]) == 0
    return out


def test_site_holds_the_page_the_model_and_only_the_needed_runtime_files(vit_site):
    assert sorted(p.name for p in vit_site.iterdir()) == sorted(
        [*site.PAGE_FILES, export.MODEL_FILE, export.METADATA_FILE, site.DATA_FILE, site.ORT_FOLDER])
    ort_files = sorted(p.name for p in (vit_site / site.ORT_FOLDER).iterdir())
    assert ort_files == sorted([*bundle.RUNTIME["wasm"], *bundle.RUNTIME["webgpu"], "VERSION"])
    assert (vit_site / "ort" / "VERSION").read_text().startswith(f"onnxruntime-web {bundle.pinned_version()}\n")
    for name in bundle.RUNTIME["wasm"]:  # byte-identical to the pinned package's files
        assert (vit_site / "ort" / name).read_bytes() == (bundle.package_dir() / "dist" / name).read_bytes()


def test_site_fetches_nothing_from_elsewhere(vit_site):
    for name in site.PAGE_FILES:
        text = (vit_site / name).read_text()
        assert not re.search(r"https?://", text), f"{name} names a remote URL"


def test_site_data_holds_real_digits_and_the_lessons_palettes(vit_site):
    site_data = json.loads((vit_site / site.DATA_FILE).read_text())
    digits = data.mnist("sample")
    assert [s["label"] for s in site_data["samples"]] == [c for c in range(10) for _ in range(site.SAMPLES_PER_CLASS)]
    for sample in site_data["samples"]:
        row = int(np.flatnonzero(digits.indices == sample["index"])[0])
        assert sample["pixels"] == digits.images[row].ravel().tolist() and sample["label"] == digits.labels[row]
    assert site_data["palettes"]["diverging"][plots.CENTRE] == [255, 255, 255]
    assert len(site_data["palettes"]["sequential"]) == len(plots.SEQUENTIAL)
    assert site_data["backends"] == ["wasm", "webgpu"] and site_data["ort_version"] == bundle.version()


def test_wasm_only_site_and_refusals(tmp_path):
    assert cli.main(["export-site", "mnist-cnn", "--out", str(tmp_path), "--no-webgpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "ort").iterdir()) == sorted([*bundle.RUNTIME["wasm"], "VERSION"])
    with pytest.raises(InputError, match="mobilenet_v2 takes 'imagenet' inputs"):
        site.build("mobilenet_v2", tmp_path / "x")
    with pytest.raises(InputError, match="needs the wasm backend"):
        site.build("mnist-cnn", tmp_path / "x", backends=("webgpu",))


def test_missing_or_stale_node_modules_say_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle, "ROOT", tmp_path)
    with pytest.raises(InputError, match="run `npm ci`"):
        bundle.copy_runtime(tmp_path / "out")
    package = tmp_path / "node_modules" / "onnxruntime-web"
    package.mkdir(parents=True)
    (package / "package.json").write_text('{"version": "1.0.0", "license": "MIT"}')
    (tmp_path / "package.json").write_text('{"dependencies": {"onnxruntime-web": "1.30.0"}}')
    with pytest.raises(InputError, match="holds onnxruntime-web 1.0.0 but package.json pins 1.30.0: run `npm ci`"):
        bundle.copy_runtime(tmp_path / "out")


def test_package_json_pins_an_exact_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+", bundle.pinned_version())
    lock = json.loads((bundle.ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == bundle.pinned_version()


def test_the_app_may_serve_every_runtime_file_from_its_copy():
    listed = set(bundle.OrtFiles._resources[bundle.URL_GROUP].values())
    assert listed == {f"ort/{name}" for names in bundle.RUNTIME.values() for name in names} | {
        "static/runtime.js", "static/mnist.js", "static/painter.js"}
    folder = bundle.prepare_app_copy()
    assert all((folder.parent / path).is_file() for path in listed)
    assert (folder / ".gitignore").read_text().endswith("\n*\n")  # the copy never lands in git
    assert bundle.app_url_path() == "components/explorer.web.bundle/OrtFiles/_resources/web/"


def in_node(tmp_path: Path, module: str, body: str, request) -> object:
    """Run `body` in Node.js, with static/`module`'s exports as `page` and `request` (sent as JSON); its JSON `out`."""
    script = tmp_path / "run.mjs"
    script.write_text(f"import * as page from {json.dumps((site.STATIC / module).as_uri())}\n"
                      'let text = ""\nfor await (const chunk of process.stdin) text += chunk\n'
                      f"const request = JSON.parse(text)\n{body}\nprocess.stdout.write(JSON.stringify(out))\n")
    done = subprocess.run([NODE, str(script)], input=json.dumps(request), capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


# static/mnist.js's mnistDigit and normalize on each ink of the request.
PREPROCESS = """
const out = request.map(({ ink, w, h }) => {
  const digit = page.mnistDigit(Float32Array.from(ink), w, h)
  return digit === null ? null : { digit: Array.from(digit), input: Array.from(page.normalize(digit, 0.1307, 0.3081)) }
})
"""


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_the_pages_preprocessing_equals_the_servers_on_random_ink(tmp_path, rng):
    generator = np.random.default_rng(int(rng.initial_seed()))
    inks = []
    for _ in range(40):
        h, w = (int(v) for v in generator.integers(3, 90, size=2))
        ink = generator.random((h, w), dtype=np.float32) * generator.random(dtype=np.float32)
        ink *= generator.random((h, w)) < generator.uniform(0.05, 1)  # sparse strokes, blank areas, faint ink
        inks.append(ink.astype(np.float32))
    inks.append(np.zeros((10, 10), np.float32))  # blank
    request = [{"ink": i.ravel().tolist(), "w": i.shape[1], "h": i.shape[0]} for i in inks]
    for ink, got in zip(inks, in_node(tmp_path, "mnist.js", PREPROCESS, request), strict=True):
        try:
            expected = images.mnist_digit(ink)
        except InputError:
            assert got is None
            continue
        np.testing.assert_array_equal(np.array(got["digit"], np.uint8).reshape(28, 28), expected)
        reference = data.normalize_digits(expected[None], (0.1307,), (0.3081,)).numpy().ravel()
        np.testing.assert_array_equal(np.array(got["input"], np.float32), reference)


def test_the_app_and_the_site_share_one_drawing_canvas_and_one_painter(vit_site):
    canvas, painter = site.STATIC / "canvas.js", site.STATIC / "painter.js"
    assert DrawingCanvas._render_esm() == canvas.read_text()  # the app's component is the site's file
    assert (vit_site / "canvas.js").read_bytes() == canvas.read_bytes()
    assert (vit_site / "painter.js").read_bytes() == painter.read_bytes()
    page = (vit_site / "site.js").read_text()
    assert 'from "./canvas.js"' in page and 'from "./painter.js"' in page
    live = LiveInference._render_esm()  # live mode imports the painter from the app's copy of the static folder
    assert '"painter.js"' in live and f"static/{painter.name}" in bundle.SHARED_SCRIPTS


# static/painter.js's RGBA bytes of each map of the request, at its own colour limit, as paintMap paints them.
COLOURS = """
const out = request.maps.map(({ values, signed }) =>
  Array.from(page.rgba(values, signed, page.maxAbs(values), request.palettes)))
"""


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_the_pages_colours_equal_the_lessons_on_random_maps(tmp_path, rng):
    generator = np.random.default_rng(int(rng.initial_seed()))
    maps = [generator.normal(size=(5, 7)) * generator.uniform(0.01, 100) for _ in range(6)]
    maps += [np.abs(m) for m in maps] + [np.zeros((3, 3))]
    signed = [True] * 6 + [False] * 7
    request = {"palettes": site.palettes(), "maps": [{"values": m.ravel().tolist(), "signed": s}
                                                     for m, s in zip(maps, signed, strict=True)]}
    for values, sign, got in zip(maps, signed, in_node(tmp_path, "painter.js", COLOURS, request), strict=True):
        expected = plots.to_rgba(values, sign, plots.max_abs(values)).view(np.uint8).ravel()
        np.testing.assert_array_equal(np.array(got, np.uint8), expected)


def camera_digit_reference(rgba: np.ndarray) -> np.ndarray | None:
    """static/mnist.js's cameraDigit, from its references: the server's conversion of a photo of a digit
    (explorer.core.images), with scikit-image's Otsu threshold of the grey levels applied to the ink before the
    digit is placed. None where the server finds the picture blank."""
    image = Image.fromarray(rgba, "RGBA")
    grey = np.asarray(image.convert("L"))
    ink = images._digit_ink(image)
    dark_on_light = np.median(images._border(grey.astype(np.float32) / 255)) > 0.5
    threshold = threshold_otsu(grey)
    ink = np.where(grey <= threshold if dark_on_light else grey > threshold, ink, 0).astype(np.float32)
    try:
        return images.mnist_digit(ink)
    except InputError:
        return None


def random_photo(generator: np.random.Generator) -> np.ndarray:
    """Opaque RGBA of random size: paper of a random level with noise, and a blob of ink darker or lighter than it."""
    h, w = (int(v) for v in generator.integers(8, 120, size=2))
    paper = generator.uniform(0, 255)
    rgb = paper + generator.normal(0, generator.uniform(0, 20), (h, w, 3))
    ys, xs = np.mgrid[:h, :w]
    cy, cx = generator.uniform(0.2, 0.8) * h, generator.uniform(0.2, 0.8) * w
    radius = generator.uniform(0.05, 0.3) * min(h, w)
    blob = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * radius ** 2))[:, :, None]
    rgb += blob * generator.uniform(0, 200) * (1 if paper < 128 else -1)
    opaque = np.full((h, w, 1), 255)
    return np.concatenate([np.clip(np.rint(rgb), 0, 255), opaque], axis=2).astype(np.uint8)


# static/mnist.js's camera steps on each RGBA photo of the request.
CAMERA_STEPS = """
const out = request.map(({ rgba, w, h }) => {
  const data = Uint8ClampedArray.from(rgba), grey = page.greyLevels(data), digit = page.cameraDigit(data, w, h)
  const { ink, darkOnLight } = page.digitInk(grey, w, h)
  return { grey: Array.from(grey), ink: Array.from(ink), darkOnLight, otsu: page.otsuThreshold(grey),
           digit: digit && Array.from(digit) }
})
"""


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_the_pages_camera_steps_equal_pillow_scikit_image_and_the_server_on_random_photos(tmp_path, rng):
    generator = np.random.default_rng(int(rng.initial_seed()))
    photos = [random_photo(generator) for _ in range(40)]
    photos.append(np.full((12, 16, 4), 200, np.uint8))  # one grey level: blank
    request = [{"rgba": p.ravel().tolist(), "w": p.shape[1], "h": p.shape[0]} for p in photos]
    digits = 0
    for photo, got in zip(photos, in_node(tmp_path, "mnist.js", CAMERA_STEPS, request), strict=True):
        h, w, _ = photo.shape
        image = Image.fromarray(photo, "RGBA")
        grey = np.asarray(image.convert("L"))
        np.testing.assert_array_equal(np.array(got["grey"], np.uint8).reshape(h, w), grey)
        np.testing.assert_array_equal(np.array(got["ink"], np.float32).reshape(h, w), images._digit_ink(image))
        assert got["otsu"] == threshold_otsu(grey)
        expected = camera_digit_reference(photo)
        if expected is None:
            assert got["digit"] is None
        else:
            np.testing.assert_array_equal(np.array(got["digit"], np.uint8).reshape(28, 28), expected)
            digits += 1
    assert digits > 10, "most random photos hold ink"


# static/mnist.js's otsuThreshold of each list of grey levels of the request.
OTSU = "const out = request.map((levels) => page.otsuThreshold(Uint8Array.from(levels)))"


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_the_pages_otsu_threshold_equals_scikit_images_on_random_levels(tmp_path, rng):
    generator = np.random.default_rng(int(rng.initial_seed()))
    samples = [generator.integers(lo, hi + 1, size=int(generator.integers(1, 5000)), dtype=np.uint8)
               for lo, hi in (sorted(generator.integers(0, 256, size=2)) for _ in range(40))]
    # two levels, and as many pixels as a camera frame
    samples.append(np.repeat(np.array([30, 220], np.uint8), [900, 100]))
    samples.append(generator.integers(0, 256, size=CAPTURE_PX * CAPTURE_PX, dtype=np.uint8))
    got = in_node(tmp_path, "mnist.js", OTSU, [s.tolist() for s in samples])
    assert got == [int(threshold_otsu(s)) for s in samples]

"""onnxruntime-web's files: found in node_modules (`npm ci`, pinned in package.json), copied where they are served.

Only what a page needs is copied, never fetched from a CDN:
- "wasm": `ort.wasm.min.mjs` and the SIMD build `ort-wasm-simd-threaded.{mjs,wasm}` (CPU; threads only
  where the page is cross-origin isolated);
- "webgpu": `ort.webgpu.min.mjs` and its `ort-wasm-simd-threaded.asyncify.{mjs,wasm}`, which also holds
  the CPU kernels, loaded only when the browser has WebGPU.
A page sets `ort.env.wasm.wasmPaths` to the folder holding them.

The app serves them through Panel's component resource route (`panel serve app.py`, no flags):
Panel serves a file listed in a class attribute such as `_resources`, relative to the class's
module, at /components/<module>/<class>/_resources/<group>/<path>. `OrtFiles` lists the copy in
explorer/web/ort/ (made by `prepare_app_copy()`, git-ignored by its own .gitignore) and the page
helpers in explorer/web/static/ that the app's live mode shares with the static site.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from explorer.core.paths import ROOT
from explorer.errors import InputError, choice

PACKAGE = "onnxruntime-web"
RUNTIME: dict[str, tuple[str, ...]] = {
    "wasm": ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"),
    "webgpu": ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm"),
}
APP_COPY = Path(__file__).parent / "ort"  # what the app serves (see OrtFiles)
SHARED_SCRIPTS = ("static/runtime.js", "static/mnist.js", "static/painter.js")  # served to the app too
URL_GROUP = "web"


def package_dir() -> Path:
    """node_modules/onnxruntime-web at the repository root, or an InputError that says how to install it."""
    folder = ROOT / "node_modules" / PACKAGE
    if not (folder / "package.json").exists():
        raise InputError(f"{PACKAGE} is not installed in {folder.parent}: run `npm ci` in {ROOT} "
                         "(Node.js 20 or later; the version is pinned in package.json).")
    return folder


def version() -> str:
    return json.loads((package_dir() / "package.json").read_text())["version"]


def pinned_version() -> str:
    """The version package.json pins (exactly)."""
    return json.loads((ROOT / "package.json").read_text())["dependencies"][PACKAGE]


def copy_runtime(dest: str | Path, backends: tuple[str, ...] = tuple(RUNTIME)) -> list[Path]:
    """Copy the files of `backends` into `dest` (skipping up-to-date ones); return their new paths.

    Also writes a VERSION file naming the package, its version and licence (the files keep their MIT headers).
    """
    for backend in backends:
        choice(backend, RUNTIME, "onnxruntime-web backend")
    source = package_dir()
    if version() != pinned_version():
        raise InputError(f"node_modules holds {PACKAGE} {version()} but package.json pins {pinned_version()}: "
                         "run `npm ci`.")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in dict.fromkeys(f for backend in backends for f in RUNTIME[backend]):
        src, target = source / "dist" / name, dest / name
        if not target.exists() or target.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, target)
        copied.append(target)
    licence = json.loads((source / "package.json").read_text())["license"]
    (dest / "VERSION").write_text(f"{PACKAGE} {version()}\n{licence} licence, Copyright (c) Microsoft Corporation\n")
    return copied


def prepare_app_copy() -> Path:
    """Make sure the app's copy (explorer/web/ort/) holds every backend's files; return its folder."""
    stamp = APP_COPY / "VERSION"
    current = stamp.exists() and stamp.read_text().split()[1] == pinned_version()
    if not current or not all((APP_COPY / name).exists() for names in RUNTIME.values() for name in names):
        copy_runtime(APP_COPY)
        (APP_COPY / ".gitignore").write_text("# copied from node_modules: see explorer/web/bundle.py\n*\n")
    return APP_COPY


class OrtFiles:
    """The files Panel's ComponentResourceHandler may serve from explorer/web/ort/ (see the module docstring).

    A plain class: the handler only imports the module, reads the attribute and checks the path is listed.
    """

    _resources = {URL_GROUP: {path: path for path in [*(f"ort/{name}" for names in RUNTIME.values() for name in names),
                                                        *SHARED_SCRIPTS]}}


def app_url_path() -> str:
    """The server path, from the app's root, of this folder as `OrtFiles` serves it (holding ort/ and static/)."""
    return f"components/{__name__}/{OrtFiles.__name__}/_resources/{URL_GROUP}/"

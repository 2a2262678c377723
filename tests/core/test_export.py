"""ONNX export: onnxruntime's outputs equal torch's, for the logits, chosen layers and attention probabilities."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from explorer.core import data, export, trace, zoo
from explorer.errors import InputError

MODELS = ["mnist-cnn", "mnist-vit"]


def torch_value(t: trace.Trace, layer: str) -> np.ndarray:
    """What torch computed at `layer`: a layer's output, or an attention probe's probabilities."""
    parent, _, child = layer.rpartition(".")
    if child in trace.PROBE_NAMES:
        return t[parent].extras["probs"].numpy()
    return t[layer].output.numpy()


def run_onnx(path, x: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {export.INPUT_NAME: x.numpy()})


@pytest.mark.parametrize("name", MODELS)
def test_onnx_matches_torch_on_random_batches(name, tmp_path, rng):
    model = zoo.load(name)
    layers = [r.name for r in trace.run(model.module, torch.zeros(1, 1, 28, 28)).records[:3]]
    path = export.to_onnx(model.module, tmp_path / "m.onnx", torch.zeros(1, 1, 28, 28), layers)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 28, 28, generator=rng)
    got = session.run(None, {export.INPUT_NAME: x.numpy()})
    t = trace.run(model.module, x)
    np.testing.assert_allclose(got[0], t.logits.numpy(), atol=1e-4)
    for layer, value in zip(layers, got[1:], strict=True):
        np.testing.assert_allclose(value, t[layer].output.numpy(), atol=1e-4)
    assert [o.name for o in session.get_outputs()] == ["logits", *layers]


@pytest.mark.parametrize("name", MODELS)
def test_exported_default_outputs_match_torch_on_random_and_real_digits(name, tmp_path, rng):
    model = zoo.load(name)
    export.export_model(model, tmp_path)
    layers = export.default_layers(model.module)
    digits = data.mnist("sample")
    pick = torch.randint(len(digits.labels), (16,), generator=rng).numpy()
    real = data.normalize_digits(digits.images[pick], model.card.mean, model.card.std)
    for x in (torch.randn(4, 1, 28, 28, generator=rng) * 2, real):
        got = run_onnx(tmp_path / export.MODEL_FILE, x)
        t = trace.run(model.module, x)
        np.testing.assert_allclose(got[0], t.logits.numpy(), atol=1e-4, rtol=0)
        for layer, value in zip(layers, got[1:], strict=True):
            np.testing.assert_allclose(value, torch_value(t, layer), atol=1e-4, rtol=0, err_msg=layer)


def test_default_layers_are_the_first_feature_maps_and_every_attention_map():
    assert export.default_layers(zoo.load("mnist-cnn").module) == ["features.0", "features.2", "features.4",
                                                                   "features.6"]
    vit = zoo.load("mnist-vit").module
    assert export.default_layers(vit) == ["patch_embed", *(f"blocks.{i}.attn.probs" for i in range(4))]
    assert export.attention_probes(zoo.load("mnist-cnn").module) == []


@pytest.mark.parametrize("name", MODELS)
def test_metadata_describes_the_input_and_every_output(name, tmp_path):
    model = zoo.load(name)
    metadata = json.loads(export.export_model(model, tmp_path).read_text())
    session = ort.InferenceSession(str(tmp_path / metadata["model_file"]), providers=["CPUExecutionProvider"])
    assert metadata["labels"] == list(model.card.labels)
    assert metadata["input"] == {"name": "input", "shape": [1, 1, 28, 28], "preprocess": "mnist",
                                 "mean": list(model.card.mean), "std": list(model.card.std)}
    assert [o["name"] for o in metadata["outputs"]] == [o.name for o in session.get_outputs()]
    got = session.run(None, {"input": np.zeros((1, 1, 28, 28), np.float32)})
    assert [o["shape"] for o in metadata["outputs"]] == [list(v.shape) for v in got]
    kinds = {o["layer"]: o["kind"] for o in metadata["outputs"]}
    if name == "mnist-vit":
        assert kinds["blocks.0.attn.probs"] == "attention_probs" and kinds["patch_embed"] == "conv"
    else:
        assert kinds["features.0"] == "conv" and kinds["features.2"] == "activation"


def test_unknown_layer_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no layer named nope"):
        export.to_onnx(zoo.load("mnist-cnn").module, tmp_path / "m.onnx", torch.zeros(1, 1, 28, 28), ["nope"])

"""ONNX export: onnxruntime's outputs equal torch's, for the logits and for chosen intermediate layers."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from explorer.core import export, trace, zoo
from explorer.errors import InputError


@pytest.mark.parametrize("name", ["mnist-cnn", "mnist-vit"])
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
    assert [o.name for o in session.get_outputs()] == ["logits", *map(export.output_name, layers)]


def test_unknown_layer_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no layer named nope"):
        export.to_onnx(zoo.load("mnist-cnn").module, tmp_path / "m.onnx", torch.zeros(1, 1, 28, 28), ["nope"])

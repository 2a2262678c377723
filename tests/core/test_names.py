"""Readable layer names against what the trace and the weights say: every layer of every shipped model.

The numbers in a name (kernel size, channels, stride, heads, pool size) are checked against independent
sources: the state dict's weight shapes, the recorded input and output shapes, and the attention
probabilities' head dimension, never against the module attributes the names are made from.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from explorer.core import names, zoo

MODELS = [m for m in ("mnist-cnn", "mnist-vit", "mobilenet_v2") if zoo.is_available(m)]


@pytest.fixture(scope="module", params=MODELS)
def traced(request):
    model = zoo.load(request.param)
    return model.module, model.trace(torch.rand(1, *model.card.input_shape))


def test_every_layer_has_a_readable_name_then_its_module_path(traced):
    module, trace = traced
    for record in trace.records:
        label = names.labelled_name(module, record.name)
        readable = names.readable_name(module.get_submodule(record.name))
        assert label == f"{readable} ({record.name})"
        assert readable and not re.search(r"[a-z_]\.\d", readable), readable  # no module path such as features.1


def test_numbers_in_conv_names_match_the_weight_and_the_output_shape(traced):
    module, trace = traced
    weights = module.state_dict()
    for record in (r for r in trace.records if r.kind == "conv"):
        readable = names.readable_name(module.get_submodule(record.name))
        c_out, per_group, kh, kw = weights[f"{record.name}.weight"].shape
        c_in, h_in = record.input.shape[1], record.input.shape[2]
        stride = h_in // record.output.shape[2] if record.output.shape[2] > 1 else None
        assert f"{kh}×{kw}" in readable, readable
        if per_group == 1 and c_in > 1:  # one input channel per kernel: depthwise
            assert readable.startswith("depthwise conv"), readable
            assert f"{c_in} channels" in readable or f"{c_in}→{c_out}" in readable, readable
        else:
            assert f"{c_in}→{c_out}" in readable, readable
            assert readable.startswith("pointwise conv 1×1" if (kh, kw) == (1, 1) else "conv "), readable
        if stride is not None and stride > 1:
            assert f"stride {stride}" in readable, readable
        else:
            assert "stride" not in readable, readable


def test_numbers_in_other_names_match_the_weights_and_shapes(traced):
    module, trace = traced
    weights = module.state_dict()
    for record in trace.records:
        readable = names.readable_name(module.get_submodule(record.name))
        kind = type(module.get_submodule(record.name))
        if kind is nn.Linear:
            out_features, in_features = weights[f"{record.name}.weight"].shape
            assert readable == f"linear {in_features}→{out_features}"
        elif kind in (nn.BatchNorm2d, nn.LayerNorm):
            n = weights[f"{record.name}.weight"].shape[0]
            assert readable == (f"batch norm, {n} channels" if kind is nn.BatchNorm2d else f"layer norm, {n} features")
        elif record.kind == "attention":
            heads = record.extras["probs"].shape[1]  # (B, heads, T, T)
            assert readable == f"self-attention, {heads} heads"
        elif kind is nn.MaxPool2d:
            side = record.input.shape[-1] // record.output.shape[-1]
            assert readable == f"max pool {side}×{side}"
        elif kind is nn.AdaptiveAvgPool2d:
            assert record.output.shape[-2:] == (1, 1) and readable == "global average pool"
        elif record.kind == "activation":
            assert readable == kind.__name__


@pytest.mark.parametrize(("module", "expected"), [
    (nn.Conv2d(8, 8, 3, groups=8, stride=(2, 1)), "depthwise conv 3×3, 8 channels, stride 2×1"),
    (nn.Conv2d(8, 16, 3, groups=8), "depthwise conv 3×3, 8→16"),
    (nn.Conv2d(8, 16, (3, 5), groups=2), "grouped conv 3×5, 8→16, 2 groups"),
    (nn.GroupNorm(4, 32), "group norm, 32 channels in 4 groups"),
    (nn.MultiheadAttention(32, 8), "self-attention, 8 heads"),
    (nn.AdaptiveAvgPool2d(7), "adaptive average pool to 7×7"),
    (nn.Dropout(0.25), "dropout (p = 0.25; off at inference)"),
    (nn.Upsample(scale_factor=2), "upsample"),
])
def test_other_modules_are_named_by_type_and_shape(module, expected):
    assert names.readable_name(module) == expected


def test_a_repeated_call_is_named_after_its_module():
    model = nn.Sequential(nn.Conv2d(1, 4, 3))
    assert names.labelled_name(model, "0:1") == "conv 3×3, 1→4 (0:1)"
    assert re.fullmatch(r"conv 3×3, 1→4 \(0\)", names.labelled_name(model, "0"))

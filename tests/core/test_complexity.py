"""MAC counts against hand-derived formulas and torchvision's published MobileNetV2 figure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explorer.core import complexity, trace
from explorer.core.architectures import MnistCNN, MnistViT, MobileNetV2


def conv_out(size: int, conv: nn.Conv2d, axis: int) -> int:
    k, s, p, d = conv.kernel_size[axis], conv.stride[axis], conv.padding[axis], conv.dilation[axis]
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def test_mnist_cnn_macs_by_hand():
    t = trace.run(MnistCNN().eval(), torch.zeros(1, 1, 28, 28))
    # conv1 28·28·16·(1·9) + conv2 14·14·32·(16·9) + conv3 7·7·64·(32·9) + linear 576·10
    assert complexity.total_macs(t) == 28 * 28 * 16 * 9 + 14 * 14 * 32 * 144 + 7 * 7 * 64 * 288 + 576 * 10


@pytest.mark.parametrize("size", [32, 57, 96])
def test_conv_macs_match_the_output_size_formula(size, rng):
    model = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=1), nn.Conv2d(8, 8, 3, dilation=2, groups=4),
                          nn.Conv2d(8, 6, 1)).eval()
    t = trace.run(model, torch.randn(2, 3, size, size, generator=rng))
    h = size
    for record, conv in zip(t, model, strict=True):
        h = conv_out(h, conv, 0)
        assert complexity.layer_macs(record) == h * h * conv.out_channels * (conv.in_channels // conv.groups) * \
            conv.kernel_size[0] * conv.kernel_size[1]


def test_vit_attention_macs_are_two_t_squared_c():
    t = trace.run(MnistViT().eval(), torch.zeros(1, 1, 28, 28))
    attention = t.of_kind("attention")
    assert [complexity.layer_macs(r) for r in attention] == [2 * 17 * 17 * 64] * 4


def test_mobilenet_v2_macs_match_torchvision():
    t = trace.run(MobileNetV2().eval(), torch.zeros(1, 3, 224, 224))
    # torchvision's model card for MobileNet_V2_Weights.IMAGENET1K_V1 gives 0.301 GFLOPS (multiply-adds).
    assert complexity.total_macs(t) / 1e9 == pytest.approx(0.301, abs=0.0005)


def test_activation_bytes_are_per_image(rng):
    t = trace.run(nn.Sequential(nn.Conv2d(1, 4, 3)).eval(), torch.randn(5, 1, 10, 10, generator=rng))
    assert complexity.activation_bytes(t.records[0]) == 4 * 8 * 8 * 4

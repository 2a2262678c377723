"""The project's own model classes: a small MNIST CNN, a tiny MNIST ViT, ImageNet MobileNetV2.

torchvision does not import beside the torch build installed here, so MobileNetV2 is written
out; its state-dict keys match torchvision's so that torchvision's ImageNet weights load as is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MnistCNN(nn.Module):
    """VGG-style: three blocks of conv 3x3 + BatchNorm + ReLU + max-pool, then one linear layer."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        channels, side = 1, 28
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(), nn.MaxPool2d(2)]
            channels, side = width, side // 2
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels * side * side, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.features(x)))


class Attention(nn.Module):
    """Multi-head self-attention written out, so that its probabilities can be recorded."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.probs = nn.Identity()  # hook point: trace records softmax(QKᵀ/√d) here
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # each (B, h, T, d)
        attn = self.probs((q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1))  # (B, h, T, T)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MnistViT(nn.Module):
    """Tiny ViT: 7x7 patches (a 4x4 grid), a class token, learned positions, 4 blocks, 4 heads."""

    def __init__(self, patch: int = 7, dim: int = 64, depth: int = 4, heads: int = 4, classes: int = 10,
                 image: int = 28):
        super().__init__()
        if image % patch:
            raise ValueError(f"a {image}px image does not split into {patch}px patches")
        self.patch, self.grid = patch, image // patch
        self.patch_embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.grid**2, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, grid², dim)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1) + self.pos_embed  # (B, 1 + grid², dim)
        return self.head(self.norm(self.blocks(x))[:, 0])


class ConvBNAct(nn.Sequential):
    """Conv + BatchNorm + ReLU6, keyed 0/1/2 like torchvision's Conv2dNormActivation."""

    def __init__(self, inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6(inplace=False))


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear projection; a skip connection when shapes allow."""

    def __init__(self, inp: int, out: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == out
        layers: list[nn.Module] = [ConvBNAct(inp, hidden, kernel=1)] if expand_ratio != 1 else []
        layers += [ConvBNAct(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]  # linear bottleneck: no ReLU
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (2018), width 1.0."""

    # expansion t, output channels c, repeats n, first stride s (Table 2 of the paper)
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self, classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, 32, stride=2)]
        channels = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        layers.append(ConvBNAct(channels, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "mnist-cnn": MnistCNN,
    "mnist-vit": MnistViT,
    "mobilenet_v2": MobileNetV2,
}

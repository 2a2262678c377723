"""The relative log amplitude of feature maps (Park & Kim, 2022) against numpy.fft: maps whose spectrum is known, a
NumPy transcription of the authors' recipe on random maps, and the layer-by-layer spectra of the shipped models
against feature maps read by hooks of the test's own."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from explorer.core import zoo
from explorer.core.architectures import Attention, MnistCNN
from explorer.errors import InputError
from explorer.lessons.attention import frequency as fq
from explorer.lessons.attention.math import PatchGrid
from tests.lessons.test_attention_layouts import MultiheadViT
from tests.lessons.test_attention_math import random_vit, randomized

needs = {name: pytest.mark.skipif(not zoo.is_available(name), reason=f"{name} is not on this machine")
         for name in ("mnist-vit", "mnist-cnn", "mobilenet_v2")}


def paper_recipe(fmap: np.ndarray) -> np.ndarray:
    """The authors' fourier_analysis recipe in NumPy for one (C, n, n) map: log(|fft2| + 1e-6), mean over channels,
    roll by n//2 (fftshift), the diagonal from the centre on, minus its first value; plus, for even n, the corner
    of the shifted spectrum (ω = π), which their slice stops short of."""
    n = fmap.shape[-1]
    spectrum = np.log(np.abs(np.fft.fft2(fmap.astype(np.float64))) + 1e-6).mean(axis=0)
    shifted = np.fft.fftshift(spectrum)
    diagonal = np.diag(shifted)[n // 2:]
    if n % 2 == 0:
        diagonal = np.append(diagonal, shifted[0, 0])
    return diagonal - diagonal[0]


def grid_yx(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(n), np.arange(n), indexing="ij")


@pytest.mark.parametrize(("channels", "n"), [(1, 2), (3, 3), (16, 4), (8, 7), (32, 14), (5, 28), (2, 33)])
def test_relative_log_amplitude_matches_the_papers_recipe_in_numpy(channels, n, rng):
    fmap = torch.randn(channels, n, n, generator=rng, dtype=torch.float64) * 3 + torch.rand(channels, 1, 1,
                                                                                             generator=rng,
                                                                                             dtype=torch.float64)
    ours = fq.relative_log_amplitude(fmap)
    assert ours.shape == (n // 2 + 1,)
    # a 1-D DFT of folded sums against numpy's 2-D FFT, both float64: rounding only
    np.testing.assert_allclose(ours.numpy(), paper_recipe(fmap.numpy()), rtol=0, atol=1e-9)
    np.testing.assert_allclose(fq.diagonal_frequencies(n).numpy(), 2 * np.arange(n // 2 + 1) / n)


def test_a_float32_map_gives_the_same_spectrum(rng):
    fmap = torch.randn(64, 14, 14, generator=rng)
    # the anti-diagonal sums run in float32 (≈1e-7 relative): in a log, well below 1e-4
    np.testing.assert_allclose(fq.relative_log_amplitude(fmap).numpy(), paper_recipe(fmap.double().numpy()),
                               rtol=0, atol=1e-4)


def test_a_constant_map_has_only_the_zero_frequency(rng):
    n, levels = 8, torch.rand(5, generator=rng, dtype=torch.float64) + 0.5
    fmap = levels[:, None, None].expand(5, n, n).clone()
    ours = fq.relative_log_amplitude(fmap).numpy()
    # every other amplitude is 0 (plus ε); the zero frequency is the sum c·n² of each channel
    expected = math.log(fq.EPS) - np.log(levels.numpy() * n * n + fq.EPS).mean()
    assert ours[0] == 0
    np.testing.assert_allclose(ours[1:], expected, rtol=1e-9)


@pytest.mark.parametrize(("n", "k0"), [(8, 1), (8, 3), (13, 4), (28, 5)])
def test_a_cosine_on_the_diagonal_shows_at_its_frequency_only(n, k0, rng):
    c = 6
    mean, amplitude = (torch.rand(c, generator=rng, dtype=torch.float64).numpy() + 1 for _ in range(2))
    phase = torch.rand(c, generator=rng, dtype=torch.float64).numpy() * 2 * np.pi
    y, x = grid_yx(n)
    fmap = mean[:, None, None] + amplitude[:, None, None] * np.cos(2 * np.pi * k0 * (y + x) / n + phase[:, None, None])
    ours = fq.relative_log_amplitude(torch.from_numpy(fmap)).numpy()
    dc = np.log(mean * n * n + fq.EPS).mean()
    # cos splits into e^{±i…}: each of the two diagonal frequencies ±k0 gets half the amplitude times n²
    np.testing.assert_allclose(ours[k0], np.log(amplitude * n * n / 2 + fq.EPS).mean() - dc, rtol=1e-9)
    others = np.delete(ours, [0, k0])
    np.testing.assert_allclose(others, math.log(fq.EPS) - dc, atol=1e-6)  # nothing else, up to rounding far below ε
    assert ours[1:].argmax() + 1 == k0  # the peak away from the zero frequency


def test_a_cosine_along_one_axis_is_off_the_diagonal(rng):
    n = 12
    _, x = grid_yx(n)
    fmap = np.stack([2 + np.cos(2 * np.pi * 3 * x / n), 3 + np.cos(2 * np.pi * 5 * x / n)])
    ours = fq.relative_log_amplitude(torch.from_numpy(fmap)).numpy()
    np.testing.assert_allclose(ours[1:], math.log(fq.EPS) - np.log(np.array([2, 3]) * n * n).mean(), atol=1e-6)


def test_a_checkerboard_is_all_at_pi(rng):
    n = 10
    y, x = grid_yx(n)
    mean, sign = torch.rand(4, generator=rng, dtype=torch.float64).numpy() + 1, np.array([1.0, -1.0, 0.5, -2.0])
    fmap = mean[:, None, None] + sign[:, None, None] * (-1.0) ** (y + x)
    ours = fq.relative_log_amplitude(torch.from_numpy(fmap)).numpy()
    assert fq.diagonal_frequencies(n)[-1] == 1.0  # the last point is ω = π
    dc = np.log(mean * n * n + fq.EPS).mean()
    np.testing.assert_allclose(ours[-1], np.log(np.abs(sign) * n * n + fq.EPS).mean() - dc, rtol=1e-9)
    np.testing.assert_allclose(ours[1:-1], math.log(fq.EPS) - dc, atol=1e-6)


def test_white_noise_is_flat_in_expectation(rng):
    channels, n = 4096, 16
    ours = fq.relative_log_amplitude(torch.randn(channels, n, n, generator=rng, dtype=torch.float64)).numpy()
    # E log|F| = log(nσ) - γ/2 for a complex Gaussian coefficient (0 < k < n/2), but log(nσ) - (γ + log 2)/2 for a
    # real one (the zero frequency and, n even, π): flat, apart from that known log(2)/2 step at both ends
    expected = np.full(n // 2 + 1, math.log(2) / 2)
    expected[0] = expected[-1] = 0.0
    # each point is a mean of 4096 independent differences of variance π²/8 + π²/24: s.d. 0.020; 0.1 is 5 s.d.
    np.testing.assert_allclose(ours, expected, atol=0.1)


@pytest.mark.parametrize("shape", [(4, 5, 6), (4, 1, 1), (16, 16)])
def test_a_map_that_is_not_square_gets_a_message(shape):
    with pytest.raises(InputError) as error:
        fq.relative_log_amplitude(torch.zeros(shape))
    assert str(error.value) == (f"the spectrum along the diagonal needs a (channels, n, n) map with n ≥ 2, got shape "
                                f"{shape}.")


def test_token_map_puts_each_patch_token_at_its_place(rng):
    grid = PatchGrid(first=1, rows=3, cols=3, patch=4.0)
    tokens = torch.randn(10, 6, generator=rng)
    fmap = fq.token_map(tokens, grid)
    assert fmap.shape == (6, 3, 3)
    for r in range(3):
        for c in range(3):
            torch.testing.assert_close(fmap[:, r, c], tokens[grid.token(r, c)])


def hooked_maps(model: nn.Module, x: torch.Tensor, names: dict[str, str]) -> dict[str, torch.Tensor]:
    """{key: (C, H, W) map} read by the test's own hooks: names maps a key to "module:input" or "module:output"."""
    got, handles = {}, []
    modules = dict(model.named_modules())
    for key, spec in names.items():
        name, which = spec.split(":")
        if which == "input":
            handles.append(modules[name].register_forward_pre_hook(lambda m, a, key=key: got.setdefault(key, a[0])))
        else:
            handles.append(modules[name].register_forward_hook(lambda m, a, o, key=key: got.setdefault(key, o)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return {k: v[0].detach().cpu().float() for k, v in got.items()}


def vit_reference(vit: nn.Module, x: torch.Tensor) -> list[tuple[str, str, np.ndarray]]:
    """(kind, name, Δ log amplitude) of the residual stream of one of our ViTs, from hooks and NumPy."""
    specs = {"input of blocks.0": "blocks.0:input"}
    kinds = {"input of blocks.0": "embedding"}
    for i in range(len(vit.blocks)):
        specs[f"blocks.{i}.attn"], kinds[f"blocks.{i}.attn"] = f"blocks.{i}.norm2:input", "attention"
        specs[f"output of blocks.{i}"], kinds[f"output of blocks.{i}"] = f"blocks.{i}:output", "mlp"
    maps = hooked_maps(vit, x, specs)
    g = vit.grid
    return [(kinds[k], k, paper_recipe(v[1:].T.reshape(-1, g, g).numpy())) for k, v in maps.items()]


def check_against(spectra: fq.NetworkSpectra, reference: list[tuple[str, str, np.ndarray]]) -> None:
    assert [(s.kind, s.name) for s in spectra.layers] == [(k, n) for k, n, _ in reference]
    for s, (_, _, delta) in zip(spectra.layers, reference, strict=True):
        assert torch.isfinite(s.delta).all()
        # float32 activations, folded in float32: about 1e-6 relative in each amplitude
        np.testing.assert_allclose(s.delta.numpy(), delta, rtol=0, atol=1e-4)


def test_a_random_vits_stream_matches_its_hooks_and_numpy(rng):
    vit = random_vit(rng, dim=24, depth=3, heads=4, patch=4)  # a 7 × 7 grid: odd n, highest frequency 6π/7
    x = torch.randn(1, 1, 28, 28, generator=rng)
    spectra = fq.network_spectra(vit, x)
    check_against(spectra, vit_reference(vit, x))
    highs = [s.high for s in spectra.layers]
    assert math.isnan(spectra.layers[0].high_before)
    assert [s.high_before for s in spectra.layers[1:]] == highs[:-1]  # the stream is each layer's input
    np.testing.assert_allclose(spectra.depth.numpy(), np.linspace(0, 1, 7), rtol=1e-15)


def test_a_sequence_first_vit_gives_the_spectra_of_its_batch_first_twin(rng):
    """torch's nn.MultiheadAttention takes (T, B, D) by default: the stream's batch item 0 is then along axis 1."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    # float64: the two layouts multiply in different orders, and in float32 their rounding reached 2e-5 in Δ log A
    # (seed 1009353740); in float64 they differ by at most 3e-14 over 30 seeds
    batch_first, sequence_first = MultiheadViT(batch_first=True).double(), MultiheadViT(batch_first=False).double()
    sequence_first.load_state_dict(batch_first.state_dict())
    x = torch.randn(2, 1, 28, 28, generator=rng, dtype=torch.float64)  # two images: item 0 must be the first one
    twins = [fq.network_spectra(model.eval(), x) for model in (batch_first, sequence_first)]
    assert [s.name for s in twins[0].layers] == [s.name for s in twins[1].layers] and len(twins[0].layers) == 5
    for a, b in zip(*(t.layers for t in twins), strict=True):
        np.testing.assert_allclose(b.delta.numpy(), a.delta.numpy(), rtol=0, atol=1e-9)
    alone = fq.network_spectra(batch_first, x[:1])
    np.testing.assert_allclose(alone.layers[-1].delta.numpy(), twins[0].layers[-1].delta.numpy(), rtol=0, atol=1e-9)


@needs["mnist-vit"]
def test_mnist_vit_layer_by_layer(rng):
    model = zoo.load("mnist-vit")
    x = torch.randn(1, 1, 28, 28, generator=rng)
    spectra = fq.network_spectra(model.module, x)
    assert len(spectra.layers) == 9 and spectra.left_out == ()  # patches + positions, then attention and MLP × 4
    assert {s.side for s in spectra.layers} == {4} and spectra.layers[0].frequencies_pi.tolist() == [0, 0.5, 1]
    check_against(spectra, vit_reference(model.module, x))
    low, n = spectra.lowering("attention")
    assert n == 4 and low == sum(s.change < 0 for s in spectra.layers if s.kind == "attention")


def cnn_reference(model: nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, str, np.ndarray]], list[float]]:
    """((kind, name, Δ log amplitude of the output), Δ at the highest frequency of each layer's input), every leaf
    with a square map, from hooks and NumPy."""
    leaves = [n for n, m in model.named_modules() if n and not m._modules]
    outputs = hooked_maps(model, x, {n: f"{n}:output" for n in leaves})
    inputs = hooked_maps(model, x, {n: f"{n}:input" for n in leaves})
    kinds = {nn.Conv2d: "conv", nn.BatchNorm2d: "norm", nn.ReLU: "activation", nn.ReLU6: "activation",
             nn.MaxPool2d: "pool"}
    modules = dict(model.named_modules())
    kept = [n for n in leaves if outputs[n].dim() == 3 and outputs[n].shape[-1] == outputs[n].shape[-2] > 1]
    return ([(kinds[type(modules[n])], n, paper_recipe(outputs[n].numpy())) for n in kept],
            [paper_recipe(inputs[n].numpy())[-1] for n in kept])


@needs["mnist-cnn"]
def test_mnist_cnn_layer_by_layer(rng):
    model = zoo.load("mnist-cnn")
    x = torch.randn(1, 1, 28, 28, generator=rng)
    spectra = fq.network_spectra(model.module, x)
    reference, before = cnn_reference(model.module, x)
    check_against(spectra, reference)
    assert [s.side for s in spectra.layers] == [28] * 3 + [14] * 4 + [7] * 4 + [3]
    np.testing.assert_allclose([s.high_before for s in spectra.layers], before, atol=1e-4)
    assert spectra.lowering("conv")[1] == 3


def test_a_random_cnn_layer_by_layer(rng):
    model = randomized(MnistCNN(widths=(4, 6)), rng)
    x = torch.randn(1, 1, 28, 28, generator=rng)
    spectra = fq.network_spectra(model, x)
    reference, before = cnn_reference(model, x)
    check_against(spectra, reference)
    np.testing.assert_allclose([s.high_before for s in spectra.layers], before, atol=1e-4)


@needs["mobilenet_v2"]
def test_mobilenet_v2_layer_by_layer():
    model = zoo.load("mobilenet_v2")
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    spectra = fq.network_spectra(model.module, x)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.module.modules())
    assert spectra.lowering("conv")[1] == convs == 52
    assert spectra.left_out == ("pool",)  # 1 × 1 after the global average pool
    assert all(torch.isfinite(s.delta).all() and math.isfinite(s.high_before) for s in spectra.layers)
    assert spectra.layers[-1].side == 7 and spectra.layers[-1].frequencies_pi[-1] == pytest.approx(6 / 7)


class LoneAttention(nn.Module):
    """Patches and one attention layer that sits in no block."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(1, 8, 7, stride=7)
        self.attn = Attention(8, 2)

    def forward(self, x):
        return self.attn(self.embed(x).flatten(2).transpose(1, 2)).mean(1)


def test_attention_outside_a_block_gets_a_message(rng):
    with pytest.raises(InputError) as error:
        fq.network_spectra(LoneAttention().eval(), torch.randn(1, 1, 28, 28, generator=rng))
    assert str(error.value) == ("attn lies in no pre-norm block with a norm named norm2, ln_2, layernorm_after after "
                                "its attention, so the residual stream between attention and MLP cannot be read.")


@needs["mnist-vit"]
@needs["mnist-cnn"]
def test_the_comparison_puts_the_sessions_model_first_and_uses_the_same_picture():
    from explorer.core.gallery import mnist_gallery

    digit, vit = mnist_gallery()[0], zoo.load("mnist-vit")
    x = vit.preprocess(digit.source)
    result = fq.comparison(vit, x, digit.source)
    names = [name for name, _ in result.spectra]
    assert names[:2] == ["mnist-vit", "mnist-cnn"] and result.refused == ()
    assert ("mobilenet_v2" in names) == zoo.is_available("mobilenet_v2")
    cnn = zoo.load("mnist-cnn")
    alone = fq.network_spectra(cnn.module, cnn.preprocess(digit.source))
    torch.testing.assert_close(torch.stack([s.delta[-1] for s in dict(result.spectra)["mnist-cnn"].layers]),
                               torch.stack([s.delta[-1] for s in alone.layers]))

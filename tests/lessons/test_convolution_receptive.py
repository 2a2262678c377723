"""Receptive fields, effective receptive fields and the filter atlas against independent references.

Theoretical fields: a brute-force check (perturb one input pixel at a time, see which output units
change) on random small CNNs with random kernels, strides, dilations and paddings, on the MNIST CNN and
on MobileNetV2-style residual blocks. On a linear network (ReLU removed, max-pooling replaced by
average pooling of the same window, weights random) every pixel of the box moves the unit, so the
changed pixels' bounding box must equal the box clipped to the image; with the real nonlinearities
the changed pixels must lie inside it. Effective fields: torch.autograd.functional.jacobian of the
full, uncropped network, and central finite differences. Spectra: numpy.fft.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer.core import zoo
from explorer.core.architectures import ConvBNAct, InvertedResidual, MnistCNN
from explorer.errors import InputError
from explorer.lessons.convolution import receptive as R


def random_cnn(rng: torch.Generator, pool: str = "avg", relu: bool = False) -> tuple[nn.Sequential, int]:
    """3 to 5 conv/pool layers with random kernel, stride, dilation and padding that run on a 40×40 input."""
    while True:
        model = _random_layers(rng, pool, relu)
        try:
            with torch.no_grad():
                model(torch.zeros(1, 1, 40, 40, dtype=torch.double))
            return model, 40
        except RuntimeError:  # the maps shrank below a kernel: draw again
            continue


def _random_layers(rng: torch.Generator, pool: str, relu: bool) -> nn.Sequential:
    layers, channels = [], 2
    for _ in range(int(torch.randint(3, 6, (1,), generator=rng))):
        k, s, d = (int(torch.randint(lo, hi, (1,), generator=rng)) for lo, hi in ((1, 5), (1, 3), (1, 3)))
        if torch.rand(1, generator=rng) < 0.3:
            k = int(torch.randint(2, 4, (1,), generator=rng))
            p = int(torch.randint(0, k // 2 + 1, (1,), generator=rng))
            layers.append(nn.AvgPool2d(k, s, p) if pool == "avg" else nn.MaxPool2d(k, s, p, dilation=d))
        else:
            out = int(torch.randint(1, 4, (1,), generator=rng))
            p = int(torch.randint(0, d * (k - 1) + 2, (1,), generator=rng))
            layers.append(nn.Conv2d(channels, out, k, s, p, dilation=d))
            channels = out
            if relu:
                layers.append(nn.ReLU())
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), *layers).double().eval()
    with torch.no_grad():
        for prm in model.parameters():
            prm.copy_(torch.randn(prm.shape, generator=rng, dtype=torch.double))
    return model


def outputs_of(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    outs, modules = {}, dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda m, a, o, n=n: outs.setdefault(n, o)) for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return outs


def influence(model: nn.Module, shape: tuple[int, ...], names: list[str], rng: torch.Generator) -> dict:
    """For each layer: (H·W, C, h, w) bool, whether perturbing input pixel p changes each output unit."""
    c, h, w = shape
    x = torch.randn((1, *shape), generator=rng, dtype=torch.double)
    perturbed = x.repeat(h * w, 1, 1, 1)
    idx = torch.arange(h * w)
    perturbed.view(h * w, c, h * w)[idx, :, idx] += 10.0  # pixel p of copy p, in every input channel
    base, moved = outputs_of(model, x, names), outputs_of(model, perturbed, names)
    return {n: (moved[n] - base[n]).abs() > 1e-9 * (1 + base[n].abs()) for n in names}


def check_fields(model: nn.Module, shape: tuple[int, int, int], rng: torch.Generator, exact: bool) -> int:
    fields = R.receptive_fields(model, shape)
    assert fields, "no conv or pooling layer found"
    changed = influence(model, shape, [f.name.partition(":")[0] for f in fields], rng)
    h, w = shape[1:]
    checked = 0
    for f in fields:
        moved = changed[f.name].any(dim=1)  # (H·W, oh, ow): any channel of the unit
        assert tuple(moved.shape[1:]) == f.output_hw
        for i in range(f.output_hw[0]):
            for j in range(f.output_hw[1]):
                rows, cols = np.nonzero(moved[:, i, j].view(h, w).numpy())
                box = R.theoretical_field(fields, f.name, i, j).clipped(h, w)
                if len(rows):
                    assert box.top <= rows.min() and rows.max() < box.bottom, (f.name, i, j, box)
                    assert box.left <= cols.min() and cols.max() < box.right, (f.name, i, j, box)
                # Where the box reaches into padding, dilated taps can all miss the image; inside it, the first
                # and last taps are on the box's edges.
                if exact and R.theoretical_field(fields, f.name, i, j) == box:
                    seen = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1) if len(rows) else None
                    assert seen == (box.top, box.left, box.bottom, box.right), (f.name, i, j, seen, box)
                    checked += 1
    return checked


def linearised(model: nn.Module) -> nn.Module:
    """The same windows without nonlinearities: every pixel of a unit's box then moves it."""
    copy_ = copy.deepcopy(model).double().eval()
    for name, module in list(copy_.named_modules()):
        parent = copy_.get_submodule(name.rpartition(".")[0]) if "." in name else copy_
        leaf = name.rpartition(".")[2]
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            setattr(parent, leaf, nn.Identity())
        elif isinstance(module, nn.MaxPool2d):
            setattr(parent, leaf, nn.AvgPool2d(module.kernel_size, module.stride, module.padding))
    return copy_


@pytest.mark.parametrize("trial", range(12))
def test_fields_of_random_linear_cnns_match_brute_force_exactly(trial, rng):
    model, side = random_cnn(rng)
    assert check_fields(model, (1, side, side), rng, exact=True) > 0


@pytest.mark.parametrize("trial", range(6))
def test_changed_pixels_of_random_relu_maxpool_cnns_lie_inside_the_field(trial, rng):
    model, side = random_cnn(rng, pool="max", relu=True)
    assert check_fields(model, (1, side, side), rng, exact=False) == 0


def randomised(model: nn.Module, rng: torch.Generator) -> nn.Module:
    model = model.double().eval()
    with torch.no_grad():
        for prm in model.parameters():
            prm.copy_(torch.randn(prm.shape, generator=rng, dtype=torch.double) * 0.5)
    return model


def test_fields_of_the_mnist_cnn_match_brute_force(rng):
    model = randomised(MnistCNN(widths=(3, 4, 5)), rng)
    check_fields(model, (1, 28, 28), rng, exact=False)
    assert check_fields(linearised(model), (1, 28, 28), rng, exact=True) > 100


def test_fields_through_mobilenet_residual_blocks_match_brute_force(rng):
    model = randomised(nn.Sequential(ConvBNAct(1, 4, stride=2), InvertedResidual(4, 4, 1, 2),
                                     InvertedResidual(4, 6, 2, 2), InvertedResidual(6, 6, 1, 3)), rng)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # random statistics, so that BatchNorm is an arbitrary affine map
            m.running_mean.normal_(generator=rng)
            m.running_var.uniform_(0.5, 2, generator=rng)
    assert check_fields(linearised(model), (1, 30, 30), rng, exact=True) > 20


def test_the_shipped_models_have_the_textbook_fields():
    cnn = {f.name: f for f in R.receptive_fields(zoo.load("mnist-cnn"))}
    # 3×3 convs with padding 1 and 2×2 max-pools: 3, 4, 8, 10, 18, 22 pixels
    assert [(f.size[0], f.jump[0], f.start[0]) for f in cnn.values()] == [
        (3, 1, -1), (4, 2, -1), (8, 2, -3), (10, 4, -3), (18, 4, -7), (22, 8, -7)]
    vit = R.receptive_fields(zoo.load("mnist-vit"))
    assert [(f.name, f.size, f.jump) for f in vit] == [("patch_embed", (7, 7), (7, 7))]
    with pytest.raises(InputError, match=r"'blocks.0.attn' has no receptive field here: .* choose one of: patch_embed"):
        R.theoretical_field(vit, "blocks.0.attn", 0, 0)
    with pytest.raises(InputError, match=r"features.0 has an output map of 28×28 units; unit \(28, 0\) is not on it"):
        R.theoretical_field(tuple(cnn.values()), "features.0", 28, 0)


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
def test_mobilenet_fields_cover_depthwise_and_pointwise_layers():
    fields = {f.name: f for f in R.receptive_fields(zoo.load("mobilenet_v2"))}
    assert fields["features.0.0"].size == (3, 3) and fields["features.0.0"].jump == (2, 2)
    assert fields["features.1.conv.0.0"].size == (7, 7)  # depthwise 3×3 at jump 2
    assert fields["features.1.conv.1"].size == (7, 7)     # pointwise 1×1: no growth
    assert fields["features.18.0"].size == (491, 491) and fields["features.18.0"].jump == (32, 32)
    assert len(fields) == 53  # 52 convolutions and the global average pool


def reference_erf(model: nn.Module, x: torch.Tensor, layer: str, channel: int, i: int, j: int) -> torch.Tensor:
    module = dict(model.named_modules())[layer]

    def unit(inp: torch.Tensor) -> torch.Tensor:
        out = {}
        hook = module.register_forward_hook(lambda m, a, o: out.setdefault("o", o))
        try:
            model(inp)
        finally:
            hook.remove()
        return out["o"][0, channel, i, j]

    return torch.autograd.functional.jacobian(unit, x)[0].abs().sum(0)


@pytest.mark.parametrize("trial", range(6))
def test_effective_field_matches_autograd_jacobian_on_random_cnns(trial, rng):
    model, side = random_cnn(rng, pool=("avg", "max")[trial % 2], relu=True)
    x = torch.randn(1, 1, side, side, generator=rng, dtype=torch.double)
    for f in R.receptive_fields(model, (1, side, side)):
        i, j = (int(torch.randint(0, n, (1,), generator=rng)) for n in f.output_hw)
        channel = int(torch.randint(0, outputs_of(model, x, [f.name])[f.name].shape[1], (1,), generator=rng))
        ours = R.effective_receptive_field(model, x, f.name, channel, i, j)
        ref = reference_erf(model, x, f.name, channel, i, j)
        torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)  # float32 map of float64 gradients
        box = R.theoretical_field(R.receptive_fields(model, (1, side, side)), f.name, i, j).clipped(side, side)
        support = torch.zeros(side, side, dtype=torch.bool)
        support[box.top:box.bottom, box.left:box.right] = True
        assert not (ref.ne(0) & ~support).any(), "gradient outside the theoretical field"


def test_effective_field_matches_finite_differences_on_mobilenet_blocks(rng):
    model = randomised(nn.Sequential(ConvBNAct(2, 4, stride=2), InvertedResidual(4, 4, 1, 2),
                                     InvertedResidual(4, 6, 2, 2)), rng)
    x = torch.randn(1, 2, 14, 14, generator=rng, dtype=torch.double)
    layer = "2.conv.1.0"  # the depthwise conv of the second block
    ours = R.effective_receptive_field(model, x, layer, 3, 2, 1)
    step, grads = 1e-6, torch.zeros_like(x)
    for index in np.ndindex(*x.shape):
        up, down = x.clone(), x.clone()
        up[index] += step
        down[index] -= step
        grads[index] = (outputs_of(model, up, [layer])[layer][0, 3, 2, 1]
                        - outputs_of(model, down, [layer])[layer][0, 3, 2, 1]) / (2 * step)
    # ReLU6 kinks are met with probability zero; central differences in float64 are good to ~1e-8
    torch.testing.assert_close(ours.double(), grads[0].abs().sum(0), rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
@pytest.mark.parametrize("layer", ["features.2.conv.1.0", "features.6.conv.2", "features.17.conv.1.0"])
def test_mobilenet_effective_field_matches_the_full_network_and_leaves_the_model_alone(layer, rng):
    model = zoo.load("mobilenet_v2")
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    x = torch.randn(1, 3, 224, 224, generator=rng) * 0.5
    f = R.field_of(R.receptive_fields(model), layer)
    i, j = (int(torch.randint(0, n, (1,), generator=rng)) for n in f.output_hw)
    ours = R.effective_receptive_field(model, x, layer, 5, i, j)
    ref = reference_erf(model.module, x, layer, 5, i, j)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6 * float(ref.max()))  # float32 sums in two orders
    assert all(torch.equal(v, before[k]) for k, v in model.module.state_dict().items())
    assert not any(m._forward_hooks for m in model.module.modules())
    assert not any(p.requires_grad for p in model.module.parameters())


def test_effective_field_errors_say_what_to_choose(rng):
    model = zoo.load("mnist-cnn")
    x = torch.randn(1, 1, 28, 28, generator=rng)
    with pytest.raises(InputError, match=r"features.0 has an output map of 28×28 units; unit \(3, 30\)"):
        R.effective_receptive_field(model, x, "features.0", 0, 3, 30)
    with pytest.raises(InputError, match="classifier does not make a feature map"):
        R.effective_receptive_field(model, x, "classifier", 0, 0, 0)
    training = MnistCNN().train()
    with pytest.raises(InputError, match=r"needs the model in eval mode \(call model.eval\(\)\)"):
        R.effective_receptive_field(training, x, "features.0", 0, 0, 0)
    before = {k: v.clone() for k, v in training.state_dict().items()}
    R.receptive_fields(training, (1, 28, 28))  # runs a private eval copy
    assert all(torch.equal(v, before[k]) for k, v in training.state_dict().items())


# --- filter atlas ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 3), (5, 5), (7, 3), (1, 4), (16, 16)])
def test_amplitude_spectrum_matches_numpy_fft(shape, rng):
    kernel = torch.randn(shape, generator=rng)
    ours = R.amplitude_spectrum(kernel, 16)
    ref = np.abs(np.fft.fftshift(np.fft.fft2(kernel.double().numpy(), s=(16, 16))))
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-12)
    assert ours[8, 8] == pytest.approx(float(kernel.double().sum().abs()))  # the centre is the DC term, |Σ w|


def test_degenerate_filters_flag_constructed_tiny_and_flat_filters(rng):
    w = torch.randn(12, 4, 3, 3, generator=rng)
    w[3] *= 1e-4                       # tiny: norm far below 1 % of the largest
    w[5] = 0.7                         # flat: every weight the same, spread 0
    w[7] = torch.randn(4, 3, 3, generator=rng) * 0.02 + 0.3  # a small spread, but 2 % of a normal one: kept
    w[9] *= 0.05                       # small, but 5 % of the largest norm: kept
    tiny, flat = R.degenerate_filters(w)
    assert tiny.nonzero().flatten().tolist() == [3]
    assert flat.nonzero().flatten().tolist() == [5]
    norms, spreads = w.double().flatten(1).norm(dim=1), w.double().flatten(1).std(dim=1, correction=0)
    assert torch.equal(tiny, norms < 0.01 * norms.max())
    assert torch.equal(flat, (spreads < 0.01 * spreads.max()) & ~tiny)


@pytest.mark.parametrize("shape", [(8, 3, 5, 5), (6, 1, 3, 3), (5, 7, 3, 3), (4, 10, 1, 1)])
def test_filter_atlas_pictures_norms_and_activation_strength(shape, rng):
    w = torch.randn(shape, generator=rng)
    x = torch.randn(1, shape[1], 12, 12, generator=rng)
    out = F.conv2d(x, w, padding=shape[-1] // 2)
    atlas = R.filter_atlas(w, out)
    if shape[1] == 3:
        assert atlas.colour and torch.equal(atlas.pictures, w.permute(0, 2, 3, 1))
    elif shape[-2:] == (1, 1):
        assert atlas.spectra is None and atlas.pictures.shape == (4, 3, 4)  # 10 weights on a 3×4 grid
        np.testing.assert_array_equal(atlas.pictures.flatten(1)[:, :10].numpy(), w.flatten(1).numpy())
        assert atlas.pictures.flatten(1)[:, 10:].isnan().all()
    else:
        torch.testing.assert_close(atlas.pictures, w.mean(1))
    if atlas.spectra is not None:
        pattern = w.mean(1).numpy()
        ref = np.abs(np.fft.fftshift(np.fft.fft2(pattern, s=(16, 16)), axes=(-2, -1)))
        np.testing.assert_allclose(atlas.spectra.numpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(atlas.norms.numpy(), np.linalg.norm(w.flatten(1).numpy(), axis=1), rtol=1e-5)
    np.testing.assert_allclose(atlas.strength.numpy(), np.abs(out[0].numpy()).mean(axis=(1, 2)), rtol=1e-5)
    by_norm = R.filter_order(atlas, "L2 norm").tolist()
    assert by_norm == np.argsort(-atlas.norms.numpy(), kind="stable").tolist()
    assert R.filter_order(atlas, "activation").tolist() == np.argsort(-atlas.strength.numpy(), kind="stable").tolist()
    assert R.filter_order(atlas, "index").tolist() == list(range(shape[0]))


def test_filter_atlas_errors():
    with pytest.raises(InputError, match="no sort named 'size'; choose one of: index, L2 norm, activation"):
        R.filter_order(R.filter_atlas(torch.ones(2, 1, 3, 3)), "size")
    with pytest.raises(InputError, match="sorting by activation needs the layer's output"):
        R.filter_order(R.filter_atlas(torch.ones(2, 1, 3, 3)), "activation")
    with pytest.raises(InputError, match=r"the filter atlas shows 2-D convolutions; this weight has shape \(2, 3\)"):
        R.filter_atlas(torch.ones(2, 3))


@pytest.mark.parametrize("trial", range(8))
def test_effective_side_matches_a_search_over_centred_squares(trial, rng):
    h, w = (int(v) for v in torch.randint(5, 30, (2,), generator=rng))
    heat = torch.rand(h, w, generator=rng) ** 4
    top, left = (int(v) for v in torch.randint(-4, 10, (2,), generator=rng))
    box = R.Box(top, left, top + int(torch.randint(1, 12, (1,), generator=rng)),
                left + int(torch.randint(1, 12, (1,), generator=rng)))
    share = float(torch.rand(1, generator=rng))
    values = heat.double().numpy()
    cy, cx = (box.top + box.bottom - 1) // 2, (box.left + box.right - 1) // 2  # the centre pixel, rounded down
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    expected = None
    for side in range(1, 6 * max(h, w), 2):
        inside = (np.abs(rows - cy) <= side // 2) & (np.abs(cols - cx) <= side // 2)
        if values[inside].sum() >= share * values.sum() * (1 - 1e-6):  # float32 sums in another order
            expected = side
            break
    assert R.effective_side(heat, box, share) == expected
    assert R.effective_side(torch.zeros(h, w), box) == 0


def test_colour_composite_maps_zero_to_grey_and_the_limit_to_full_colour(rng):
    w = torch.randn(4, 3, 3, 3, generator=rng).permute(0, 2, 3, 1)
    limit = float(w.abs().max())
    ours = R.colour_composite(w, limit)
    ref = np.round(127.5 + 127.5 * np.clip(w.numpy() / limit, -1, 1))
    np.testing.assert_allclose(ours.numpy(), ref, atol=1)  # round-half-even vs numpy's: one level at most
    assert R.colour_composite(torch.zeros(1, 1, 1, 3), 1.0).tolist() == [[[[128, 128, 128]]]]
    assert R.colour_composite(torch.tensor([[[[-2.0, 2.0, 1.0]]]]), 1.0).tolist() == [[[[0, 255, 255]]]]


def test_mnist_cnn_gradients_stay_inside_the_theoretical_field(rng):
    model = zoo.load("mnist-cnn")
    x = torch.randn(1, 1, 28, 28, generator=rng)
    fields = R.receptive_fields(model)
    for f in fields:
        for _ in range(4):
            i, j = (int(torch.randint(0, n, (1,), generator=rng)) for n in f.output_hw)
            heat = R.effective_receptive_field(model, x, f.name, int(torch.randint(0, 16, (1,), generator=rng)), i, j)
            box = R.theoretical_field(fields, f.name, i, j).clipped(28, 28)
            outside = heat.clone()
            outside[box.top:box.bottom, box.left:box.right] = 0
            assert not outside.any(), (f.name, i, j, box)


@pytest.mark.parametrize("cells", [1, 3, 5, 7])
def test_adaptive_pooling_fields_cover_what_brute_force_finds(cells, rng):
    model = randomised(nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.AdaptiveAvgPool2d(cells)), rng)
    check_fields(model, (1, 29, 29), rng, exact=False)  # 14×14 maps pooled to cells × cells
    if 14 % cells == 0:
        assert check_fields(model, (1, 29, 29), rng, exact=True) > 0

"""The convolution lesson's numbers against independent references, on fresh random tensors.

window / channel_steps: F.conv2d (the layer itself); each input channel's share: scipy.signal.correlate2d;
what follows a convolution: the model's traced outputs; playground: F.conv2d after F.pad; presets:
scipy.ndimage and skimage.filters.gabor_kernel. Tolerances: float32 sums of up to a few hundred products
(1e-4 relative), float64 elsewhere.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
import skimage.filters
import torch
import torch.nn.functional as F
from torch import nn

from explorer.core import zoo
from explorer.errors import InputError
from explorer.lessons.convolution import math as cm
from explorer.session.state import ExplorerState

# (in, out, kernel, stride, padding, dilation, groups): standard, strided, dilated, grouped, depthwise, 1×1,
# rectangular kernels and 'same'/'valid' string paddings
SHAPES = [
    (1, 4, 3, 1, 1, 1, 1),
    (3, 6, 3, 2, 1, 1, 1),
    (4, 8, (3, 5), (2, 1), (2, 1), (1, 2), 2),
    (6, 6, 3, 2, 1, 1, 6),
    (8, 4, 1, 1, 0, 1, 1),
    (4, 4, 5, 3, 2, 2, 4),
    (2, 6, 3, 1, "same", 2, 2),
    (3, 3, (2, 3), 1, "valid", 1, 1),
]
CASES = [(*shape, mode) for shape, mode in itertools.product(SHAPES, cm.PADDING_MODES)
         if not (shape[4] == "same" and mode != "zeros")]  # torch allows 'same' with any mode; one is enough


def make_conv(rng, c_in, c_out, kernel, stride, padding, dilation, groups, mode, bias=True) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups, bias=bias, padding_mode=mode)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=rng))
        if bias:
            conv.bias.copy_(torch.randn(c_out, generator=rng))
    return conv


@pytest.mark.parametrize(("c_in", "c_out", "kernel", "stride", "padding", "dilation", "groups", "mode"), CASES)
def test_window_value_matches_conv2d(rng, c_in, c_out, kernel, stride, padding, dilation, groups, mode):
    conv = make_conv(rng, c_in, c_out, kernel, stride, padding, dilation, groups, mode)
    x = torch.randn(1, c_in, 11, 9, generator=rng)
    reference = conv(x).detach()[0]  # (C_out, H_out, W_out): nn.Conv2d's own padding and F.conv2d
    for _ in range(6):
        o = int(torch.randint(c_out, (1,), generator=rng))
        i = int(torch.randint(reference.shape[1], (1,), generator=rng))
        j = int(torch.randint(reference.shape[2], (1,), generator=rng))
        step = cm.window(conv, x, o, i, j)
        assert step.value == pytest.approx(float(reference[o, i, j]), rel=1e-4, abs=1e-4)
        assert torch.allclose(step.products, step.patch * step.kernel)
        assert step.value == pytest.approx(float(step.products.sum()) + step.bias, rel=1e-6, abs=1e-6)
        assert step.bias == pytest.approx(float(conv.bias[o]))
        per_group = c_in // groups
        group = o // (c_out // groups)
        assert step.in_channels == tuple(range(group * per_group, (group + 1) * per_group))
        assert step.patch.shape == (per_group, *conv.kernel_size)


@pytest.mark.parametrize(("c_in", "c_out", "kernel", "stride", "padding", "dilation", "groups", "mode"), CASES)
def test_channel_steps_match_conv2d_and_window(rng, c_in, c_out, kernel, stride, padding, dilation, groups, mode):
    conv = make_conv(rng, c_in, c_out, kernel, stride, padding, dilation, groups, mode)
    x = torch.randn(1, c_in, 10, 12, generator=rng)
    reference = conv(x).detach()[0]
    o = int(torch.randint(c_out, (1,), generator=rng))
    steps = cm.channel_steps(conv, x, o)
    torch.testing.assert_close(steps.output, reference[o], rtol=1e-4, atol=1e-4)
    assert steps.positions == reference[o].numel()
    torch.testing.assert_close(steps.sums + steps.bias, reference[o].flatten(), rtol=1e-4, atol=1e-4)
    w_out = reference.shape[2]
    for k in torch.randint(steps.positions, (5,), generator=rng).tolist():
        step = cm.window(conv, x, o, k // w_out, k % w_out)
        torch.testing.assert_close(steps.patches[k], step.patch)
        torch.testing.assert_close(steps.products[k], step.products)
        # the window's top-left tap in the padded input, and the taps' offsets
        top, left = int(steps.tops[k]), int(steps.lefts[k])
        rows, cols = top + steps.tap_rows, left + steps.tap_cols
        torch.testing.assert_close(steps.padded[:, rows][:, :, cols], step.patch)


@pytest.mark.parametrize("mode", cm.PADDING_MODES)
@pytest.mark.parametrize(("stride", "dilation"), [(1, 1), (2, 1), (1, 2), (3, 2)])
def test_each_input_channels_share_matches_scipy_correlate2d(rng, mode, stride, dilation):
    """Σ over the group's channels of correlate2d(padded channel, dilated kernel, 'valid'), strided."""
    conv = make_conv(rng, 3, 2, 3, stride, 2, dilation, 1, mode, bias=False)
    x = torch.randn(1, 3, 9, 13, generator=rng, dtype=torch.float64).float()
    o = 1
    steps = cm.channel_steps(conv, x, o)
    padded = cm.pad(x.double(), cm.padding_amounts(conv), mode)[0].numpy()
    total = 0
    for c in range(3):
        dilated = np.zeros((dilation * 2 + 1,) * 2)
        dilated[::dilation, ::dilation] = conv.weight[o, c].detach().double().numpy()
        share = scipy.signal.correlate2d(padded[c], dilated, mode="valid")[::stride, ::stride]
        # the per-channel products of every position, summed per position, are this channel's share
        mine = steps.products[:, c].sum(dim=(1, 2)).reshape(share.shape).double().numpy()
        np.testing.assert_allclose(mine, share, rtol=1e-4, atol=1e-4)
        total = total + share
    np.testing.assert_allclose(steps.output.double().numpy(), total, rtol=1e-4, atol=1e-4)


def test_padding_matches_the_layers_own_padding(rng):
    for padding, mode in itertools.product([(1, 2), "same"], cm.PADDING_MODES):
        conv = make_conv(rng, 2, 2, (4, 3), 1, padding, 1, 1, mode)
        x = torch.randn(1, 2, 7, 8, generator=rng)
        left, right, top, bottom = cm.padding_amounts(conv)
        padded = cm.pad(x, (left, right, top, bottom), mode)
        expected = F.conv2d(padded, conv.weight, conv.bias)
        torch.testing.assert_close(conv(x), expected)


def test_window_rejects_positions_and_channels_that_do_not_exist(rng):
    conv = make_conv(rng, 1, 2, 3, 1, 0, 1, 1, "zeros")
    x = torch.randn(1, 1, 5, 5, generator=rng)
    with pytest.raises(InputError, match=r"position \(3, 0\) is outside the 3×3 output"):
        cm.window(conv, x, 0, 3, 0)
    with pytest.raises(InputError, match=r"output channel 2 does not exist; this convolution has 2 \(0 to 1\)"):
        cm.window(conv, x, 2, 0, 0)
    with pytest.raises(InputError, match="takes 1 input channels"):
        cm.window(conv, torch.randn(1, 3, 5, 5), 0, 0, 0)


# --- the model's own layers --------------------------------------------------------------------------------


MODELS = [name for name in ("mnist-cnn", "mnist-vit", "mobilenet_v2") if zoo.is_available(name)]


@pytest.mark.parametrize("model_name", MODELS)
def test_every_conv_layer_and_what_follows_match_the_trace(rng, model_name):
    state = ExplorerState(model=model_name)
    inference = state.ensure()
    model = inference.model.module
    names = cm.conv_layers(model, inference.trace)
    assert len(names) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    picked = names if len(names) <= 6 else [names[k] for k in torch.randperm(len(names), generator=rng)[:6]]
    for name in picked:
        record, conv = inference.trace[name], cm.conv_module(model, name)
        channel = int(torch.randint(conv.out_channels, (1,), generator=rng))
        steps = cm.channel_steps(conv, record.input, channel)
        torch.testing.assert_close(steps.output, record.output[0, channel], rtol=1e-4, atol=1e-4)
        values = steps.output
        for follower in cm.after(model, cm.following(inference.trace, name), channel, steps.output):
            expected = inference.trace[follower.name].output[0, channel]
            torch.testing.assert_close(follower.values, expected, rtol=1e-4, atol=1e-4)
            assert "{v}" in follower.formula
            values = follower.values
        assert values.shape == steps.output.shape


def test_mnist_cnn_conv_is_followed_by_batchnorm_then_relu():
    inference = ExplorerState(model="mnist-cnn").ensure()
    chain = cm.following(inference.trace, "features.0")
    assert [r.module_type for r in chain] == ["BatchNorm2d", "ReLU"]


@pytest.mark.skipif("mobilenet_v2" not in MODELS, reason="MobileNetV2 is not fetched here")
def test_mobilenet_depthwise_and_linear_bottleneck():
    inference = ExplorerState(model="mobilenet_v2").ensure()
    model = inference.model.module
    depthwise = cm.conv_module(model, "features.2.conv.1.0")
    assert depthwise.groups == depthwise.in_channels
    assert cm.group_channels(depthwise, 5) == (5,)
    words = cm.describe_groups(depthwise, 5)
    assert "depthwise" in words and "only input channel 5 (1 of 96)" in words
    # the projection back to the bottleneck is linear: BatchNorm, then no activation
    assert [r.module_type for r in cm.following(inference.trace, "features.2.conv.2")] == ["BatchNorm2d"]


def test_cost_matches_a_hand_count():
    inference = ExplorerState(model="mnist-cnn").ensure()
    record = inference.trace["features.4"]  # 16 -> 32 channels, 3×3, on 14×14
    c = cm.cost(record)
    assert c.params == 32 * 16 * 9
    assert c.macs == c.dense_macs == 32 * 14 * 14 * 16 * 9
    assert c.output_shape == (1, 32, 14, 14)
    assert c.activation_bytes == 32 * 14 * 14 * 4


def test_cost_of_a_depthwise_layer_is_groups_times_cheaper(rng):
    from explorer.core.trace import run

    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False))
    record = run(model, torch.randn(1, 8, 6, 6, generator=rng))["0"]
    c = cm.cost(record)
    assert c.macs == 8 * 36 * 9 and c.dense_macs == 8 * c.macs and c.params == 72


# --- output size -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "kernel", "stride", "padding", "dilation"),
                         list(itertools.product([5, 8, 28], [1, 2, 3, 5], [1, 2, 3], [0, 1, 2], [1, 2])))
def test_output_size_matches_conv2d(size, kernel, stride, padding, dilation):
    span = dilation * (kernel - 1) + 1
    if span > size + 2 * padding:
        with pytest.raises(InputError, match=f"the kernel spans {span} pixels"):
            cm.output_size(size, kernel, stride, padding, dilation)
        return
    out = F.conv2d(torch.zeros(1, 1, size, size), torch.zeros(1, 1, kernel, kernel), stride=stride, padding=padding,
                   dilation=dilation)
    result = cm.output_size(size, kernel, stride, padding, dilation)
    assert result.size == out.shape[-1]
    assert result.formula == (f"⌊({size} + 2·{padding} − {dilation}·({kernel} − 1) − 1) / {stride}⌋ + 1 = "
                              f"{out.shape[-1]}")


# --- playground and presets --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", cm.PADDING_MODES)
@pytest.mark.parametrize(("channels", "groups"), [(1, 1), (3, 1), (3, 3)])
@pytest.mark.parametrize(("stride", "padding", "dilation"), [(1, 0, 1), (1, 1, 1), (2, 2, 1), (1, 2, 2), (3, 1, 2)])
def test_playground_matches_conv2d_after_pad(rng, mode, channels, groups, stride, padding, dilation):
    image = torch.rand(channels, 12, 10, generator=rng, dtype=torch.float64)
    kernel = torch.randn(3, 4, generator=rng, dtype=torch.float64)
    result = cm.playground(image, kernel, stride, padding, mode, dilation, groups)
    padded = image[None] if padding == 0 else F.pad(image[None], (padding,) * 4,
                                                    mode={"zeros": "constant"}.get(mode, mode))
    weight = kernel.repeat(groups, channels // groups, 1, 1)
    expected = F.conv2d(padded, weight, stride=stride, dilation=dilation, groups=groups)[0]
    torch.testing.assert_close(result.output, expected)
    assert (result.rows.size, result.cols.size) == tuple(expected.shape[1:])


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(kernel=torch.ones(9, 9)), "the kernel spans 9 pixels .* the padded input is only 8"),
    (dict(kernel=torch.ones(3, 3), dilation=4), "the kernel spans 9 pixels"),
    (dict(groups=2), r"groups = 2 does not divide the image's 3 channel\(s\); choose one of 1, 3"),
    (dict(padding_mode="mirror"), "no padding mode named 'mirror'; choose one of: 'zeros', 'reflect'"),
    (dict(padding=8, padding_mode="reflect"), r"reflect padding must be smaller than the image \(8×10\)"),
    (dict(stride=0), "stride and dilation must be at least 1"),
    (dict(kernel=torch.ones(3)), "the kernel must be 2-D"),
])
def test_playground_explains_impossible_settings(kwargs, message):
    settings = dict(image=torch.rand(3, 8, 10), kernel=torch.ones(3, 3)) | kwargs
    with pytest.raises(InputError, match=message):
        cm.playground(**settings)


def test_parse_kernel_reads_rows_and_explains_bad_text():
    torch.testing.assert_close(cm.parse_kernel("1 2, 3\n 4 5 6\n"), torch.tensor([[1., 2, 3], [4, 5, 6]],
                                                                                  dtype=torch.float64))
    kernel = torch.randn(3, 5, dtype=torch.float64)
    torch.testing.assert_close(cm.parse_kernel(cm.format_kernel(kernel)), kernel, rtol=1e-3, atol=1e-4)
    with pytest.raises(InputError, match="same number of values; got rows of 2, 3"):
        cm.parse_kernel("1 2\n3 4 5")
    with pytest.raises(InputError, match="numbers only"):
        cm.parse_kernel("1 a")
    with pytest.raises(InputError, match="the kernel is empty"):
        cm.parse_kernel("  \n")


def _filtered(rng, name, size=3, **options) -> tuple[np.ndarray, np.ndarray]:
    """(image, playground output) for a preset, with torch's reflect padding (scipy's mode 'mirror')."""
    image = torch.rand(1, 16, 14, generator=rng, dtype=torch.float64)
    out = cm.playground(image, cm.preset(name, size, **options), padding=size // 2, padding_mode="reflect")
    return image[0].numpy(), out.output[0].numpy()


def test_sobel_presets_match_scipy_sobel(rng):
    """Same sign as scipy.ndimage.sobel: positive where brightness grows right (x, axis 1) or down (y, axis 0)."""
    image, sobel_x = _filtered(rng, "Sobel x")
    np.testing.assert_allclose(sobel_x, scipy.ndimage.sobel(image, axis=1, mode="mirror"), atol=1e-12)
    image, sobel_y = _filtered(rng, "Sobel y")
    np.testing.assert_allclose(sobel_y, scipy.ndimage.sobel(image, axis=0, mode="mirror"), atol=1e-12)


def test_laplacian_and_sharpen_match_scipy_laplace(rng):
    image, laplacian = _filtered(rng, "Laplacian")
    np.testing.assert_allclose(laplacian, scipy.ndimage.laplace(image, mode="mirror"), atol=1e-12)
    image, sharpened = _filtered(rng, "sharpen")
    np.testing.assert_allclose(sharpened, image - scipy.ndimage.laplace(image, mode="mirror"), atol=1e-12)


@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_identity_blur_and_gaussian_match_scipy(rng, size):
    image, same = _filtered(rng, "identity", size)
    np.testing.assert_allclose(same, image, atol=1e-12)
    image, box = _filtered(rng, "box blur", size)
    np.testing.assert_allclose(box, scipy.ndimage.uniform_filter(image, size, mode="mirror"), atol=1e-12)
    image, gauss = _filtered(rng, "Gaussian", size)
    sigma = cm.gaussian_sigma(size)
    np.testing.assert_allclose(gauss, scipy.ndimage.gaussian_filter(image, sigma, mode="mirror", radius=size // 2),
                               atol=1e-12)


@pytest.mark.parametrize("size", [3, 5, 7, 9])
@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
@pytest.mark.parametrize("frequency", [0.1, 0.25, 0.4])
def test_gabor_matches_skimage_gabor_kernel(size, angle, frequency):
    sigma = size / 4
    theirs = skimage.filters.gabor_kernel(frequency, theta=np.radians(angle), sigma_x=sigma, sigma_y=sigma,
                                          n_stds=2 * size).real * 2 * np.pi * sigma**2  # without its normalization
    c, r = theirs.shape[0] // 2, size // 2
    np.testing.assert_allclose(cm.preset("Gabor", size, angle, frequency).numpy(),
                               theirs[c - r:c + r + 1, c - r:c + r + 1], atol=1e-12)


def test_presets_explain_bad_names_and_sizes():
    with pytest.raises(InputError, match="no kernel preset named 'emboss'"):
        cm.preset("emboss")
    with pytest.raises(InputError, match="odd size"):
        cm.preset("box blur", 4)


def test_first_live_channel_is_the_first_with_a_non_zero_value(rng):
    output = torch.randn(1, 6, 5, 5, generator=rng)
    dead = sorted(torch.randperm(6, generator=rng)[:3].tolist())
    output[0, dead] = 0
    expected = next(c for c in range(6) if np.any(output[0, c].numpy() != 0))
    assert cm.first_live_channel(output) == expected
    assert cm.first_live_channel(torch.zeros(1, 4, 3, 3)) == 0

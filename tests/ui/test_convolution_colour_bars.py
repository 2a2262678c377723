"""The convolution lesson's colour bars (step-through, playground, filter atlas) and the channel it opens on.

Each bar's ends and tick labels are checked after an interaction against values recomputed here with
torch.nn.functional (conv2d, unfold) and NumPy (FFT) from the model's weights and the traced input, on a
random gallery digit, layer, channel and kernel; and an update must not make a new Bokeh model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bokeh.models import ColorBar

from explorer.core import zoo
from explorer.core.gallery import mnist_gallery
from explorer.lessons import plots
from explorer.lessons.convolution.view import ConvolutionLesson
from explorer.lessons.convolution.view_atlas import FilterAtlas
from explorer.session.state import ExplorerState
from tests.ui.doc_events import Page

REL = 1e-5  # float32 sums in another order (math.channel_steps against F.conv2d) differ in the last bits


@pytest.fixture(scope="module")
def lesson_page():
    state = ExplorerState()
    lesson = ConvolutionLesson(state=state, parts=())
    lesson.tab = "Playground"  # its figures are made when the tab first opens
    return state, lesson, Page(lesson)


def bar_of(fig) -> ColorBar:
    bars = [r for r in fig.right + fig.below if isinstance(r, ColorBar)]
    assert len(bars) == 1, f"{fig.title.text}: {len(bars)} colour bars"
    return bars[0]


def assert_scale(bar: ColorBar, limit: float, signed: bool) -> None:
    """The bar spans [-limit, limit] (signed) or [0, limit], with the diverging or sequential palette; BokehJS ticks
    it (no tick or label of ours to relabel on every update)."""
    low, high = (-limit, limit) if signed else (0.0, limit)
    assert (bar.color_mapper.low, bar.color_mapper.high) == pytest.approx((low, high), rel=REL)
    assert list(bar.color_mapper.palette) == list(plots.DIVERGING if signed else plots.SEQUENTIAL)
    assert not bar.major_label_overrides and type(bar.ticker).__name__ != "FixedTicker"


def random_digit(state: ExplorerState, generator: torch.Generator) -> None:
    digits = mnist_gallery()
    item = digits[int(torch.randint(len(digits), (1,), generator=generator))]
    state.set_input(item.source, item.description)


@pytest.mark.parametrize("layer", ["features.0", "features.4", "features.8"])
def test_step_through_bars_match_conv2d_and_unfold_after_a_change(lesson_page, layer, rng):
    state, lesson, page = lesson_page
    random_digit(state, rng)
    conv = state.inference.model.module.get_submodule(layer)
    channel = int(torch.randint(conv.out_channels, (1,), generator=rng))
    page.act(lambda: state.param.update(layer=layer, channel=channel))  # once: a first layer may build text
    created = page.act(lambda: state.param.update(layer=layer, channel=(channel + 1) % conv.out_channels))
    assert created == []
    channel = (channel + 1) % conv.out_channels
    assert (lesson.layer, lesson.channel) == (layer, channel)
    x = state.inference.trace[layer].input  # (1, C_in, H, W) what the layer read
    weight = state.inference.model.module.state_dict()[f"{layer}.weight"]
    bias = state.inference.model.module.state_dict().get(f"{layer}.bias")
    out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)[0, channel]
    f = lesson.figures
    assert_scale(bar_of(f.output_fig), float(out.abs().max()), signed=True)
    assert_scale(bar_of(f.kernel_fig), float(weight.abs().max()), signed=True)  # the whole layer's largest |w|
    signed = bool((x < 0).any())
    assert_scale(bar_of(f.input_fig), float(x.abs().max()), signed)
    columns = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (1, C_in·kh·kw, L)
    assert_scale(bar_of(f.patch_fig), float(columns.abs().max()), signed)
    products = columns[0] * weight[channel].flatten()[:, None]
    assert_scale(bar_of(f.product_fig), float(products.abs().max()), signed=True)


def test_playground_bars_match_conv2d_on_a_random_kernel(lesson_page, rng):
    state, lesson, page = lesson_page
    lesson.picture = "your input"
    size = int(torch.randint(1, 4, (1,), generator=rng)) * 2 + 1  # 3, 5 or 7
    kernel = (torch.rand(size, size, generator=rng, dtype=torch.float64) - 0.5) * 6  # beyond ±1 now and then
    text = "\n".join(" ".join(f"{v:.4f}" for v in row) for row in kernel.tolist())
    page.act(lambda: lesson.param.update(kernel_text=text, stride=1, padding=size // 2, padding_mode="zeros",
                                         dilation=1, groups=1))
    written = torch.tensor(np.loadtxt(text.splitlines(), ndmin=2))  # what the student typed, read by NumPy
    image = torch.from_numpy(state.inference.view.astype(np.float64) / 255)[None, None]  # MNIST: one channel
    out = F.conv2d(image, written[None, None], padding=size // 2)
    assert_scale(lesson._play_bar, float(out.abs().max()), signed=True)
    assert_scale(lesson._play_kernel_bar, max(1.0, float(written.abs().max())), signed=True)
    assert bar_of(lesson._play_output_fig) is lesson._play_bar and bar_of(lesson._play_kernel_fig) is \
        lesson._play_kernel_bar


def test_box_blur_is_drawn_pale_and_a_laplacian_full(lesson_page):
    _, lesson, page = lesson_page
    page.act(lambda: lesson.param.update(preset="box blur", size=3))
    bar = lesson._play_kernel_bar
    assert_scale(bar, 1.0, signed=True)  # 1/9 is not stretched to the end of the scale
    palette = list(bar.color_mapper.palette)
    index = int((1 / 9 + 1) / 2 * len(palette))  # Bokeh's LinearColorMapper
    assert abs(index - len(palette) // 2) < 0.15 * len(palette) // 2  # within 15 % of white
    page.act(lambda: lesson.param.update(preset="Laplacian"))
    assert_scale(bar, 4.0, signed=True)  # its −4 is larger than 1: the scale grows to it


@pytest.fixture(scope="module")
def atlas():
    view = FilterAtlas(model="mnist-cnn")
    return view, Page(view)


@pytest.mark.parametrize("layer", ["features.0", "features.4"])
def test_atlas_bars_match_the_weights_and_conv2d(atlas, layer, rng):
    view, page = atlas
    random_digit(view.state, rng)
    page.act(lambda: view.state.param.update(layer=layer))
    page.act(lambda: view.param.update(spectrum=False))
    weight = view.state.inference.model.module.state_dict()[f"{layer}.weight"].numpy()
    pictures = weight.mean(axis=1)  # one input channel: the kernel; more: their mean
    assert_scale(bar_of(view._filter_fig), float(np.abs(pictures).max()), signed=True)
    conv = view.state.inference.model.module.get_submodule(layer)
    out = F.conv2d(view.state.inference.trace[layer].input, torch.from_numpy(weight), None, conv.stride,
                   conv.padding, conv.dilation, conv.groups)
    assert_scale(bar_of(view._maps_fig), float(out.abs().max()), signed=True)
    created = page.act(lambda: view.param.update(spectrum=True))
    assert created == []
    spectra = np.abs(np.fft.fft2(pictures, s=(view._atlas.spectra.shape[-1],) * 2))  # shifting moves, never scales
    assert_scale(bar_of(view._filter_fig), float(spectra.max()), signed=False)


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
def test_mobilenet_opens_a_depthwise_layer_on_a_channel_that_is_not_all_zeros():
    state = ExplorerState(model="mobilenet_v2")
    lesson = ConvolutionLesson(state=state, parts=())
    layer = "features.1.conv.0.0"  # a depthwise layer whose output channel 0 is all zeros on the default photo
    state.layer = layer
    conv = state.inference.model.module.get_submodule(layer)
    out = F.conv2d(state.inference.trace[layer].input, conv.weight, conv.bias, conv.stride, conv.padding,
                   conv.dilation, conv.groups)[0]
    live = [c for c in range(len(out)) if out[c].abs().max() > 0]
    assert live and live[0] > 0, "the default photo no longer has a dead channel 0 here: pick another layer"
    assert lesson.channel == state.channel == live[0]
    assert "is all zeros" not in lesson._layer_text.object
    state.channel = 0  # the student's choice is kept, and said to be all zeros
    assert lesson.channel == 0
    assert "**Output channel 0 is all zeros** for this input" in lesson._layer_text.object


def test_a_live_channel_0_is_kept_and_a_chosen_channel_is_not_moved(lesson_page):
    state, lesson, _ = lesson_page
    state.param.update(layer="features.0", channel=0)
    state.param.update(layer="features.4", channel=0)
    x = state.inference.trace["features.4"].input
    out = F.conv2d(x, state.inference.model.module.state_dict()["features.4.weight"], padding=1)[0]
    first_live = next(c for c in range(len(out)) if out[c].abs().max() > 0)
    assert lesson.channel == state.channel == first_live
    state.channel = 3
    assert lesson.channel == 3

"""A 2-D convolution, one window at a time:

    y[o, i, j] = b[o] + Σ_c Σ_u Σ_v w[o, c, u, v] · x̃[g(o)·C_g + c, i·s_h + u·d_h, j·s_w + v·d_w]

x̃ is the input after padding (zeros, reflect, replicate or circular), s the stride, d the dilation,
C_g = C_in / groups the input channels one group sees and g(o) = o // (C_out / groups) the group of
output channel o. Like every deep-learning library this is a cross-correlation: the kernel is not
flipped. Output size per axis: ⌊(n + p_before + p_after − d·(k − 1) − 1) / s⌋ + 1.

Reference: Dumoulin & Visin, "A guide to convolution arithmetic for deep learning" (2016).
Tests compare `window` and `channel_steps` with `F.conv2d` (every stride, padding mode, dilation and
groups tested), each input channel's share with `scipy.signal.correlate2d`, what follows the
convolution with the model's own traced outputs, `playground` with `F.conv2d` after `F.pad`, and the
kernel presets with `scipy.ndimage` (sobel, laplace, gaussian_filter, uniform_filter) and
`skimage.filters.gabor_kernel`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explorer.core import complexity
from explorer.core.trace import LayerRecord, Trace
from explorer.errors import InputError, choice

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}  # F.pad's
# Layers that act on each value of a channel on its own (in eval mode): a window's value can be followed through them.
FOLLOWABLE = (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish,
              nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Mish, nn.Identity)
ACTIVATION_FORMULAS = {"ReLU": "max(0, {v})", "ReLU6": "min(max(0, {v}), 6)", "Identity": "{v}"}


# --- one position ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvStep:
    """The arithmetic of one output value: value = Σ products + bias, products = patch · kernel."""

    patch: Tensor               # (C_g, k_h, k_w) padded input under the window, the group's channels only
    kernel: Tensor              # (C_g, k_h, k_w) weights of this output channel
    products: Tensor            # (C_g, k_h, k_w) patch · kernel, element by element
    bias: float                 # 0.0 for a convolution without bias
    value: float                # products.sum() + bias: the output at (out_channel, i, j)
    in_channels: tuple[int, ...]  # the input channels the group of this output channel covers


def padding_amounts(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """(left, right, top, bottom), the order F.pad takes; 'same' puts an odd extra pixel right and below, as torch."""
    if conv.padding == "valid":
        return (0, 0, 0, 0)
    if conv.padding == "same":
        amounts: list[int] = []
        for d, k in zip(reversed(conv.dilation), reversed(conv.kernel_size), strict=True):
            total = d * (k - 1)
            amounts += [total // 2, total - total // 2]
        return tuple(amounts)  # type: ignore[return-value]
    ph, pw = conv.padding
    return (pw, pw, ph, ph)


def pad(x: Tensor, amounts: tuple[int, int, int, int], mode: str) -> Tensor:
    """x (N, C, H, W) padded as a convolution with `padding_mode=mode` pads it."""
    mode = choice(mode, PADDING_MODES, "padding mode")
    if not any(amounts):
        return x
    return F.pad(x, amounts, mode=_PAD_MODE[mode])


def group_channels(conv: nn.Conv2d, out_channel: int) -> tuple[int, ...]:
    """The input channels output channel `out_channel` sees: one group's C_in / groups channels."""
    if not 0 <= out_channel < conv.out_channels:
        raise InputError(f"output channel {out_channel} does not exist; this convolution has "
                         f"{conv.out_channels} (0 to {conv.out_channels - 1}).")
    per_group_in = conv.in_channels // conv.groups
    group = out_channel // (conv.out_channels // conv.groups)
    return tuple(range(group * per_group_in, (group + 1) * per_group_in))


def _bias(conv: nn.Conv2d, out_channel: int) -> float:
    return 0.0 if conv.bias is None else float(conv.bias[out_channel].detach())


def _check_input(conv: nn.Conv2d, x: Tensor) -> Tensor:
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[1] != conv.in_channels:
        raise InputError(f"this convolution takes {conv.in_channels} input channels, (1, {conv.in_channels}, H, W); "
                         f"got shape {tuple(x.shape)}.")
    return x[:1].detach().float()


def window(conv: nn.Conv2d, x: Tensor, out_channel: int, i: int, j: int) -> ConvStep:
    """The window of output position (i, j) of `out_channel`: what it multiplies and adds."""
    x = _check_input(conv, x)
    channels = group_channels(conv, out_channel)
    padded = pad(x, padding_amounts(conv), conv.padding_mode)[0, channels[0]:channels[-1] + 1]  # (C_g, H_p, W_p)
    (sh, sw), (dh, dw), (kh, kw) = conv.stride, conv.dilation, conv.kernel_size
    out_h, out_w = (_out(padded.shape[1], kh, sh, dh), _out(padded.shape[2], kw, sw, dw))
    if not (0 <= i < out_h and 0 <= j < out_w):
        raise InputError(f"position ({i}, {j}) is outside the {out_h}×{out_w} output.")
    rows = i * sh + dh * torch.arange(kh)  # the taps skip d - 1 pixels between them
    cols = j * sw + dw * torch.arange(kw)
    patch = padded[:, rows][:, :, cols]
    kernel = conv.weight[out_channel].detach().float()
    products = patch * kernel
    bias = _bias(conv, out_channel)
    return ConvStep(patch, kernel, products, bias, float(products.sum()) + bias, channels)


def _out(padded: int, kernel: int, stride: int, dilation: int) -> int:
    return (padded - dilation * (kernel - 1) - 1) // stride + 1


# --- every position of one output channel, for animating in the browser -------------------------------------


@dataclass(frozen=True)
class ChannelSteps:
    """Every window position of one output channel, in reading order (row by row), precomputed."""

    in_channels: tuple[int, ...]  # the group's input channels
    padded: Tensor              # (C_g, H_p, W_p) the group's input after padding
    pads: tuple[int, int, int, int]  # (left, right, top, bottom) added around the input
    kernel: Tensor              # (C_g, k_h, k_w)
    bias: float
    tap_rows: Tensor            # (k_h,) row offset of each tap from the window's top: u · d_h
    tap_cols: Tensor            # (k_w,)
    tops: Tensor                # (L,) padded-input row of each position's top-left tap: i · s_h
    lefts: Tensor               # (L,)
    patches: Tensor             # (L, C_g, k_h, k_w)
    products: Tensor            # (L, C_g, k_h, k_w)
    sums: Tensor                # (L,) Σ products, before the bias
    output: Tensor              # (H_out, W_out) sums + bias: the output channel

    @property
    def positions(self) -> int:
        return len(self.sums)


def channel_steps(conv: nn.Conv2d, x: Tensor, out_channel: int) -> ChannelSteps:
    """All windows of `out_channel` at once (Tensor.unfold views every window; one copy gathers them)."""
    x = _check_input(conv, x)
    channels = group_channels(conv, out_channel)
    pads = padding_amounts(conv)
    padded = pad(x, pads, conv.padding_mode)[:, channels[0]:channels[-1] + 1]  # (1, C_g, H_p, W_p)
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    out_h, out_w = _out(padded.shape[2], kh, sh, dh), _out(padded.shape[3], kw, sw, dw)
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    windows = padded[0].unfold(1, span_h, sh).unfold(2, span_w, sw)[:, :out_h, :out_w, ::dh, ::dw]  # a view:
    patches = windows.permute(1, 2, 0, 3, 4).reshape(-1, len(channels), kh, kw)  # (C_g, H_o, W_o, k_h, k_w) -> (L, ...)
    kernel = conv.weight[out_channel].detach().float()
    products = patches * kernel
    sums = products.sum(dim=(1, 2, 3))
    bias = _bias(conv, out_channel)
    i, j = torch.meshgrid(torch.arange(out_h), torch.arange(out_w), indexing="ij")
    return ChannelSteps(channels, padded[0], pads, kernel, bias, dh * torch.arange(kh), dw * torch.arange(kw),
                        i.flatten() * sh, j.flatten() * sw, patches, products, sums,
                        (sums + bias).reshape(out_h, out_w))


# --- what the model does next with the value ---------------------------------------------------------------


@dataclass(frozen=True)
class After:
    """One layer after the convolution that acts on each value on its own, and what it made of this channel."""

    name: str                   # trace record name, "features.1"
    module_type: str            # "BatchNorm2d"
    formula: str                # how it maps a value {v}, with this channel's constants: "({v} − 0.12) / 0.98 · 1.1"
    values: Tensor              # (H_out, W_out) this channel after the layer


def following(trace: Trace, conv_name: str) -> tuple[LayerRecord, ...]:
    """The records right after the convolution that take the previous one's output and act value by value
    (BatchNorm in eval mode, ReLU, ...), found from the trace order; stops at anything else (pooling, a
    residual sum, the next convolution)."""
    names = trace.names
    chain: list[LayerRecord] = []
    previous = trace[conv_name]
    for record in trace.records[names.index(conv_name) + 1:]:
        same = (record.input is not None and record.input.shape == previous.output.shape
                and torch.equal(record.input, previous.output))
        if not same or record.output.shape != previous.output.shape or record.kind not in ("norm", "activation"):
            break
        chain.append(record)
        previous = record
    return tuple(chain)


def after(model: nn.Module, records: tuple[LayerRecord, ...], channel: int, values: Tensor) -> tuple[After, ...]:
    """Follow one output channel's values (H_out, W_out) through `records` (from `following`)."""
    steps = []
    for record in records:
        module = model.get_submodule(record.name.split(":")[0])
        if not isinstance(module, FOLLOWABLE) or (isinstance(module, nn.modules.batchnorm._BatchNorm)
                                                  and (module.training or module.running_mean is None)):
            break
        formula, values = _apply(module, channel, values)
        steps.append(After(record.name, record.module_type, formula, values))
    return tuple(steps)


def _apply(module: nn.Module, channel: int, values: Tensor) -> tuple[str, Tensor]:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        mean = float(module.running_mean[channel])
        std = math.sqrt(float(module.running_var[channel]) + module.eps)
        gamma = float(module.weight[channel]) if module.weight is not None else 1.0
        beta = float(module.bias[channel]) if module.bias is not None else 0.0
        formula = f"({{v}} {_signed(-mean)}) / {_short(std)} · {_short(gamma)} {_signed(beta)}"
        return formula, (values - mean) / std * gamma + beta
    name = type(module).__name__
    with torch.no_grad():
        return ACTIVATION_FORMULAS.get(name, f"{name}({{v}})"), module(values.clone())


def _short(x: float) -> str:
    return f"{x:.3g}".replace("-", "−")


def _signed(x: float) -> str:
    """'+ 0.3' or '− 0.3': a term added to a formula."""
    return f"− {_short(-x)}" if x < 0 else f"+ {_short(x)}"


# --- sizes and cost ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputSize:
    size: int
    formula: str                # "⌊(28 + 1 + 1 − 1·(3 − 1) − 1) / 1⌋ + 1 = 28"


def output_size(size: int, kernel: int, stride: int = 1, padding: int | tuple[int, int] = 0,
                dilation: int = 1) -> OutputSize:
    """Output length along one axis, with the formula's numbers filled in; InputError when no window fits."""
    before, after_ = (padding, padding) if isinstance(padding, int) else padding
    if min(size, kernel, stride, dilation) < 1 or min(before, after_) < 0:
        raise InputError(f"sizes, kernel, stride and dilation must be at least 1 and padding at least 0; got input "
                         f"{size}, kernel {kernel}, stride {stride}, dilation {dilation}, padding {padding}.")
    span = dilation * (kernel - 1) + 1
    padded = size + before + after_
    pads = f"2·{before}" if before == after_ else f"{before} + {after_}"
    top = f"{size} + {pads} − {dilation}·({kernel} − 1) − 1"
    if span > padded:
        raise InputError(f"the kernel spans {span} pixels (dilation {dilation} · ({kernel} − 1) + 1) but the padded "
                         f"input is only {padded} ({size} + padding {before + after_}); use a smaller kernel or "
                         "dilation, or more padding.")
    result = (padded - span) // stride + 1
    return OutputSize(result, f"⌊({top}) / {stride}⌋ + 1 = {result}")


def conv_output_sizes(conv: nn.Conv2d, height: int, width: int) -> tuple[OutputSize, OutputSize]:
    """(rows, columns) of the output for an input of height × width."""
    left, right, top, bottom = padding_amounts(conv)
    return (output_size(height, conv.kernel_size[0], conv.stride[0], (top, bottom), conv.dilation[0]),
            output_size(width, conv.kernel_size[1], conv.stride[1], (left, right), conv.dilation[1]))


@dataclass(frozen=True)
class Cost:
    params: int                 # weights + bias
    macs: int                   # multiply-accumulates per image
    dense_macs: int             # what the same shape would cost with groups = 1
    output_shape: tuple[int, ...]
    activation_bytes: int       # output memory per image


def cost(record: LayerRecord) -> Cost:
    """The selected layer's cost, from core/complexity (the same numbers the overview shows)."""
    macs = complexity.layer_macs(record)
    weight = record.params["weight"]  # (C_out, C_in / groups, k_h, k_w)
    in_channels = record.input.shape[1] if record.input is not None else weight.shape[1]
    return Cost(record.n_params, macs, macs * in_channels // weight.shape[1], record.output_shape,
                complexity.activation_bytes(record))


def first_live_channel(output: Tensor) -> int:
    """The first output channel of a (1, C, H, W) output that holds a non-zero value (0 when none does): a
    depthwise layer of MobileNetV2 has channels that are zero on every input."""
    live = output[0].flatten(1).any(dim=1)  # (C,)
    return int(live.int().argmax()) if bool(live.any()) else 0


def conv_layers(model: nn.Module, trace: Trace) -> tuple[str, ...]:
    """The trace records of 2-D convolutions (all of them: standard, depthwise, pointwise)."""
    return tuple(r.name for r in trace.of_kind("conv")
                 if isinstance(model.get_submodule(r.name.split(":")[0]), nn.Conv2d) and r.input is not None)


def conv_module(model: nn.Module, name: str) -> nn.Conv2d:
    return model.get_submodule(name.split(":")[0])  # a repeated call ("name:1") uses the same module


def describe_groups(conv: nn.Conv2d, out_channel: int) -> str:
    """Which input channels one output channel sees, in words."""
    seen = group_channels(conv, out_channel)
    first, last = seen[0], seen[-1]
    if conv.in_channels == 1:
        return f"Output channel {out_channel} sees the one input channel."
    if conv.groups == 1:
        return f"Output channel {out_channel} sees all {conv.in_channels} input channels."
    kind = "depthwise" if conv.groups == conv.in_channels else "grouped"
    span = f"input channel {first}" if first == last else f"input channels {first}–{last}"
    return (f"A {kind} convolution (groups = {conv.groups}): output channel {out_channel} sees only {span} "
            f"({len(seen)} of {conv.in_channels}).")


# --- the playground ----------------------------------------------------------------------------------------


PRESETS = ("identity", "box blur", "Gaussian", "sharpen", "Sobel x", "Sobel y", "Laplacian", "Gabor")
SIZED_PRESETS = ("identity", "box blur", "Gaussian", "Gabor")  # the others are defined at 3×3


def gaussian_sigma(size: int) -> float:
    """σ for a size × size Gaussian: OpenCV's getGaussianKernel rule, 0.3·((size − 1)/2 − 1) + 0.8."""
    return 0.3 * ((size - 1) / 2 - 1) + 0.8


def preset(name: str, size: int = 3, angle_deg: float = 0.0, frequency: float = 0.25) -> Tensor:
    """A named 2-D kernel (float64). Sobel x is positive where brightness grows to the right, Sobel y where it grows
    downward (as scipy.ndimage.sobel with axis 1 and 0). The Gabor kernel is exp(−(x² + y²) / 2σ²) · cos(2π f x′),
    x′ = x cos θ + y sin θ, y pointing down, σ = size / 4 (skimage's gabor_kernel without its 1 / 2πσ² factor)."""
    name = choice(name, PRESETS, "kernel preset")
    if size < 1 or size % 2 == 0:
        raise InputError(f"a preset kernel has an odd size (1, 3, 5, ...) so that it has a centre; got {size}.")
    r = torch.arange(size, dtype=torch.float64) - size // 2
    y, x = torch.meshgrid(r, r, indexing="ij")
    if name == "identity":
        return (x == 0).double() * (y == 0).double()
    if name == "box blur":
        return torch.full((size, size), 1.0 / size**2, dtype=torch.float64)
    if name == "Gaussian":
        g = torch.exp(-(x**2 + y**2) / (2 * gaussian_sigma(size) ** 2))
        return g / g.sum()
    if name == "Gabor":
        theta, sigma = math.radians(angle_deg), size / 4
        rotated = x * math.cos(theta) + y * math.sin(theta)
        return torch.exp(-(x**2 + y**2) / (2 * sigma**2)) * torch.cos(2 * math.pi * frequency * rotated)
    fixed = {
        "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
        "Sobel x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
        "Sobel y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
        "Laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    }
    return torch.tensor(fixed[name], dtype=torch.float64)


def parse_kernel(text: str) -> Tensor:
    """A kernel typed as rows of numbers (spaces or commas between them, one row per line)."""
    rows = [line.replace(",", " ").split() for line in text.strip().splitlines() if line.strip()]
    if not rows:
        raise InputError("the kernel is empty; type rows of numbers, one row per line.")
    if len({len(row) for row in rows}) != 1:
        raise InputError(f"every kernel row needs the same number of values; got rows of "
                         f"{', '.join(str(len(row)) for row in rows)}.")
    try:
        values = [[float(v) for v in row] for row in rows]
    except ValueError as e:
        raise InputError(f"the kernel must hold numbers only: {e}.") from None
    kernel = torch.tensor(values, dtype=torch.float64)
    if not torch.isfinite(kernel).all():
        raise InputError("the kernel must hold finite numbers (no inf or nan).")
    return kernel


def format_kernel(kernel: Tensor) -> str:
    """The editor's text for a kernel: one row per line, 4 significant digits."""
    return "\n".join("  ".join(f"{float(v):.4g}" for v in row) for row in kernel)


@dataclass(frozen=True)
class Playground:
    output: Tensor              # (groups, H_out, W_out): one output channel per group
    weight: Tensor              # (groups, C / groups, k_h, k_w): the kernel copied into every group's channels
    rows: OutputSize
    cols: OutputSize


def playground(image: Tensor, kernel: Tensor, stride: int = 1, padding: int = 0, padding_mode: str = "zeros",
               dilation: int = 1, groups: int = 1) -> Playground:
    """One 2-D kernel applied to an image (C, H, W): with groups = 1 it sums over all C channels; with
    groups = g, each group of C / g channels gets its own copy (groups = C: every channel filtered alone)."""
    if image.dim() != 3:
        raise InputError(f"the playground takes one image (C, H, W), got shape {tuple(image.shape)}.")
    if kernel.dim() != 2:
        raise InputError(f"the kernel must be 2-D (rows × columns), got shape {tuple(kernel.shape)}.")
    channels, height, width = image.shape
    if stride < 1 or dilation < 1 or padding < 0:
        raise InputError(f"stride and dilation must be at least 1 and padding at least 0; got stride {stride}, "
                         f"dilation {dilation}, padding {padding}.")
    if groups < 1 or channels % groups:
        raise InputError(f"groups = {groups} does not divide the image's {channels} channel(s); choose one of "
                         f"{', '.join(str(g) for g in range(1, channels + 1) if channels % g == 0)}.")
    padding_mode = choice(padding_mode, PADDING_MODES, "padding mode")
    if padding_mode == "reflect" and padding >= min(height, width):
        raise InputError(f"reflect padding must be smaller than the image ({height}×{width}); got {padding}.")
    if padding_mode == "circular" and padding > min(height, width):
        raise InputError(f"circular padding can wrap at most once around the image ({height}×{width}); "
                         f"got {padding}.")
    rows = output_size(height, kernel.shape[0], stride, padding, dilation)
    cols = output_size(width, kernel.shape[1], stride, padding, dilation)
    x = pad(image[None].double(), (padding,) * 4, padding_mode)
    weight = kernel.double().expand(groups, channels // groups, *kernel.shape).contiguous()
    output = F.conv2d(x, weight, stride=stride, dilation=dilation, groups=groups)[0]
    return Playground(output, weight, rows, cols)

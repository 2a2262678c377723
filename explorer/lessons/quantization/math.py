"""Uniform quantization: q = clamp(round(x / s) + z, qmin, qmax), x̂ = (q - z) · s.

Codes are signed `bits`-bit integers, qmin = -2^(bits-1), qmax = 2^(bits-1) - 1. The range [lo, hi]
that the codes cover always contains 0 (so that 0.0 stays exact) and is picked by a clipping rule:
min-max (the whole range), a percentile (ignores the few most extreme values) or the range that
minimizes the mean squared error of x̂ (searched over MSE_RATIOS of the min-max range).

- symmetric: s = max(|lo|, |hi|) / qmax, z = 0
- affine:    s = (hi - lo) / (qmax - qmin), z = qmin - round(lo / s)

Per-tensor: one (s, z) for the whole tensor; per-channel: one per output channel (axis 0 of conv and
linear weights). Binary weights (XNOR-Net, Rastegari et al. 2016): sign(w) · mean|w| per output
channel. Ternary weights (BitNet b1.58, Ma et al. 2024): clamp(round(w / γ), -1, 1) · γ, γ = mean|w|.

Reference: Nagel et al., "A White Paper on Neural Network Quantization" (2021), §2; Krishnamoorthi,
"Quantizing deep convolutional networks for efficient inference" (2018).
Tests compare against a NumPy reference and torch.fake_quantize_per_{tensor,channel}_affine.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from explorer.core import evaluate, trace
from explorer.core.data import EvalSet
from explorer.errors import InputError, choice

SCHEMES = ("symmetric", "affine")
GRANULARITIES = ("per-tensor", "per-channel")
CLIPS = ("min-max", "percentile", "mse")
FORMATS = ("integer", "binary", "ternary")  # how weights are stored: integer codes, {-1, +1}, {-1, 0, +1}
PERCENTILE = 99.9  # the percentile clip keeps the central 99.9 % (symmetric: of |x|), interpolated as NumPy
MSE_RATIOS = torch.linspace(0.05, 1.0, 96)  # candidate ranges for the MSE clip, as fractions of min-max
EPS = 1e-12  # smallest scale: an all-zero tensor still gets a valid (positive) one
WEIGHT_BITS = (1, 2, 3, 4, 5, 6, 7, 8)
TERNARY_BITS = math.log2(3)  # information per ternary weight; stored 5 to a byte, 1.6 bits
TERNARY_STORED_BITS = 8 / 5
QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class Quantized:
    q: Tensor            # integer codes, int64, shape of the input
    scale: Tensor        # () per-tensor, (C,) per-channel
    zero_point: Tensor   # same shape as scale, integer-valued int64
    dequantized: Tensor  # (q - z) · s: what the network computes with, shape of the input
    qmin: int
    qmax: int
    axis: int | None     # channel axis for per-channel, None for per-tensor
    lo: Tensor           # the clipping range the codes cover, same shape as scale
    hi: Tensor


def code_range(bits: int) -> tuple[int, int]:
    """(qmin, qmax) of signed `bits`-bit integers."""
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise InputError(f"uniform quantization needs 2 to 16 bits, got {bits!r}; use binarize() for 1 bit.")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def broadcast(v: Tensor, axis: int | None, dims: int) -> Tensor:
    """A per-channel (C,) vector shaped to broadcast along `axis` of a `dims`-D tensor; scalars as they are."""
    if axis is None or v.dim() == 0:
        return v
    shape = [1] * dims
    shape[axis] = -1
    return v.reshape(shape)  # (C, 1, 1, 1) for conv weights with axis 0


def _per_channel(t: Tensor, axis: int | None) -> Tensor:
    """t as (C, K): one row per channel; per-tensor as (1, K)."""
    if axis is None:
        return t.reshape(1, -1)
    return t.movedim(axis, 0).reshape(t.shape[axis], -1)


def qparams(lo: Tensor, hi: Tensor, bits: int, scheme: str) -> tuple[Tensor, Tensor]:
    """(scale, zero_point) that map [lo, hi] (which must contain 0) onto the `bits`-bit codes."""
    qmin, qmax = code_range(bits)
    if choice(scheme, SCHEMES, "scheme") == "symmetric":
        scale = (torch.maximum(-lo, hi) / qmax).clamp(min=EPS)
        return scale, torch.zeros_like(scale, dtype=torch.int64)
    scale = ((hi - lo) / (qmax - qmin)).clamp(min=EPS)
    zero = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int64)
    return scale, zero


def codes(t: Tensor, scale: Tensor, zero: Tensor, qmin: int, qmax: int, axis: int | None) -> Tensor:
    """q = clamp(round(t / s) + z, qmin, qmax), int64."""
    s, z = broadcast(scale, axis, t.dim()), broadcast(zero, axis, t.dim())
    return torch.clamp(torch.round(t / s) + z, qmin, qmax).to(torch.int64)


def dequantize(q: Tensor, scale: Tensor, zero: Tensor, axis: int | None) -> Tensor:
    """x̂ = (q - z) · s."""
    return (q - broadcast(zero, axis, q.dim())).to(scale.dtype) * broadcast(scale, axis, q.dim())


def clip_range(t: Tensor, clip: str, axis: int | None = None, bits: int = 8, scheme: str = "symmetric"
               ) -> tuple[Tensor, Tensor]:
    """(lo, hi) per channel ((C,) along `axis`) or per tensor (()), each containing 0. See the module docstring."""
    rows = _per_channel(t.detach().float(), axis)  # (C, K)
    lo, hi = rows.amin(1).clamp(max=0), rows.amax(1).clamp(min=0)
    if choice(clip, CLIPS, "clipping rule") == "percentile":
        if scheme == "symmetric":
            top = _quantile(rows.abs(), PERCENTILE / 100)
            lo, hi = -top, top
        else:
            lo = _quantile(rows, 1 - PERCENTILE / 100).clamp(max=0)
            hi = _quantile(rows, PERCENTILE / 100).clamp(min=0)
    elif clip == "mse":
        lo, hi = _mse_range(rows, lo, hi, bits, scheme)
    return (lo, hi) if axis is not None else (lo[0], hi[0])


def _quantile(rows: Tensor, q: float) -> Tensor:
    """Per-row quantile, linearly interpolated as NumPy's default (torch.quantile refuses over 16 M values)."""
    position = q * (rows.shape[1] - 1)
    below = math.floor(position)
    low = rows.kthvalue(below + 1, dim=1).values
    high = rows.kthvalue(min(below + 2, rows.shape[1]), dim=1).values
    return low + (position - below) * (high - low)


def _mse_range(rows: Tensor, lo: Tensor, hi: Tensor, bits: int, scheme: str) -> tuple[Tensor, Tensor]:
    """The shrunk range r · [lo, hi] with the smallest mean squared quantization error, row by row."""
    qmin, qmax = code_range(bits)
    best_err = torch.full_like(lo, float("inf"))
    best = torch.ones_like(lo)
    for ratio in MSE_RATIOS.tolist():
        scale, zero = qparams(lo * ratio, hi * ratio, bits, scheme)
        approx = dequantize(codes(rows, scale, zero, qmin, qmax, 0), scale, zero, 0)
        err = (approx - rows).square().mean(1)
        better = err < best_err
        best_err, best = torch.where(better, err, best_err), torch.where(better, ratio, best)
    return lo * best, hi * best


def quantize(t: Tensor, bits: int = 8, scheme: str = "symmetric", granularity: str = "per-tensor", axis: int = 0,
             clip: str = "min-max") -> Quantized:
    """Integer codes, scale, zero point and dequantized values of `t` (see the module docstring)."""
    qmin, qmax = code_range(bits)
    axis_used = axis if choice(granularity, GRANULARITIES, "granularity") == "per-channel" else None
    if axis_used is not None and not -t.dim() <= axis < t.dim():
        raise InputError(f"per-channel quantization along axis {axis} needs a tensor with that axis, "
                         f"got shape {tuple(t.shape)}.")
    if axis_used is not None:
        axis_used %= t.dim()
    t = t.detach().float()
    lo, hi = clip_range(t, clip, axis_used, bits, scheme)
    scale, zero = qparams(lo, hi, bits, scheme)
    q = codes(t, scale, zero, qmin, qmax, axis_used)
    return Quantized(q, scale, zero, dequantize(q, scale, zero, axis_used), qmin, qmax, axis_used, lo, hi)


def binarize(w: Tensor, axis: int = 0) -> Quantized:
    """XNOR-Net binary weights: sign(w) · α per output channel, α = mean |w| (sign(0) taken as +1)."""
    w = w.detach().float()
    alpha = _per_channel(w, axis).abs().mean(1)  # (C,)
    q = torch.where(w >= 0, 1, -1).to(torch.int64)
    zero = torch.zeros_like(alpha, dtype=torch.int64)
    return Quantized(q, alpha, zero, dequantize(q, alpha, zero, axis % w.dim()), -1, 1, axis % w.dim(), -alpha, alpha)


def ternarize(w: Tensor) -> Quantized:
    """BitNet b1.58 ternary weights: clamp(round(w / γ), -1, 1) · γ, one γ = mean |w| for the tensor."""
    w = w.detach().float()
    gamma = w.abs().mean().clamp(min=EPS)
    q = torch.clamp(torch.round(w / gamma), -1, 1).to(torch.int64)
    zero = torch.zeros((), dtype=torch.int64)
    return Quantized(q, gamma, zero, q.float() * gamma, -1, 1, None, -1.5 * gamma, 1.5 * gamma)


@dataclass(frozen=True)
class SpelledOut:
    """One value through the quantizer, step by step (what the lesson writes out)."""

    value: float       # x
    ratio: float       # x / s
    rounded: int       # round(x / s)
    code: int          # q = clamp(round(x / s) + z, qmin, qmax)
    dequantized: float  # x̂ = (q - z) · s
    error: float       # x̂ - x


def spell_out(value: float, scale: float, zero_point: int, qmin: int, qmax: int) -> SpelledOut:
    """x → x / s → round → + z, clamped → (q - z) · s, each step in float32 as the quantizer computes it."""
    x, s = torch.tensor(value, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32)
    ratio = x / s
    rounded = int(torch.round(ratio))
    code = min(max(rounded + int(zero_point), qmin), qmax)
    deq = float((code - int(zero_point)) * s)
    return SpelledOut(float(x), float(ratio), rounded, code, deq, deq - float(x))


def clipped(t: Tensor, qt: Quantized) -> Tensor:
    """Which values of `t` lay outside the range [lo, hi] that `qt` covers (bool, shape of t)."""
    lo, hi = broadcast(qt.lo, qt.axis, t.dim()), broadcast(qt.hi, qt.axis, t.dim())
    return (t < lo) | (t > hi)


def sqnr(reference: Tensor, approx: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 · log10(Σ r² / Σ (r - a)²); inf when they are equal."""
    reference, approx = reference.detach().double(), approx.detach().double()
    noise = (reference - approx).square().sum()
    signal = reference.square().sum()
    if noise == 0:
        return math.inf
    return float(10 * torch.log10(signal / noise))


# --- whole models -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """Everything that decides a fake-quantized model: a complete cache key (with the model's name)."""

    weight_bits: int = 8            # bits per weight for the integer format
    scheme: str = "symmetric"
    granularity: str = "per-channel"
    clip: str = "min-max"
    act_bits: int | None = None     # None: activations stay float
    format: str = "integer"         # see FORMATS; binary and ternary ignore bits, scheme, granularity and clip

    def __post_init__(self) -> None:
        choice(self.scheme, SCHEMES, "scheme")
        choice(self.granularity, GRANULARITIES, "granularity")
        choice(self.clip, CLIPS, "clipping rule")
        choice(self.format, FORMATS, "weight format")
        if self.format == "integer":
            code_range(self.weight_bits)
        if self.act_bits is not None and not 2 <= self.act_bits <= 8:
            raise InputError(f"activations take 2 to 8 bits (or None for float), got {self.act_bits!r}.")

    @property
    def bits_per_weight(self) -> float:
        return {"integer": self.weight_bits, "binary": 1, "ternary": TERNARY_BITS}[self.format]

    def describe(self) -> str:
        weights = {"integer": f"{self.weight_bits}-bit {self.scheme} {self.granularity} weights ({self.clip})",
                   "binary": "binary weights (XNOR-Net)", "ternary": "ternary weights (BitNet b1.58)"}[self.format]
        acts = "float activations" if self.act_bits is None else f"{self.act_bits}-bit activations"
        return f"{weights}, {acts}"


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the layers whose weights are quantized: convolutions and linear layers."""
    return [name for name, m in model.named_modules() if isinstance(m, QUANTIZABLE) and m.weight is not None]


def quantize_weight(w: Tensor, setting: Setting) -> Quantized:
    """One layer's weights under `setting` (output channels along axis 0)."""
    if setting.format == "binary":
        return binarize(w)
    if setting.format == "ternary":
        return ternarize(w)
    return quantize(w, setting.weight_bits, setting.scheme, setting.granularity, 0, setting.clip)


@dataclass(frozen=True)
class ActivationQuant:
    """Per-tensor quantization of one layer's input, calibrated on the float model."""

    scale: Tensor  # ()
    zero_point: Tensor  # ()
    qmin: int
    qmax: int

    def __call__(self, _module: nn.Module, args: tuple) -> tuple:
        """A forward pre-hook: the layer receives its input quantized and dequantized."""
        x = args[0]
        q = codes(x, self.scale.to(x.device), self.zero_point.to(x.device), self.qmin, self.qmax, None)
        return (dequantize(q, self.scale.to(x.device), self.zero_point.to(x.device), None).to(x.dtype), *args[1:])


@functools.lru_cache(maxsize=64)
def activation_quantizers(model: nn.Module, calibration: Tensor, bits: int, scheme: str, clip: str
                          ) -> dict[str, ActivationQuant]:
    """Per layer, how its input is quantized: ranges from the float model's inputs on calibration images.

    Cached by the (never modified) model and calibration tensor objects and the settings.
    """
    qmin, qmax = code_range(bits)
    t = trace.run(model, calibration, names=quantizable_layers(model))
    quantizers = {}
    for r in t.records:
        if r.input is not None and ":" not in r.name:  # a layer called twice keeps its first call's range
            scale, zero = qparams(*clip_range(r.input, clip, None, bits, scheme), bits, scheme)
            quantizers[r.name] = ActivationQuant(scale, zero, qmin, qmax)
    return quantizers


class QuantizedCopy:
    """A private copy of a shared model, re-quantized from the shared weights by each `quantize`: one deep copy per
    lesson and model, not one per change, and the weights quantized again only when their part of the setting
    changed (the MSE clip searches every layer's range). `model` is not changed."""

    def __init__(self, model: nn.Module):
        self.shared, self.model = model, trace.private_copy(model)
        self._layers = quantizable_layers(model)
        self._weights: tuple | None = None  # the weight part of the setting the copy's weights have
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []  # this copy's activation quantizers
        self.lock = threading.Lock()  # held from quantize() to the end of the forward pass that uses the copy

    @torch.no_grad()
    def quantize(self, setting: Setting, calibration: Tensor | None = None) -> nn.Module:
        """The copy with weights (and, with activation bits, layer inputs) quantized by `setting`; activation ranges
        come from the float model on `calibration` images."""
        quantizers = {}
        if setting.act_bits is not None:
            if calibration is None:
                raise InputError("activation quantization needs calibration images to measure ranges on.")
            quantizers = activation_quantizers(self.shared, calibration, setting.act_bits, setting.scheme,
                                               setting.clip)
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        weights = (setting.format, setting.weight_bits, setting.scheme, setting.granularity, setting.clip)
        for name in self._layers:
            layer = self.model.get_submodule(name)
            if weights != self._weights:
                original = self.shared.get_submodule(name).weight
                layer.weight.copy_(quantize_weight(original, setting).dequantized.to(layer.weight.dtype))
            if name in quantizers:
                self._hooks.append(layer.register_forward_pre_hook(quantizers[name]))  # on the private copy only
        self._weights = weights
        return self.model


def fake_quant_model(model: nn.Module, setting: Setting, calibration: Tensor | None = None) -> nn.Module:
    """A private copy whose weights (and, with activation bits, layer inputs) are quantized; `model` is not
    changed. Activation ranges come from the float model on `calibration` images."""
    return QuantizedCopy(model).quantize(setting, calibration)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """`model` (a private copy, changed in place) with each BatchNorm that follows a convolution in a Sequential
    folded into that convolution: conv(x, W)·a + b = conv(x, W·a) + b per channel, so the outputs are the same
    up to float rounding, with one pass over the activations less. For evaluation only: layer names change."""
    for container in model.modules():
        if not isinstance(container, nn.Sequential):
            continue
        names = list(container._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, norm = container._modules[first], container._modules[second]
            if (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and not norm.training
                    and norm.track_running_stats):
                container._modules[first] = fuse_conv_bn_eval(conv, norm)  # keeps conv's input-quantizing hook
                container._modules[second] = nn.Identity()
    return model


def size_bytes(model: nn.Module, setting: Setting | None = None) -> int:
    """Bytes to store the weights: quantized ones at their bits plus their scales (float32) and zero points
    (one byte each, affine only); everything else (biases, norms, embeddings) stays float32. No setting: float."""
    quantized = {f"{name}.weight" for name in quantizable_layers(model)} if setting is not None else set()
    bits = 0.0
    for name, p in [*model.named_parameters(), *model.named_buffers()]:
        if not p.is_floating_point():
            continue  # BatchNorm's step counter is bookkeeping, not weights
        if name not in quantized:
            bits += 32 * p.numel()
            continue
        channels = p.shape[0]
        if setting.format == "binary":
            bits += p.numel() + 32 * channels
        elif setting.format == "ternary":
            bits += TERNARY_STORED_BITS * p.numel() + 32
        else:
            n_scales = channels if setting.granularity == "per-channel" else 1
            bits += setting.weight_bits * p.numel() + n_scales * (32 + (8 if setting.scheme == "affine" else 0))
    return math.ceil(bits / 8)


def layer_sqnr(reference: trace.Trace, approx: trace.Trace) -> dict[str, float]:
    """SQNR (dB) of every layer's output in `approx` against the same layer in `reference`."""
    return {r.name: sqnr(r.output, approx[r.name].output) for r in reference.records if r.name in approx.names}


def explained_layer(layers: Sequence[str], order: Sequence[str], wanted: str) -> str:
    """The quantizable layer that explains `wanted` (a trace record name): itself if it is one of `layers`, else
    the nearest one before it in the run `order` (the layer whose weights made its input), else the first."""
    if wanted in layers:
        return wanted
    before = order[:order.index(wanted)] if wanted in order else ()
    return next((name for name in reversed(before) if name in layers), layers[0])


@dataclass(frozen=True)
class Explained:
    """What the lesson shows for one (model, input, layer, setting): the layer's weights and their quantization,
    and the quantized copy's run on the input."""

    setting: Setting
    layer: str
    weight: Tensor                    # (C_out, ...) float32, on the CPU
    quantized: Quantized
    channel: int                      # the output channel whose grid and arithmetic are shown
    trace: trace.Trace                # the quantized copy on the input
    probs: Tensor                     # (classes,) of the quantized copy
    layer_sqnr: dict[str, float]      # every layer's output against the float model's, dB
    weight_sqnr: float                # this layer's weights, dB
    act: ActivationQuant | None       # how this layer's input is quantized, None for float activations
    size_float: int                   # bytes
    size_quant: int                   # bytes
    calibration: Tensor | None        # the images that calibrated the activation ranges


def explain(copy_: QuantizedCopy, reference: trace.Trace, x: Tensor, layer: str, setting: Setting,
            channel: int, calibration: Tensor | None) -> Explained:
    """Quantize `copy_` by `setting`, run it on `x` (the input whose float run is `reference`) and describe
    `layer`. Holds the copy's lock throughout: another thread's request waits rather than changing it meanwhile."""
    shared = copy_.shared
    weight = shared.get_submodule(layer).weight.detach().cpu().float()
    with copy_.lock:
        approx = trace.run(copy_.quantize(setting, calibration), x)
    act = None
    if setting.act_bits is not None:
        act = activation_quantizers(shared, calibration, setting.act_bits, setting.scheme, setting.clip)[layer]
    qt = quantize_weight(weight, setting)
    return Explained(setting=setting, layer=layer, weight=weight, quantized=qt,
                     channel=min(channel, weight.shape[0] - 1), trace=approx, probs=approx.logits[0].softmax(-1),
                     layer_sqnr=layer_sqnr(reference, approx), weight_sqnr=sqnr(weight, qt.dequantized), act=act,
                     size_float=size_bytes(shared), size_quant=size_bytes(shared, setting), calibration=calibration)


def histogram(values: Tensor, dequantized: Tensor, bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """(edges (bins + 1,), counts of `values`, counts of `dequantized`) over one symmetric range that holds both."""
    values, dequantized = values.flatten().double(), dequantized.flatten().double()
    span = max(float(values.abs().max()), float(dequantized.abs().max()), EPS) * 1.02  # no value on the edge
    edges = torch.linspace(-span, span, bins + 1, dtype=torch.float64)
    return edges, torch.histogram(values, edges).hist, torch.histogram(dequantized, edges).hist


def grid_levels(qt: Quantized, channel: int) -> Tensor:
    """The values the codes stand for, (q - z) · s for every code, in `channel`'s grid (per-channel)."""
    scale = qt.scale if qt.axis is None else qt.scale[channel]
    zero = qt.zero_point if qt.axis is None else qt.zero_point[channel]
    codes_ = torch.arange(qt.qmin, qt.qmax + 1)
    if qt.qmin == -1 and qt.qmax == 1 and qt.axis is not None:  # binary: only the codes -1 and +1
        codes_ = torch.tensor([-1, 1])
    return dequantize(codes_, scale, zero, None)


def largest(values: Tensor, k: int) -> list[int]:
    """Indices of the k largest |values| of a flat tensor, largest first (the first to be clipped)."""
    return values.abs().argsort(descending=True)[:k].tolist()


def typical_value(x: Tensor) -> float:
    """The value of x whose |x| is closest to the median |x| of its non-zero values (0 when all are zero)."""
    x = x.flatten()
    nonzero = x[x != 0]
    typical = float(nonzero.abs().median()) if len(nonzero) else 0.0
    return float(x[int((x.abs() - typical).abs().argmin())])


def top_classes(p: Tensor, q: Tensor, k: int = 5) -> list[int]:
    """The k classes that either distribution believes most, most believed first."""
    return torch.maximum(p, q).topk(min(k, len(p))).indices.tolist()


# --- accuracy --------------------------------------------------------------------------------------------------


def accuracy(model: nn.Module, model_name: str, dataset: EvalSet, setting: Setting | None,
             calibration: Tensor | None = None) -> evaluate.Accuracy:
    """Top-1 accuracy of the fake-quantized copy (float32 when `setting` is None), cached by (name, setting).

    Both run on private copies, so that another session's trace hooks on the shared model never fire here;
    with float activations, BatchNorm is folded first (`fold_batchnorm`: the same outputs, faster).
    """
    key = ("quantization", model_name, setting)
    if setting is not None and setting.act_bits is not None:
        # Not folded: a rounding difference at a code boundary of a quantized activation could flip its code.
        return evaluate.accuracy(fake_quant_model(model, setting, calibration), dataset, key=key)
    copy_ = trace.private_copy(model) if setting is None else fake_quant_model(model, setting, calibration)
    return evaluate.accuracy(fold_batchnorm(copy_), dataset, key=key)


def sweep_settings(base: Setting) -> list[Setting]:
    """The accuracy-vs-bits curves: 2 to 8 weight bits for each scheme × granularity, then binary and
    ternary; clipping and activations as in `base`."""
    curves = [replace(base, format="integer", scheme=s, granularity=g, weight_bits=b)
              for s in SCHEMES for g in GRANULARITIES for b in WEIGHT_BITS if b >= 2]
    return [*curves, replace(base, format="binary"), replace(base, format="ternary")]


def sweep(model: nn.Module, model_name: str, dataset: EvalSet, base: Setting, calibration: Tensor | None = None
          ) -> Iterator[tuple[Setting, evaluate.Accuracy]]:
    """(setting, accuracy) for every point of `sweep_settings(base)`, one at a time (for a progress bar)."""
    for setting in sweep_settings(base):
        yield setting, accuracy(model, model_name, dataset, setting, calibration)


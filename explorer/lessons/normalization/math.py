"""Normalization: y = γ · (x − μ) / √(σ² + ε) + β, where the kinds differ only in which values share μ and σ².

For a channels-first activation x of shape (N, C, *S) (S: the spatial positions):

    BatchNorm     one μ, σ² per channel,             over (N, S)    Ioffe & Szegedy (2015)
    LayerNorm     one per sample,                    over (C, S)    Ba, Kiros & Hinton (2016)
    InstanceNorm  one per sample and channel,        over S         Ulyanov et al. (2016)
    GroupNorm     one per sample and group of C/G channels, over (C/G, S)   Wu & He (2018)
    RMSNorm       like LayerNorm without centring:   μ = 0, σ² = mean(x²)   Zhang & Sennrich (2019)

For transformer tokens x of shape (N, T, D) ("tokens" layout) the features D play the channels and the
tokens T the positions, except that LayerNorm, RMSNorm and GroupNorm work per token (as nn.LayerNorm(D)
does in a ViT): LayerNorm over D, GroupNorm over D/G features of one token, BatchNorm over (N, T) per
feature, InstanceNorm over T per sample and feature.

σ² is the biased variance (divided by the count, not count − 1): what the layers divide by.

Folding (inference only): BN(conv(x)) = conv'(x) with W' = W · γ/σ per output channel and
b' = β + (b − μ) · γ/σ, σ = √(running_var + ε) ("Efficient ConvBN Blocks for Transfer Learning and
Beyond"; Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", 2018).

BatchNorm in train mode is shown on a private copy whose BatchNorm layers have no running statistics
(batch_statistics_copy), so no forward can change the shared model's.

The lesson's numbers for one input (InputStudy, LayerStudy): a batch is the student's input, then the first
size − 1 digits of the MNIST sample (sample_pool); the sample's running sums at every norm layer (sample_sums)
and the batch-statistics copy are made once per model and process, since they do not depend on the student.

Tests (tests/lessons/test_normalization_math.py) compare every function with torch.nn.functional
(batch_norm, layer_norm, group_norm, instance_norm, rms_norm, conv2d) and with a NumPy reference.
"""

from __future__ import annotations

import copy
import functools
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from explorer.core import data
from explorer.core.card import ModelCard
from explorer.core.trace import LayerRecord, Trace
from explorer.core.zoo import ZooModel
from explorer.errors import InputError, choice

KINDS: dict[str, str] = {"batch": "BatchNorm", "layer": "LayerNorm", "group": "GroupNorm",
                         "instance": "InstanceNorm", "rms": "RMSNorm"}
LAYOUTS = ("channels", "tokens")  # (N, C, *S) or (N, T, D)
EPS = 1e-5
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
NEAR_ZERO = 0.05  # a channel is "switched off" when |γ| < NEAR_ZERO · the layer's largest |γ|
POOL_SIZE = max(BATCH_SIZES) - 1  # sample digits that can follow the student's input in a batch


@dataclass(frozen=True)
class NormStats:
    mean: Tensor        # broadcastable against x: one value per statistic (zeros for RMSNorm)
    var: Tensor         # same shape; for RMSNorm the mean square
    axes: tuple[int, ...]  # the dims of x one statistic is taken over (GroupNorm: within one group of channels)
    normalized: Tensor  # (x − mean) / √(var + ε), the shape of x


def _channel_dim(layout: str, ndim: int) -> int:
    return 1 if choice(layout, LAYOUTS, "layout") == "channels" else ndim - 1


def reduce_dims(kind: str, ndim: int, layout: str = "channels") -> tuple[int, ...]:
    """The dims of an ndim-dimensional x that one mean and variance are taken over."""
    choice(kind, KINDS, "normalization")
    if layout == "channels":
        spatial = tuple(range(2, ndim))
        return {"batch": (0, *spatial), "instance": spatial}.get(kind, (1, *spatial))
    choice(layout, LAYOUTS, "layout")
    middle = tuple(range(1, ndim - 1))  # the token dims
    return {"batch": (0, *middle), "instance": middle}.get(kind, (ndim - 1,))


def check_groups(channels: int, groups: int | None) -> int:
    """The number of groups, validated: it must divide the channels."""
    if groups is None or not 1 <= groups <= channels or channels % groups:
        divisors = ", ".join(str(g) for g in divisors_of(channels))
        raise InputError(f"GroupNorm needs a number of groups that divides the {channels} channels, got {groups}; "
                         f"choose one of: {divisors}.")
    return groups


def divisors_of(n: int) -> list[int]:
    return [g for g in range(1, n + 1) if n % g == 0]


def normalize(kind: str, x: Tensor, groups: int | None = None, eps: float = EPS, layout: str = "channels") -> NormStats:
    """The statistics `kind` computes on x, and x normalized by them (no affine γ, β)."""
    dims = reduce_dims(kind, x.dim(), layout)
    if x.dim() < 2 or any(x.shape[d] == 0 for d in range(x.dim())):
        raise InputError(f"normalization needs an (N, C, ...) or (N, T, D) tensor with no empty axis, got "
                         f"{tuple(x.shape)}.")
    c = _channel_dim(layout, x.dim())
    if kind == "group":
        g = check_groups(x.shape[c], groups)
        split = x.unflatten(c, (g, x.shape[c] // g))  # (..., G, C/G, ...): the channels of a group side by side
        # the other reduced dims, shifted past the new group axis, plus the C/G axis
        inner = tuple(d + (d > c) for d in dims if d != c) + (c + 1,)
        mean = split.mean(inner, keepdim=True)
        var = split.var(inner, correction=0, keepdim=True)
        # back to x's dims: one value per channel, repeated over the channels of its group
        mean = mean.expand(*mean.shape[:c + 1], x.shape[c] // g, *mean.shape[c + 2:]).flatten(c, c + 1)
        var = var.expand(*var.shape[:c + 1], x.shape[c] // g, *var.shape[c + 2:]).flatten(c, c + 1)
        axes = tuple(sorted({*dims, c}))
    elif kind == "rms":
        var = x.square().mean(dims, keepdim=True)
        mean = torch.zeros_like(var)  # RMSNorm does not centre
        axes = dims
    else:
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, correction=0, keepdim=True)
        axes = dims
    return NormStats(mean, var, axes, (x - mean) / torch.sqrt(var + eps))


def shared_with(kind: str, shape: tuple[int, ...], index: tuple[int, ...], groups: int | None = None,
                layout: str = "channels") -> tuple[range, ...]:
    """Per axis, the indices of the elements that share one mean and variance with x[index].

    The set is always a product of these ranges (a box in the tensor); its size is the number of values
    one statistic is taken over.
    """
    if len(index) != len(shape) or not all(0 <= i < n for i, n in zip(index, shape, strict=True)):
        raise InputError(f"index {index} is outside a tensor of shape {tuple(shape)}.")
    dims = set(reduce_dims(kind, len(shape), layout))
    c = _channel_dim(layout, len(shape))
    ranges = [range(n) if d in dims else range(i, i + 1) for d, (i, n) in enumerate(zip(index, shape, strict=True))]
    if kind == "group":
        size = shape[c] // check_groups(shape[c], groups)
        first = index[c] // size * size
        ranges[c] = range(first, first + size)
    return tuple(ranges)


def count_statistics(kind: str, shape: tuple[int, ...], groups: int | None = None, layout: str = "channels") -> int:
    """How many separate (mean, variance) pairs `kind` computes for a tensor of this shape."""
    shared = math.prod(len(r) for r in shared_with(kind, shape, (0,) * len(shape), groups, layout))
    return math.prod(shape) // shared


def affine(normalized: Tensor, gamma: Tensor | None, beta: Tensor | None, layout: str = "channels") -> Tensor:
    """γ · x̂ + β with one γ and β per channel (per feature for tokens); None leaves that step out."""
    c = _channel_dim(layout, normalized.dim())
    shape = [1] * normalized.dim()
    shape[c] = -1  # (1, C, 1, 1) or (1, 1, D)
    out = normalized if gamma is None else normalized * gamma.reshape(shape)
    return out if beta is None else out + beta.reshape(shape)


def with_running_stats(x: Tensor, running_mean: Tensor, running_var: Tensor, eps: float = EPS) -> Tensor:
    """BatchNorm in eval mode: x normalized by the stored per-channel statistics (no affine)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)  # (1, C, 1, 1)
    return (x - running_mean.reshape(shape)) / torch.sqrt(running_var.reshape(shape) + eps)


def histogram(values: Tensor, edges: Tensor) -> Tensor:
    """Counts of values in the bins [e0, e1), ..., [e_{n-1}, e_n] (the last bin holds its right edge)."""
    values, edges = values.detach().flatten().cpu().double(), edges.cpu().double()
    inside = values[(values >= edges[0]) & (values <= edges[-1])]
    bins = (torch.bucketize(inside, edges, right=True) - 1).clamp(max=len(edges) - 2)  # e_n goes in the last bin
    return torch.bincount(bins, minlength=len(edges) - 1)


def common_edges(*tensors: Tensor, bins: int = 40) -> Tensor:
    """bins + 1 equal-width edges spanning every value of all the tensors (one scale for before and after)."""
    lo = min(float(t.min()) for t in tensors)
    hi = max(float(t.max()) for t in tensors)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return torch.linspace(lo, hi, bins + 1, dtype=torch.float64)


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution equal to bn(conv(x)) with bn in eval mode; neither input module is changed."""
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise InputError(f"folding needs a Conv2d followed by a BatchNorm, got {type(conv).__name__} and "
                         f"{type(bn).__name__}.")
    if bn.running_mean is None or bn.num_features != conv.out_channels:
        raise InputError(f"{type(bn).__name__}({bn.num_features}) cannot fold into a convolution with "
                         f"{conv.out_channels} output channels, or it keeps no running statistics.")
    scale = torch.rsqrt(bn.running_var + bn.eps)  # 1/σ per output channel
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    shift = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                       device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))  # (C_out, C_in/groups, kh, kw)
        folded.bias.copy_(shift + (bias - bn.running_mean) * scale)
    return folded.eval().requires_grad_(False)


def batch_statistics_copy(model: nn.Module) -> nn.Module:
    """A private copy whose BatchNorm layers normalize with the statistics of the batch they are given.

    Their running statistics are removed (PyTorch then uses batch statistics even in eval mode), so no
    forward can update them, and the shared model is never touched. Dropout stays off.
    """
    private = copy.deepcopy(model).eval()
    for module in private.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean = module.running_var = module.num_batches_tracked = None
            module.track_running_stats = False
    return private


def make_batch(x: Tensor, pool: Tensor, size: int) -> Tensor:
    """The student's input first, then the first size − 1 images of the pool: (size, C, H, W)."""
    if not 1 <= size <= len(pool) + 1:
        raise InputError(f"a batch holds 1 to {len(pool) + 1} images here, got {size}.")
    return torch.cat([x[:1], pool[:size - 1].to(x.dtype)])


def mean_abs_difference(a: Tensor, b: Tensor) -> float:
    """mean |a − b| over all elements (in the tensors' dtype: torch sums float32 pairwise, ~1e-6 relative)."""
    return float((a - b).abs().mean())


def max_abs_difference(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max())


@dataclass(frozen=True)
class GammaSummary:
    name: str          # norm layer name
    magnitude: Tensor  # (C,) |γ|
    near_zero: Tensor  # (C,) bool: |γ| < NEAR_ZERO · max |γ|


def gamma_summaries(model: nn.Module) -> list[GammaSummary]:
    """|γ| of every norm layer (BatchNorm, LayerNorm, GroupNorm) with an affine scale, in module order."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, NORM_LAYERS) and getattr(module, "weight", None) is not None:
            magnitude = module.weight.detach().abs().float().cpu()
            out.append(GammaSummary(name, magnitude, magnitude < NEAR_ZERO * magnitude.max()))
    return out


def first_output(kind: str, batch: Tensor, gamma: Tensor | None, beta: Tensor | None, groups: int | None = None,
                 eps: float = EPS, layout: str = "channels") -> Tensor:
    """The first sample's output (the student's) when `kind` normalizes the whole batch, then γ, β apply.

    Only BatchNorm mixes samples: for the other kinds the first sample alone gives the same numbers
    (tests check this against torch on whole batches), at a fraction of the cost.
    """
    if 0 not in reduce_dims(kind, batch.dim(), layout):
        batch = batch[:1]
    return affine(normalize(kind, batch, groups, eps, layout).normalized, gamma, beta, layout)[0]


@dataclass(frozen=True)
class PoolSums:
    """Σx and Σx² per channel (per feature for tokens) over the first n samples of a pool, for n = 0..N, in
    float64: BatchNorm's statistics of a batch (the student's sample + the pool's first size − 1) are then
    read in O(C) for every batch size, instead of one pass over the whole batch each."""

    s1: Tensor            # (N + 1, C): row n sums the pool's first n samples
    s2: Tensor            # (N + 1, C)
    per_sample: int       # values per channel in one sample (H·W, or the tokens)
    layout: str


def _sample_sums(x: Tensor, layout: str) -> tuple[Tensor, Tensor]:
    """Per sample and channel: Σx and Σx² over the positions, float64, (N, C) each."""
    c = _channel_dim(layout, x.dim())
    positions = math.prod(x.shape[1:]) // x.shape[c]
    v = x.movedim(c, -1).reshape(x.shape[0], positions, x.shape[c]).double()
    return v.sum(1), v.square().sum(1)


def pool_sums(pool: Tensor, layout: str = "channels") -> PoolSums:
    """The running sums of `pool` (N, C, *S) or (N, T, D), samples in order."""
    s1, s2 = _sample_sums(pool, layout)
    zero = torch.zeros(1, s1.shape[1], dtype=torch.float64)
    per_sample = math.prod(pool.shape[1:]) // pool.shape[_channel_dim(layout, pool.dim())]
    return PoolSums(torch.cat([zero, s1.cumsum(0)]), torch.cat([zero, s2.cumsum(0)]), per_sample, layout)


def batch_statistics(first: Tensor, pool: PoolSums, size: int) -> tuple[Tensor, Tensor]:
    """BatchNorm's mean and biased variance for the batch (first[:1], then the pool's first size − 1 samples),
    shaped to broadcast against `first` (as `normalize("batch", make_batch(...))` gives them)."""
    if not 1 <= size <= len(pool.s1):
        raise InputError(f"a batch holds 1 to {len(pool.s1)} images here, got {size}.")
    own1, own2 = _sample_sums(first[:1], pool.layout)
    count = size * pool.per_sample
    mean = (own1[0] + pool.s1[size - 1]) / count
    var = ((own2[0] + pool.s2[size - 1]) / count - mean.square()).clamp(min=0)
    c = _channel_dim(pool.layout, first.dim())
    shape = [1] * first.dim()
    shape[c] = -1
    return mean.reshape(shape).to(first.dtype), var.reshape(shape).to(first.dtype)


def batch_first_output(first: Tensor, pool: PoolSums, size: int, gamma: Tensor | None, beta: Tensor | None,
                       eps: float = EPS) -> Tensor:
    """`first_output("batch", make_batch(first, pool samples, size), ...)` from the running sums."""
    mean, var = batch_statistics(first, pool, size)
    return affine((first[:1] - mean) / torch.sqrt(var + eps), gamma, beta, pool.layout)[0]


@torch.no_grad()
def first_probabilities(model: nn.Module, batch: Tensor) -> Tensor:
    """Class probabilities of the first sample of the batch, (classes,)."""
    return model(batch).softmax(-1)[0].cpu()


# --- the lesson's numbers for one model and input ---

def layout_of(x: Tensor) -> str:
    """"tokens" for a transformer's (N, T, D), "channels" for (N, C, *S)."""
    return "tokens" if x.dim() == 3 else "channels"


def feature_count(x: Tensor) -> int:
    """C of (N, C, *S), D of (N, T, D): what one γ and one β each belong to."""
    return x.shape[_channel_dim(layout_of(x), x.dim())]


def norm_records(t: Trace) -> list[LayerRecord]:
    """The records of the norm layers that normalize (N, C, ...) maps or (N, T, D) tokens, in the order they ran."""
    return [r for r in t.records if r.kind == "norm" and r.input is not None and r.input.dim() >= 3]


def is_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def batchable(card: ModelCard) -> bool:
    """Batches are drawn from the MNIST sample: only for models that take MNIST digits (others: batches of one)."""
    return card.preprocess == "mnist"


def sample_pool(card: ModelCard) -> Tensor:
    """The MNIST sample, normalized for this model: (N, 1, 28, 28)."""
    return data.eval_set("sample", card.mean, card.std).inputs


@functools.lru_cache(maxsize=8)
def sample_sums(model: ZooModel, names: tuple[str, ...]) -> dict[str, PoolSums]:
    """The running sums of the sample's first POOL_SIZE digits at the input of each named norm layer: one traced
    forward for every layer, once per model and process (they do not depend on the student's input)."""
    t = model.trace(sample_pool(model.card)[:POOL_SIZE], names=list(names))
    return {name: pool_sums(t[name].input, layout_of(t[name].input)) for name in names}


@functools.lru_cache(maxsize=8)
def _batch_statistics_model(model: ZooModel) -> nn.Module | None:
    """batch_statistics_copy of the model once per model and process (forwards change nothing in it, so sessions
    may share it); None when the model has no BatchNorm."""
    if not any(is_batch_norm(m) for m in model.module.modules()):
        return None
    return batch_statistics_copy(model.module)


def batch_probabilities(model: ZooModel, x: Tensor, size: int) -> Tensor | None:
    """Class probabilities of x, (classes,), when it is the first of a batch of `size` (then the sample's first
    size − 1 digits) and every BatchNorm normalizes with the batch's statistics; None without a BatchNorm."""
    private = _batch_statistics_model(model)
    if private is None:
        return None
    return first_probabilities(private, make_batch(x, sample_pool(model.card), size))


def own_kind(module: nn.Module, layout: str) -> str:
    """The kind that computes what a norm layer without running statistics computes on one sample."""
    kind = {nn.GroupNorm: "group", nn.RMSNorm: "rms"}.get(type(module), "layer")
    # per sample and channel on (1, C, *S): InstanceNorm, or a BatchNorm without running statistics on one image
    return "instance" if layout == "channels" and kind == "layer" else kind


@dataclass(frozen=True)
class LayerOutput:
    normalized: Tensor  # x̂ of the layer's input, its shape
    after: Tensor       # γ · x̂ + β
    check: float        # max |after − the recorded output|: that these are the layer's own numbers


def layer_output(record: LayerRecord, module: nn.Module) -> LayerOutput:
    """What the model's norm layer computes on the recorded input, step by step (eval mode)."""
    x, layout = record.input, layout_of(record.input)
    eps = getattr(module, "eps", None) or EPS  # nn.RMSNorm's eps may be None: torch then uses the dtype's
    if "running_mean" in record.buffers:  # BatchNorm in eval mode
        normalized = with_running_stats(x, record.buffers["running_mean"], record.buffers["running_var"], eps)
    else:
        normalized = normalize(own_kind(module, layout), x, getattr(module, "num_groups", None), eps,
                               layout).normalized
    after = affine(normalized, record.params.get("weight"), record.params.get("bias"), layout)
    return LayerOutput(normalized, after, max_abs_difference(after, record.output))


def conv_before(t: Trace, record: LayerRecord) -> LayerRecord | None:
    """The Conv2d that ran just before `record` and feeds it (what a BatchNorm can fold into), or None."""
    i = t.records.index(record)
    previous = t.records[i - 1] if i > 0 else None
    if previous is not None and previous.module_type == "Conv2d" and previous.output_shape == record.input_shape:
        return previous
    return None


@dataclass(frozen=True)
class Folding:
    conv: str            # the convolution's trace name
    weight: Tensor       # (C_out, C_in / groups, kh, kw): its W
    bias: Tensor         # (C_out,): its b, zeros where it has none
    folded: nn.Conv2d    # W′ = W · γ/σ, b′ = β + (b − μ) · γ/σ
    scale: Tensor        # (C_out,): γ/σ
    difference: float    # max |folded(x) − BatchNorm(conv(x))| on the student's input


def folding(conv: nn.Conv2d, bn: nn.Module, conv_record: LayerRecord, bn_record: LayerRecord) -> Folding:
    """Fold `bn` into `conv` (fold_bn) and compare the folded convolution with the two recorded layers."""
    folded = fold_bn(conv, bn)
    with torch.no_grad():
        out = folded(conv_record.input.to(folded.weight.device)).cpu()
    scale = torch.rsqrt(bn.running_var + bn.eps) * (bn.weight if bn.weight is not None else 1)
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, device=conv.weight.device)
    return Folding(conv_record.name, conv.weight.detach().cpu(), bias.detach().cpu(), folded.cpu(),
                   scale.detach().cpu(), max_abs_difference(out, bn_record.output))


class _Memo:
    """compute() once per key, the `size` most recently used kept."""

    def __init__(self, size: int):
        self._size, self._values = size, OrderedDict()

    def __call__(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if key in self._values:
            self._values.move_to_end(key)
        else:
            self._values[key] = compute()
            if len(self._values) > self._size:
                self._values.popitem(last=False)
        return self._values[key]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._values


class LayerStudy:
    """The lesson's numbers for one input at one norm layer, each computed on first use and kept (bounded).

    `pool`: the running sums of the samples that follow the student's input in a batch (none: batches of one);
    `conv`: the convolution a BatchNorm follows, (record, module), or None.
    """

    def __init__(self, record: LayerRecord, module: nn.Module, pool: PoolSums,
                 conv: tuple[LayerRecord, nn.Module] | None = None):
        self.record, self.module, self.pool, self.conv = record, module, pool, conv
        self.layout = layout_of(record.input)
        self.eps = getattr(module, "eps", None) or EPS
        self._memo = _Memo(96)  # one update reads about 30: every batch size, every kind

    def batch_statistics(self, size: int) -> tuple[Tensor, Tensor]:
        """BatchNorm's (mean, variance) for a batch of `size`, the student's input first."""
        return self._memo(("batch stats", size), lambda: batch_statistics(self.record.input, self.pool, size))

    def own_statistics(self) -> NormStats:
        """The input's own statistics: per token over its features (tokens), per channel over H×W (maps)."""
        kind = "layer" if self.layout == "tokens" else "instance"
        return self._memo(("own stats",), lambda: normalize(kind, self.record.input, eps=self.eps, layout=self.layout))

    def output(self) -> LayerOutput:
        return self._memo(("layer output",), lambda: layer_output(self.record, self.module))

    def first_output(self, kind: str, size: int, groups: int) -> Tensor:
        """The student's output if the layer were `kind` over a batch of `size`, with the layer's γ and β."""
        gamma, beta = self.record.params.get("weight"), self.record.params.get("bias")
        if kind == "batch":  # the only kind whose output depends on the other samples
            return self._memo(("output", kind, size), lambda: batch_first_output(
                self.record.input, self.pool, size, gamma, beta, self.eps))
        g = groups if kind == "group" else None
        return self._memo(("output", kind, g), lambda: first_output(
            kind, self.record.input[:1], gamma, beta, g, self.eps, self.layout))

    def folding(self) -> Folding | None:
        """This BatchNorm folded into the convolution before it; None when the layer is not one that folds."""
        if self.conv is None:
            return None
        conv_record, conv = self.conv
        return self._memo(("folding",), lambda: folding(conv, self.module, conv_record, self.record))

    def difference(self, kind: str, size: int, groups: int) -> float:
        """Mean |difference| between first_output and the model's own output (eval mode)."""
        key = ("difference", kind, groups if kind == "group" else None, size if kind == "batch" else None)
        return self._memo(key, lambda: mean_abs_difference(self.first_output(kind, size, groups),
                                                           self.record.output[0]))


class InputStudy:
    """The lesson's numbers for one model and input: a LayerStudy per norm layer (the most recent few kept), and the
    prediction with every BatchNorm in train mode per batch size."""

    def __init__(self, model: ZooModel, x: Tensor, t: Trace):
        self.model, self.x, self.trace = model, x, t
        self.records = {r.name: r for r in norm_records(t)}
        self.batchable = batchable(model.card)
        self._layers = _Memo(4)
        self._probabilities = _Memo(len(BATCH_SIZES))

    def layer(self, name: str) -> LayerStudy:
        return self._layers(name, lambda: self._study(name))

    def _study(self, name: str) -> LayerStudy:
        record = self.records[choice(name, self.records, "norm layer")]
        if self.batchable:
            pool = sample_sums(self.model, tuple(self.records))[name]
        else:  # batches of one: the student's input alone
            pool = pool_sums(record.input[:0], layout_of(record.input))
        module = self.model.module.get_submodule(name)
        conv = conv_before(self.trace, record) if is_batch_norm(module) else None
        return LayerStudy(record, module, pool, conv and (conv, self.model.module.get_submodule(conv.name)))

    def probabilities(self, size: int) -> Tensor | None:
        """batch_probabilities of the student's input (slow: a forward of the whole batch)."""
        return self._probabilities(size, lambda: batch_probabilities(self.model, self.x, size))

    def knows_probabilities(self, size: int) -> bool:
        return size in self._probabilities

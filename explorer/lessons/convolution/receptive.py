"""Receptive fields (theoretical and effective) and the filter atlas of a convolution layer.

Theoretical receptive field (Araujo et al., "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019). Every tensor on the way from the input has, per axis, a field (r, j, s):
unit i of the tensor depends on input pixels s + i·j … s + i·j + r − 1. The input has (1, 1, 0).
A convolution or pooling with kernel k, stride t, padding p and dilation d maps it to

    r' = r + (d·(k − 1))·j,    j' = j·t,    s' = s − p·j,

and an element-wise op of several tensors (a residual sum) covers the union of their fields. The
fields are followed through a real forward pass of zeros (every torch function call), so branches
and residual sums are handled as they run. Ops that mix all positions (a ViT's attention, a flatten)
end the field: it does not apply after them.

Effective receptive field (Luo et al., "Understanding the Effective Receptive Field in Deep
Convolutional Neural Networks", 2016): the heat map Σ_c |∂ unit / ∂ x_c| over the input.

Filter atlas: every filter of a layer, its amplitude spectrum |FFT| (zero-padded, centred), and
degenerate filters flagged in the spirit of CNN Filter DB (Gavrikov & Keuper, CVPR 2022), which
found many trained models holding filters that are all but zero: see `degenerate_filters`.

Tests (tests/lessons/test_convolution_receptive.py) compare fields with a brute-force check (perturb one
input pixel, see which outputs change), the effective field with torch.autograd.functional.jacobian,
spectra with numpy.fft.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from explorer.core import trace
from explorer.errors import InputError

# --- theoretical receptive fields ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """Rows [top, bottom) and columns [left, right) of the input, in pixels; may reach into the padding."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return max(self.bottom - self.top, 0)

    @property
    def width(self) -> int:
        return max(self.right - self.left, 0)

    def clipped(self, height: int, width: int) -> Box:
        """The part that lies on an image of height × width pixels."""
        return Box(min(max(self.top, 0), height), min(max(self.left, 0), width),
                   max(min(self.bottom, height), 0), max(min(self.right, width), 0))


@dataclass(frozen=True)
class Field:
    """Per axis (rows, columns): unit i sees input pixels start + i·jump … start + i·jump + size − 1."""

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]
    croppable: bool = True  # no op so far depends on the map's size (adaptive pooling): effective_receptive_field

    def through(self, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                dilation: tuple[int, int]) -> Field:
        """The field after a convolution or pooling window."""
        axes = range(2)
        return Field(tuple(self.size[a] + dilation[a] * (kernel[a] - 1) * self.jump[a] for a in axes),
                     tuple(self.jump[a] * stride[a] for a in axes),
                     tuple(self.start[a] - padding[a] * self.jump[a] for a in axes), self.croppable)

    def union(self, other: Field) -> Field:
        """What a unit of an element-wise op of two maps sees (they have the same positions, so the same jump)."""
        start = tuple(min(self.start[a], other.start[a]) for a in range(2))
        end = tuple(max(self.start[a] + self.size[a], other.start[a] + other.size[a]) for a in range(2))
        return Field(tuple(e - s for s, e in zip(start, end, strict=True)),
                     tuple(max(self.jump[a], other.jump[a]) for a in range(2)), start,
                     self.croppable and other.croppable)

    def box(self, i: int, j: int) -> Box:
        top, left = self.start[0] + i * self.jump[0], self.start[1] + j * self.jump[1]
        return Box(top, left, top + self.size[0], left + self.size[1])


INPUT_FIELD = Field((1, 1), (1, 1), (0, 0))


@dataclass(frozen=True)
class LayerField:
    """The receptive field of every unit of one conv or pooling layer's output."""

    name: str                  # Trace record name
    kind: str                  # "conv" | "pool"
    module_type: str
    depth: int                 # 1 for the first conv/pool layer run, 2 for the next, ...
    field: Field
    output_hw: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        return self.field.size

    @property
    def jump(self) -> tuple[int, int]:
        return self.field.jump

    @property
    def start(self) -> tuple[int, int]:
        return self.field.start


def _pair(value: object) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _bind(names: tuple[str, ...], defaults: dict, args: tuple, kwargs: dict) -> dict:
    return {**defaults, **dict(zip(names, args, strict=False)), **kwargs}


def _conv_window(args: tuple, kwargs: dict, x: Tensor) -> tuple:
    a = _bind(("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
              dict(stride=1, padding=0, dilation=1), args, kwargs)
    kernel, dilation = _pair(a["weight"].shape[-2:]), _pair(a["dilation"])
    if a["padding"] == "valid":
        padding = (0, 0)
    elif a["padding"] == "same":  # torch puts the odd pixel of the total d·(k−1) at the end
        padding = tuple(dilation[k] * (kernel[k] - 1) // 2 for k in range(2))
    else:
        padding = _pair(a["padding"])
    return kernel, _pair(a["stride"]), padding, dilation


def _pool_window(names: tuple[str, ...]) -> Callable[[tuple, dict, Tensor], tuple]:
    def window(args: tuple, kwargs: dict, x: Tensor) -> tuple:
        a = _bind(names, dict(stride=None, padding=0, dilation=1), args, kwargs)
        kernel = _pair(a["kernel_size"])
        stride = kernel if a["stride"] is None or a["stride"] == [] else _pair(a["stride"])
        return kernel, stride, _pair(a["padding"]), _pair(a["dilation"])
    return window


def _adaptive_window(args: tuple, kwargs: dict, x: Tensor) -> tuple:
    """Adaptive pooling of an m-pixel axis to n cells: cell i pools [⌊i·m/n⌋, ⌈(i+1)·m/n⌉).

    As one window: stride ⌊m/n⌋ and kernel m − (n − 1)·⌊m/n⌋, which covers every cell's pixels and is exact
    when n divides m (a global average pool is one window over everything).
    """
    out = _pair(args[1] if len(args) > 1 else kwargs["output_size"])
    size = x.shape[-2:]
    outs = tuple(size[a] if out[a] is None else out[a] for a in range(2))
    stride = tuple(max(size[a] // outs[a], 1) for a in range(2))
    kernel = tuple(size[a] - (outs[a] - 1) * stride[a] for a in range(2))
    return kernel, stride, (0, 0), (1, 1)


# torch function name -> how to read its window (kernel, stride, padding, dilation) from the call
WINDOWS: dict[str, Callable[[tuple, dict, Tensor], tuple]] = {
    "conv2d": _conv_window,
    "max_pool2d": _pool_window(("input", "kernel_size", "stride", "padding", "dilation")),
    "avg_pool2d": _pool_window(("input", "kernel_size", "stride", "padding")),
    "adaptive_avg_pool2d": _adaptive_window,
    "adaptive_max_pool2d": _adaptive_window,
}
GLOBAL_WINDOWS = ("adaptive_avg_pool2d", "adaptive_max_pool2d")  # their windows depend on the map's size


def _tensors(value: object) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return _tensors(list(value.values()))
    return []


class _FieldTracker(TorchFunctionMode):
    """Follows the field of every (N, C, H, W) tensor through each torch call of one forward pass."""

    def __init__(self, x: Tensor):
        super().__init__()
        self.fields: dict[int, Field] = {id(x): INPUT_FIELD}
        self.alive: list[Tensor] = [x]  # keeps ids unique while the pass runs

    def field_of(self, t: object) -> Field | None:
        return self.fields.get(id(t)) if isinstance(t, Tensor) else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        known = [f for f in map(self.field_of, _tensors((args, kwargs))) if f is not None]
        outputs = [t for t in _tensors(out) if t.dim() == 4]
        if not known or not outputs:
            return out
        x = args[0] if args else next(iter(kwargs.values()))
        if name in WINDOWS and self.field_of(x) is not None:
            field = self.field_of(x).through(*WINDOWS[name](args, kwargs, x))
            if name in GLOBAL_WINDOWS:
                field = Field(field.size, field.jump, field.start, croppable=False)
        elif name == "pad" and self.field_of(x) is not None:
            pads = list(args[1] if len(args) > 1 else kwargs["pad"]) + [0] * 4  # (left, right, top, bottom)
            f = self.field_of(x)
            field = Field(f.size, f.jump, (f.start[0] - pads[2] * f.jump[0], f.start[1] - pads[0] * f.jump[1]),
                          f.croppable)
        elif all(t.shape[-2:] == x.shape[-2:] for t in outputs) and isinstance(x, Tensor) and x.dim() == 4:
            field = functools.reduce(Field.union, known)  # position-wise: BatchNorm, ReLU, a residual sum
        else:
            return out  # an op that moves positions around: no field after it
        for t in outputs:
            self.fields[id(t)] = field
            self.alive.append(t)
        return out


def _module(model: object) -> nn.Module:
    module = getattr(model, "module", model)  # a zoo.ZooModel or an nn.Module
    if not isinstance(module, nn.Module):
        raise InputError(f"receptive fields need a torch nn.Module, got {type(model).__name__}.")
    return module


def _input_shape(model: object, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if input_shape is None:
        card = getattr(model, "card", None)
        if card is None:
            raise InputError("give the input shape (C, H, W): this model has no model card that says it.")
        input_shape = card.input_shape
    return tuple(int(s) for s in input_shape)


def receptive_fields(model: object, input_shape: tuple[int, ...] | None = None) -> tuple[LayerField, ...]:
    """The receptive field of every conv and pooling layer, in the order the forward pass runs them.

    `model`: a zoo.ZooModel (its card gives the input shape) or an nn.Module with `input_shape` (C, H, W).
    Layers after an op that mixes all positions (attention, flatten) have no field and are left out.
    """
    return _receptive_fields(_module(model), _input_shape(model, input_shape))


@functools.lru_cache(maxsize=16)
def _receptive_fields(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[LayerField, ...]:
    # One forward pass of zeros. The tracker is thread-local; the hooks are module state, so they are held
    # under the model's trace lock (no other session's forward runs meanwhile). The "meta" device would
    # skip the arithmetic but its first use imports for seconds.
    if any(m.training for m in module.modules()):
        module = copy.deepcopy(module).eval()  # a forward in training mode would move BatchNorm's statistics
    names = {m: n for n, m in module.named_modules()}
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    x = torch.zeros((1, *input_shape), device=trace.device_of(module), dtype=dtype)
    found: list[LayerField] = []
    calls: dict[str, int] = {}
    tracker = _FieldTracker(x)

    def record(module: nn.Module, args: tuple, output: object) -> None:
        name = names[module]
        calls[name] = calls.get(name, -1) + 1
        out = _tensors(output)
        field = tracker.field_of(out[0]) if out else None
        if field is not None and out[0].dim() == 4:
            label = name if calls[name] == 0 else f"{name}:{calls[name]}"
            found.append(LayerField(label, trace.kind_of(module), type(module).__name__, len(found) + 1, field,
                                    tuple(out[0].shape[-2:])))

    with trace.model_lock(module), tracker, torch.no_grad():
        hooks = [m.register_forward_hook(record) for m in module.modules() if trace.kind_of(m) in ("conv", "pool")]
        try:
            module(x)
        finally:
            for h in hooks:
                h.remove()
    return tuple(found)


def field_of(fields: tuple[LayerField, ...], layer: str) -> LayerField:
    """The named layer's field, or an InputError saying which layers have one."""
    for f in fields:
        if f.name == layer:
            return f
    listed = ", ".join(f.name for f in fields) or "(none)"
    raise InputError(f"{layer!r} has no receptive field here: only conv and pooling layers before any op that "
                     f"mixes all positions (attention, flatten) have one; choose one of: {listed}")


def theoretical_field(fields: tuple[LayerField, ...] | object, layer: str, i: int, j: int) -> Box:
    """The input pixels that unit (i, j) of `layer` can depend on (not clipped to the image)."""
    if not isinstance(fields, tuple):
        fields = receptive_fields(fields)
    f = field_of(fields, layer)
    h, w = f.output_hw
    if not (0 <= i < h and 0 <= j < w):
        raise InputError(f"{layer} has an output map of {h}×{w} units; unit ({i}, {j}) is not on it.")
    return f.field.box(i, j)


# --- effective receptive field -------------------------------------------------------------------------------


class _Reached(Exception):
    """Raised by a hook to end the forward pass at the layer of interest."""

    def __init__(self, output: Tensor):
        self.output = output


def _stop_at(layer: str) -> tuple[str, int]:
    name, _, call = layer.partition(":")
    return name, int(call) if call else 0


def _run_to(module: nn.Module, target: nn.Module, call: int, x: Tensor,
            crop: tuple[int, int, int, int]) -> tuple[Tensor, Tensor]:
    """(input crop with a gradient, `target`'s output at its `call`-th run), the forward pass ended there."""
    top, left, bottom, right = crop
    patch = x[:, :, top:bottom, left:right].to(trace.device_of(module)).detach().requires_grad_(True)
    seen = []

    def stop(mod: nn.Module, args: tuple, output: object) -> None:
        seen.append(None)
        if len(seen) > call:
            raise _Reached(_tensors(output)[0])

    with trace.model_lock(module), torch.enable_grad():
        handle = target.register_forward_hook(stop)
        try:
            module(patch)
        except _Reached as reached:
            return patch, reached.output
        finally:
            handle.remove()
    raise InputError("the layer did not run in the forward pass.")


def effective_receptive_field(model: object, x: Tensor, layer: str, channel: int, i: int, j: int) -> Tensor:
    """Σ_c |∂ output[0, channel, i, j] / ∂ x[0, c]| of `layer`, as an (H, W) map on the CPU.

    The shared model is not changed: only the input gets a gradient, and the hook that ends the forward
    pass at `layer` is held under the model's trace lock, so no other session's forward sees it. Where
    the layer has a theoretical field, only the input crop inside it is run (the unit cannot depend on
    anything else), its top-left corner aligned to the layer's jump so that every layer's units fall on
    the same positions as in the full image.
    """
    module = _module(model)
    x = trace.check_input(x)[:1]
    if x.dim() != 4:
        raise InputError(f"the effective receptive field needs an image input (1, C, H, W), got {tuple(x.shape)}.")
    if any(m.training for m in module.modules()):
        raise InputError("the effective receptive field needs the model in eval mode (call model.eval()): in "
                         "training mode a forward pass would change BatchNorm's running statistics.")
    height, width = x.shape[-2:]
    name, call = _stop_at(layer)
    target = dict(module.named_modules()).get(name)
    if target is None:
        raise InputError(f"no layer named {layer!r} in this model.")
    full = (0, 0, height, width)
    crop, (ci, cj) = full, (i, j)
    fields = receptive_fields(module, tuple(x.shape[1:]))
    if any(f.name == layer for f in fields):
        f = field_of(fields, layer)
        box = theoretical_field(fields, layer, i, j).clipped(height, width)
        if f.field.croppable:
            top, left = box.top // f.jump[0] * f.jump[0], box.left // f.jump[1] * f.jump[1]
            crop, (ci, cj) = (top, left, box.bottom, box.right), (i - top // f.jump[0], j - left // f.jump[1])
    out = None
    if crop != full:
        try:
            patch, out = _run_to(module, target, call, x, crop)
        except RuntimeError:  # a layer's window is wider than the cropped map: run the whole image
            out = None
        if out is not None and not (out.dim() == 4 and ci < out.shape[2] and cj < out.shape[3]):
            out = None
    if out is None:
        crop, (ci, cj) = full, (i, j)
        patch, out = _run_to(module, target, call, x, crop)
    if out.dim() != 4:
        raise InputError(f"{layer} does not make a feature map (its output is {tuple(out.shape)}); "
                         "choose a convolution or pooling layer.")
    i, j = ci, cj
    if not (0 <= channel < out.shape[1] and 0 <= i < out.shape[2] and 0 <= j < out.shape[3]):
        raise InputError(f"unit (channel {channel}, {i}, {j}) is not in {layer}'s output of shape "
                         f"{tuple(out.shape[1:])}.")
    top, left, bottom, right = crop
    (grad,) = torch.autograd.grad(out[0, channel, i, j], patch)
    heat = torch.zeros(height, width)
    heat[top:bottom, left:right] = grad[0].abs().sum(0).cpu()  # (h, w): summed over input channels
    return heat


def effective_side(heat: Tensor, box: Box, share: float = 0.5) -> int:
    """Side (px, odd) of the smallest square centred on the box's centre pixel that holds `share` of the total.

    The centre pixel rounds down where the box's side is even; the square is clipped to the map. 0 for an
    all-zero map. A compact measure of how far the effective field reaches (Luo et al. 2016).
    """
    total = float(heat.sum())
    if total <= 0:
        return 0
    h, w = heat.shape
    cy, cx = (box.top + box.bottom - 1) // 2, (box.left + box.right - 1) // 2
    for radius in range(max(h, w) + abs(cy) + abs(cx) + 1):
        top, left = max(cy - radius, 0), max(cx - radius, 0)
        inside = float(heat[top:max(cy + radius + 1, 0), left:max(cx + radius + 1, 0)].sum())
        if inside >= share * total:
            return 2 * radius + 1
    return 2 * radius + 1  # only float rounding keeps the whole map below share · total


# --- filter atlas ---------------------------------------------------------------------------------------------

DEGENERATE_FRACTION = 0.01  # a filter is degenerate when its L2 norm or its spread is below 1 % of the layer's largest
SPECTRUM_SIZE = 16          # kernels are zero-padded to this many samples per axis before the FFT


@dataclass(frozen=True)
class Atlas:
    """Every filter of one conv layer, as pictures, with what the atlas sorts and flags them by."""

    pictures: Tensor          # (O, h, w) signed maps, or (O, h, w, 3) for a colour first layer
    shows: str                # what one picture is, in words
    colour: bool
    norms: Tensor             # (O,) L2 norm of each filter's weights
    spreads: Tensor           # (O,) standard deviation of each filter's weights
    tiny: Tensor              # (O,) bool: norm < DEGENERATE_FRACTION · largest norm of the layer
    flat: Tensor              # (O,) bool: spread < DEGENERATE_FRACTION · largest spread (near-constant), not tiny
    spectra: Tensor | None    # (O, N, N) amplitude spectra of the pictures' spatial pattern; None for 1×1 kernels
    strength: Tensor | None   # (O,) mean |activation| of each output channel on the current input
    maps: Tensor | None       # (O, H, W) the layer's output for the current input

    @property
    def degenerate(self) -> Tensor:
        return self.tiny | self.flat


SORTS: dict[str, str] = {
    "index": "the order the layer stores them",
    "L2 norm": "largest weights first",
    "activation": "strongest mean |activation| on this input first",
}


def amplitude_spectrum(kernel: Tensor, size: int = SPECTRUM_SIZE) -> Tensor:
    """|FFT| of a 2-D kernel zero-padded to size × size, zero frequency moved to the centre (fftshift)."""
    if kernel.dim() != 2 or max(kernel.shape) > size:
        raise InputError(f"the spectrum needs a 2-D kernel no larger than {size}×{size}, got {tuple(kernel.shape)}.")
    return torch.fft.fftshift(torch.fft.fft2(kernel.double(), s=(size, size)).abs(), dim=(-2, -1))


def degenerate_filters(weight: Tensor, fraction: float = DEGENERATE_FRACTION) -> tuple[Tensor, Tensor]:
    """(tiny, flat): filters whose L2 norm is below `fraction` of the layer's largest, and filters whose
    weights barely vary (standard deviation below `fraction` of the layer's largest) that are not tiny.

    CNN Filter DB counts such filters as degenerate: they pass (almost) nothing, or only a constant
    multiple of the local mean, and often come from over-parameterised or badly regularised training.
    """
    flat_weights = weight.detach().double().flatten(1)  # (O, I/g · kh · kw)
    norms = flat_weights.norm(dim=1)
    spreads = flat_weights.std(dim=1, correction=0)
    tiny = norms < fraction * norms.max()
    flat = (spreads < fraction * spreads.max()) & ~tiny if flat_weights.shape[1] > 1 else torch.zeros_like(tiny)
    return tiny, flat


def filter_atlas(weight: Tensor, output: Tensor | None = None) -> Atlas:
    """Pictures, norms, spectra and flags of every filter of a conv weight (O, I/g, kh, kw).

    Pictures: a colour first layer (3 input channels) as an RGB composite; one input channel (MNIST's
    first layer, depthwise layers) as that kernel; 1×1 kernels (pointwise layers) as their input weights
    wrapped row by row, since they have no spatial pattern; otherwise the mean over input channels, the
    spatial pattern that the filter applies to what all its input channels share.
    `output` (1, O, H, W), the layer's output on the current input, gives activation strength and maps.
    """
    if weight.dim() != 4:
        raise InputError(f"the filter atlas shows 2-D convolutions; this weight has shape {tuple(weight.shape)}.")
    w = weight.detach().float().cpu()
    o, cin, kh, kw = w.shape
    colour = cin == 3 and (kh, kw) != (1, 1)
    if colour:
        pictures, shows = w.permute(0, 2, 3, 1), "RGB composite: each colour shows that input channel's weights"
        pattern = w.mean(1)
    elif (kh, kw) == (1, 1):
        cols = math.ceil(math.sqrt(cin))
        rows = -(-cin // cols)
        wrapped = torch.full((o, rows * cols), float("nan"))
        wrapped[:, :cin] = w.flatten(1)
        pictures = wrapped.view(o, rows, cols)  # (O, rows, cols)
        shows, pattern = f"the 1×1 kernel's {cin} input weights, row by row", None
    elif cin == 1:
        pictures, shows, pattern = w[:, 0], "the kernel (one input channel)", w[:, 0]
    else:
        pictures, shows, pattern = w.mean(1), f"mean over its {cin} input channels", w.mean(1)
    tiny, flat = degenerate_filters(w)
    flat_weights = w.double().flatten(1)
    spectra = None
    if pattern is not None:
        size = max(SPECTRUM_SIZE, kh, kw)
        spectra = torch.stack([amplitude_spectrum(p, size) for p in pattern]).float()
    maps = strength = None
    if output is not None:
        if output.dim() != 4 or output.shape[1] != o:
            raise InputError(f"the layer's output should be (1, {o}, H, W), got {tuple(output.shape)}.")
        maps = output[0].detach().float().cpu()
        strength = maps.abs().mean(dim=(1, 2))
    norms, spreads = flat_weights.norm(dim=1).float(), flat_weights.std(dim=1, correction=0).float()
    return Atlas(pictures, shows, colour, norms, spreads, tiny, flat, spectra, strength, maps)


def colour_composite(pictures: Tensor, limit: float) -> Tensor:
    """(O, h, w, 3) signed RGB weights as uint8 colours: 0 is mid grey (128), +limit full and −limit no colour."""
    if not limit > 0:
        raise InputError(f"the colour limit must be above zero, got {limit}.")
    return torch.round(127.5 + 127.5 * (pictures / limit).clamp(-1, 1)).to(torch.uint8)


def filter_order(atlas: Atlas, sort: str) -> Tensor:
    """Filter indices in the chosen order (see SORTS); ties keep index order."""
    if sort not in SORTS:
        raise InputError(f"no sort named {sort!r}; choose one of: {', '.join(SORTS)}")
    n = len(atlas.norms)
    if sort == "index":
        return torch.arange(n)
    if sort == "activation" and atlas.strength is None:
        raise InputError("sorting by activation needs the layer's output on an input.")
    key = atlas.norms if sort == "L2 norm" else atlas.strength
    return torch.sort(-key, stable=True).indices


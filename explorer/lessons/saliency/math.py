"""Saliency: which input pixels a class score f_t (the target class's logit) responds to.

For an input x (1 × C × H × W, normalised as the model takes it):

    vanilla gradient          ∂f_t/∂x                                    (Simonyan et al., 2014)
    gradient × input          x ⊙ ∂f_t/∂x                                (Shrikumar et al., 2016)
    SmoothGrad                (1/n) Σ_i ∂f_t/∂x (x + ε_i),  ε_i ~ N(0, σ²),  σ = noise · (max x − min x)
                                                                          (Smilkov et al., 2017)
    Integrated Gradients      (x − x′) ⊙ ∫₀¹ ∂f_t/∂x (x′ + α (x − x′)) dα  (Sundararajan et al., 2017)
    Grad-CAM                  ReLU(Σ_k w_k A^k),  w_k = mean over positions of ∂f_t/∂A^k, upsampled bilinearly
                                                                          (Selvaraju et al., 2017)

Integrated Gradients' integral is n-point Gauss–Legendre quadrature on [0, 1] (Captum's default "gausslegendre"),
and its attributions satisfy completeness, Σ attributions = f_t(x) − f_t(x′), up to the quadrature error shown as
the completeness gap. Its baseline x′ is black (a zero-intensity pixel put through the model's normalisation, given
as `Settings.black`; the zero input when unknown), the input blurred by a Gaussian of σ = max(H, W) / 10 px, or
uniform noise over the input's range. Grad-CAM's A is a convolution's output, or for a vision transformer a block's
output tokens without the class token, reshaped to the patch grid (pytorch-grad-cam's reshape_transform).

The map shown (`heat`) is the attribution summed over the input channels, signed.

Gradients are taken with autograd against the input only, on the model's own device, with the model in eval mode (a
model in training mode is copied first), holding its trace lock; the model is never modified.

Tests (tests/lessons/test_saliency_math.py) compare every method with Captum 0.9 (Saliency, InputXGradient,
NoiseTunnel(Saliency) with the same noise draws, IntegratedGradients, LayerGradCam + LayerAttribution.interpolate)
on random CNNs and on the shipped models, and the blur with scipy.ndimage.gaussian_filter.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from explorer.core import trace
from explorer.errors import InputError, choice
from explorer.lessons.attention.math import patch_grid

METHODS: dict[str, str] = {
    "gradient": "Vanilla gradient",
    "gradient_x_input": "Gradient × input",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "Integrated Gradients",
    "grad_cam": "Grad-CAM",
}
BASELINES: tuple[str, ...] = ("black", "blurred", "noise")
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
BATCH = 16               # inputs per forward pass: SmoothGrad's samples and IG's steps go through in batches this big
BLUR_FRACTION = 0.1      # the blurred image's Gaussian σ as a fraction of the input's larger side
MAX_SAMPLES = 256        # SmoothGrad samples and IG steps: beyond this the maps stop changing, only the wait grows


@dataclass(frozen=True)
class Settings:
    """Every knob of every method; hashable, so that a view can cache results by it."""

    target: int                              # the class explained
    noise: float = 0.15                      # SmoothGrad's σ as a fraction of the input's range (max − min)
    samples: int = 16                        # SmoothGrad's sample count
    baseline: str = "black"                  # Integrated Gradients' baseline, one of BASELINES
    steps: int = 32                          # Integrated Gradients' step count (quadrature points)
    layer: str | None = None                 # Grad-CAM's layer (from grad_cam_layers); None: default_grad_cam_layer
    seed: int = 0                            # SmoothGrad's noise and the noise baseline are drawn from it
    black: tuple[float, ...] | None = None   # a black pixel's input value per channel (black_pixel); None: 0


@dataclass(frozen=True)
class Attribution:
    method: str
    values: Tensor                  # (1, C, H, W) on the CPU; Grad-CAM: (1, 1, H, W), upsampled
    heat: np.ndarray                # (H, W) float64: values summed over channels (signed), the map shown
    completeness_gap: float | None  # Integrated Gradients only: Σ values − (f_t(x) − f_t(x′))


def black_pixel(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[float, ...]:
    """The input value of a zero-intensity pixel for a model that normalises by (mean, std): (0 − mean) / std."""
    return tuple(-m / s for m, s in zip(mean, std, strict=True))


def predicted_class(model: nn.Module, x: Tensor) -> int:
    """The class with the largest logit for x (1, C, H, W)."""
    with evaluating(model) as m, torch.no_grad():
        return int(m(as_input_of(m, x)).argmax(dim=-1)[0])


def grad_cam_layers(model: nn.Module) -> tuple[str, ...]:
    """Where Grad-CAM can look, in the model's order: every 2-D convolution, and every transformer block, whose output
    tokens are reshaped to the patch grid. A block is the module that holds an attention layer and sits in a
    container (ours and timm's `blocks.3`, Hugging Face's `vit.encoder.layer.3`); an attention layer in no
    container is its own block."""
    modules = dict(model.named_modules())
    blocks = set()
    for name, module in modules.items():
        if name and trace.kind_of(module) == "attention":
            parts = name.split(".")
            inside = next((i for i in range(len(parts) - 1, 0, -1)
                           if isinstance(modules[".".join(parts[:i])], CONTAINERS)), len(parts) - 1)
            blocks.add(".".join(parts[:inside + 1]))
    return tuple(name for name, m in modules.items() if name and (isinstance(m, nn.Conv2d) or name in blocks))


def default_grad_cam_layer(model: nn.Module) -> str:
    """The last layer of grad_cam_layers, but for a transformer the last block but one: a class-token head reads only
    the class token of the last block's output, so that block's patch tokens get no gradient at all."""
    layers = grad_cam_layers(model)
    if not layers:
        raise InputError(f"{type(model).__name__} has no 2-D convolution and no attention block, so Grad-CAM has no "
                         "feature map to weigh; use another method.")
    blocks = [name for name in layers if not isinstance(model.get_submodule(name), nn.Conv2d)]
    return blocks[-2] if len(blocks) > 1 and blocks[-1] == layers[-1] else layers[-1]


def attribute(model: nn.Module, x: Tensor, method: str, settings: Settings) -> Attribution:
    """One method's attribution of `settings.target` for x (1, C, H, W); InputError for settings out of range."""
    choice(method, METHODS, "saliency method")
    _check(x, settings)
    with evaluating(model) as m:
        values, gap = _ATTRIBUTORS[method](m, as_input_of(m, x), settings)
    values = values.detach().cpu().contiguous()
    return Attribution(method, values, values[0].double().sum(dim=0).numpy(), gap)


def blurred(x: Tensor) -> Tensor:
    """x blurred channel by channel with a Gaussian of σ = BLUR_FRACTION · max(H, W) px, truncated at 4σ, the
    border mirrored: scipy.ndimage.gaussian_filter(..., mode="mirror"), but for a kernel wider than the image, which
    is cut to the image's size and renormalised."""
    sigma = BLUR_FRACTION * max(x.shape[-2:])
    radius = int(4 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x)
    c = x.shape[1]
    out = x
    for dim in (-1, -2):  # separable: rows, then columns
        r = min(radius, x.shape[dim] - 1)  # reflect padding needs a pad narrower than the image
        k = kernel[radius - r:radius + r + 1]
        k = k / k.sum()
        pad = (r, r, 0, 0) if dim == -1 else (0, 0, r, r)
        shape = (c, 1, 1, 2 * r + 1) if dim == -1 else (c, 1, 2 * r + 1, 1)  # one kernel per channel
        out = F.conv2d(F.pad(out, pad, mode="reflect"), k.expand(c, -1).reshape(shape), groups=c)
    return out


def baseline_image(x: Tensor, settings: Settings) -> Tensor:
    """Integrated Gradients' x′ for x (1, C, H, W), on x's device."""
    kind = choice(settings.baseline, BASELINES, "baseline")
    if kind == "black":
        return black_image(x, settings.black)
    if kind == "blurred":
        return blurred(x)
    uniform = torch.rand(x.shape, generator=torch.Generator().manual_seed(settings.seed), dtype=torch.float32)
    return (x.min() + uniform.to(x.device) * (x.max() - x.min())).to(x.dtype)


def black_image(x: Tensor, black: tuple[float, ...] | None) -> Tensor:
    """An image of black pixels shaped like x: `black` per channel, or zeros when it is None."""
    if black is None:
        return torch.zeros_like(x)
    if len(black) != x.shape[1]:
        raise InputError(f"black gives {len(black)} channel values for an input with {x.shape[1]} channels; "
                         "give one per channel (black_pixel(card.mean, card.std)).")
    return torch.tensor(black, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1).expand_as(x).clone()


def smoothgrad_noise(x: Tensor, settings: Settings) -> Tensor:
    """SmoothGrad's draws ε (samples, C, H, W): N(0, σ²), σ = noise · (max x − min x), from a generator seeded with
    `settings.seed` on the CPU (so every device draws the same; Captum's NoiseTunnel draws the same after
    torch.manual_seed(seed))."""
    sigma = settings.noise * float(x.max() - x.min())
    draws = torch.randn((settings.samples, *x.shape[1:]), generator=torch.Generator().manual_seed(settings.seed))
    return (draws * sigma).to(x.device, x.dtype)


def gauss_legendre(steps: int) -> tuple[Tensor, Tensor]:
    """(α, weights), each (steps,): Gauss–Legendre nodes and weights moved from [−1, 1] to [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(weights / 2)


def target_gradients(model: nn.Module, inputs: Tensor, target: int) -> Tensor:
    """∂f_t/∂x for each row of inputs (N, C, H, W), BATCH rows per pass; the model's parameters get no gradient."""
    grads = []
    with torch.enable_grad():
        for chunk in inputs.split(BATCH):
            chunk = chunk.detach().requires_grad_()
            (grad,) = torch.autograd.grad(class_scores(model(chunk), target).sum(), chunk)  # rows are independent
            grads.append(grad)
    return torch.cat(grads)


def _gradient(model: nn.Module, x: Tensor, s: Settings) -> tuple[Tensor, None]:
    return target_gradients(model, x, s.target), None


def _gradient_x_input(model: nn.Module, x: Tensor, s: Settings) -> tuple[Tensor, None]:
    return x * target_gradients(model, x, s.target), None


def _smoothgrad(model: nn.Module, x: Tensor, s: Settings) -> tuple[Tensor, None]:
    noisy = x + smoothgrad_noise(x, s)  # (samples, C, H, W)
    return target_gradients(model, noisy, s.target).mean(dim=0, keepdim=True), None


def _integrated_gradients(model: nn.Module, x: Tensor, s: Settings) -> tuple[Tensor, float]:
    start = baseline_image(x, s)
    alphas, weights = (t.to(x) for t in gauss_legendre(s.steps))
    path = start + alphas.reshape(-1, 1, 1, 1) * (x - start)  # (steps, C, H, W)
    grads = target_gradients(model, path, s.target)
    values = (x - start) * (weights.reshape(-1, 1, 1, 1) * grads).sum(dim=0, keepdim=True)
    with torch.no_grad():
        ends = class_scores(model(torch.cat([x, start])), s.target).double()  # f_t(x), f_t(x′)
    return values, float(values.double().sum() - (ends[0] - ends[1]))


def _grad_cam(model: nn.Module, x: Tensor, s: Settings) -> tuple[Tensor, None]:
    layer = s.layer if s.layer is not None else default_grad_cam_layer(model)
    choice(layer, grad_cam_layers(model), "Grad-CAM layer")
    activation, gradient = layer_activation_and_gradient(model, x, s.target, layer)
    if activation.dim() == 3:  # transformer tokens (1, T, D) -> (1, D, rows, cols)
        if activation.shape[0] != 1:  # a sequence-first block (nn.TransformerEncoderLayer's default): (T, 1, D)
            activation, gradient = activation.transpose(0, 1), gradient.transpose(0, 1)
        grid = patch_grid(activation.shape[1], tuple(x.shape[-2:]))
        activation, gradient = (t[:, grid.first:grid.first + grid.n].reshape(1, grid.rows, grid.cols, -1)
                                .permute(0, 3, 1, 2) for t in (activation, gradient))
    if activation.dim() != 4:
        raise InputError(f"{layer} gives outputs of shape {tuple(activation.shape)}; Grad-CAM needs a feature map "
                         "(1, channels, height, width) or transformer tokens (1, tokens, width).")
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # (1, K, 1, 1): w_k
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))  # (1, 1, h, w)
    return F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False), None


def layer_activation_and_gradient(model: nn.Module, x: Tensor, target: int, layer: str) -> tuple[Tensor, Tensor]:
    """(A, ∂f_t/∂A) of the module `layer` for x. A forward hook hands the rest of the network a copy of A that is a
    leaf of the graph, so the backward pass stops there; the hook is removed on exit, even on error."""
    captured: list[Tensor] = []

    def leaf(module: nn.Module, args: tuple, output: Tensor | tuple) -> Tensor | tuple:
        first = output[0] if isinstance(output, tuple) and output else output  # Hugging Face blocks return tuples
        if not isinstance(first, Tensor):
            raise InputError(f"{layer} returns a {type(first).__name__}, not a tensor; Grad-CAM cannot weigh it.")
        captured.append(first.detach().requires_grad_())
        return (captured[-1], *output[1:]) if isinstance(output, tuple) else captured[-1]

    handle = model.get_submodule(layer).register_forward_hook(leaf)
    try:
        with torch.enable_grad():
            score = class_scores(model(x), target)[0]
    finally:
        handle.remove()
    if len(captured) != 1:
        raise InputError(f"{layer} runs {len(captured)} times in one forward pass; Grad-CAM needs a layer that runs "
                         "once. Pick another layer.")
    (grad,) = torch.autograd.grad(score, captured[0], allow_unused=True)
    return captured[0].detach(), torch.zeros_like(captured[0]) if grad is None else grad


def class_scores(logits: Tensor, target: int) -> Tensor:
    """(N,) the target's logit in each row of logits (N, classes); InputError for a class the model does not have."""
    if logits.dim() != 2:
        raise InputError(f"the model gives outputs of shape {tuple(logits.shape)}; saliency needs class scores "
                         "(N, classes).")
    if not 0 <= target < logits.shape[1]:
        raise InputError(f"class {target} does not exist; this model has classes 0 to {logits.shape[1] - 1}.")
    return logits[:, target]


_ATTRIBUTORS: dict[str, Callable[[nn.Module, Tensor, Settings], tuple[Tensor, float | None]]] = {
    "gradient": _gradient,
    "gradient_x_input": _gradient_x_input,
    "smoothgrad": _smoothgrad,
    "integrated_gradients": _integrated_gradients,
    "grad_cam": _grad_cam,
}


def as_input_of(model: nn.Module, x: Tensor) -> Tensor:
    """x detached, on the model's device, in its floating-point type (float32 for a model without parameters)."""
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return x.detach().to(trace.device_of(model), dtype)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode, held under its trace lock so that no other session's hooks see our passes: the model
    itself, or for a model in training mode (whose BatchNorm would mix the batch and update its statistics) an eval
    copy."""
    if model.training:
        with trace.model_lock(model):
            model = copy.deepcopy(model)
        model.eval()
    with trace.model_lock(model):
        yield model


def _check(x: Tensor, s: Settings) -> None:
    if x.dim() != 4 or x.shape[0] != 1:
        raise InputError(f"saliency explains one input of shape (1, C, H, W), got {tuple(x.shape)}.")
    if not 0 <= s.noise <= 1:  # NaN fails too
        raise InputError(f"SmoothGrad's noise level is a fraction of the input's range, from 0 to 1; got {s.noise}.")
    for name, value in (("SmoothGrad's sample count", s.samples), ("Integrated Gradients' step count", s.steps)):
        if not 1 <= value <= MAX_SAMPLES:
            raise InputError(f"{name} must be from 1 to {MAX_SAMPLES}, got {value}.")
    choice(s.baseline, BASELINES, "baseline")

"""The model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, §3.1).

A map that explains the model must change when the model's learned weights are destroyed. Cascading randomisation:
on a private copy, re-initialise the layers one at a time from the output (top) down, and after each step compare
every method's map with the map of the trained model by the Spearman rank correlation of their absolute values,

    ρ = Pearson correlation of rank(|a|) and rank(|b|)   (ties take their average rank, as scipy.stats.rankdata).

A method whose map still correlates above SURVIVAL_THRESHOLD once every layer is random "survives" randomisation:
its map shows the input (edges, the digit's ink), not what the model learned.

A layer is a module with parameters of its own (a convolution, a norm, a linear layer), or any module with
parameters that sits in a container (Sequential, ModuleList, ModuleDict): a block such as an inverted residual or a
transformer block counts as one. Containers, and wrappers without parameters of their own (a backbone, an encoder),
are looked into. Parameters of the model itself (our ViT's class token and position embedding) belong to no layer
and stay. Re-initialisation draws every parameter
tensor of the layer from U(−b, b) with b = 1/√fan_in of its submodule's weight matrix (PyTorch's default bound for
Linear and Conv, weights and biases alike), or b = 1 for a submodule without one (norm gains and shifts);
buffers (BatchNorm's running statistics) stay. The draws come from a generator seeded with `seed`, layer by layer
in the given order.

Tests (tests/lessons/test_saliency_sanity.py) check rank_correlation against scipy.stats.spearmanr, that exactly
the named layers of a copy change and the shared model not at all, and each step against a copy randomised afresh.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from explorer.core import trace
from explorer.errors import InputError, choice
from explorer.lessons.saliency.math import CONTAINERS, METHODS, Settings, attribute

SURVIVAL_THRESHOLD = 0.5  # rank correlation with the trained model's map, after every layer is random


def survives(correlation: np.ndarray) -> bool:
    """Whether a method's map survives randomisation: its rank correlation with the trained model's map, once every
    layer is random (the last of `correlation`), is still above SURVIVAL_THRESHOLD (NaN, a constant map: no)."""
    return bool(correlation[-1] > SURVIVAL_THRESHOLD)


def randomisation_order(model: nn.Module) -> tuple[str, ...]:
    """The model's layers (see the module), from the output (top) down."""
    return tuple(reversed(list(_layers(model, "", False))))


def _layers(module: nn.Module, prefix: str, in_container: bool) -> Iterator[str]:
    for name, child in module.named_children():
        if next(child.parameters(), None) is None:
            continue
        own = next(child.parameters(recurse=False), None) is not None
        if isinstance(child, CONTAINERS) and not own:
            yield from _layers(child, f"{prefix}{name}.", True)
        elif own or in_container:
            yield f"{prefix}{name}"
        else:  # a wrapper, backbone or encoder: its parts are the layers
            yield from _layers(child, f"{prefix}{name}.", False)


def randomised(model: nn.Module, layers: Sequence[str], seed: int = 0) -> nn.Module:
    """A private copy of the model, in eval mode, with `layers` re-initialised in that order; `model` is unchanged."""
    order = randomisation_order(model)
    for layer in layers:
        choice(layer, order, "layer")
    duplicate = trace.private_copy(model).eval()
    generator = torch.Generator().manual_seed(seed)
    for layer in layers:
        reinitialise(duplicate.get_submodule(layer), generator)
    return duplicate


@torch.no_grad()
def reinitialise(layer: nn.Module, generator: torch.Generator) -> None:
    """Draw every parameter of `layer` afresh (see the module), in place: only ever call it on a private copy."""
    for module in layer.modules():
        own = list(module.parameters(recurse=False))
        matrix = next((p for p in own if p.dim() >= 2), None)
        bound = 1 / math.sqrt(matrix[0].numel()) if matrix is not None else 1.0  # fan_in: one output's inputs
        for p in own:
            uniform = torch.rand(p.shape, generator=generator, dtype=torch.float64)
            p.copy_(((2 * uniform - 1) * bound).to(p.device, p.dtype))


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ of |a| and |b| (any shapes with the same number of values); NaN when either is constant."""
    a, b = np.abs(np.ravel(a)).astype(np.float64), np.abs(np.ravel(b)).astype(np.float64)
    if a.shape != b.shape:
        raise InputError(f"the maps have {a.size} and {b.size} values; compare maps of the same input.")
    ra, rb = _ranks(a) - (a.size + 1) / 2, _ranks(b) - (b.size + 1) / 2  # centred: mean rank is (n + 1) / 2
    norm = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / norm if norm > 0 else math.nan


def _ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks of v, ties given the average of the ranks they span."""
    order = np.argsort(v, kind="stable")
    ordered = v[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first sorted position of each tie group
    ends = np.r_[starts[1:], v.size]                                     # one past its last
    group = np.repeat(np.arange(starts.size), ends - starts)             # tie group of each sorted position
    ranks = np.empty(v.size)
    ranks[order] = ((starts + 1 + ends) / 2)[group]  # mean of the ranks starts+1 .. ends
    return ranks


@dataclass(frozen=True)
class Randomisation:
    layers: tuple[str, ...]             # randomised cumulatively from the top: after step i, layers[:i+1] are random
    correlation: dict[str, np.ndarray]  # method -> (len(layers),) rank correlation with the original map
    survives: dict[str, bool]           # method -> correlation still > SURVIVAL_THRESHOLD after all layers


def randomisation_steps(model: nn.Module, x: torch.Tensor, settings: Settings,
                        methods: Sequence[str] = tuple(METHODS)) -> Iterator[tuple[str, dict[str, float]]]:
    """(layer, method -> rank correlation) after each step of the cascade, as it is computed: a view can show
    progress. One private copy is randomised further at each step; `model` is only read."""
    for method in methods:
        choice(method, METHODS, "saliency method")
    original = {m: attribute(model, x, m, settings).heat for m in methods}
    duplicate = trace.private_copy(model).eval()
    generator = torch.Generator().manual_seed(settings.seed)
    for layer in randomisation_order(model):
        reinitialise(duplicate.get_submodule(layer), generator)
        yield layer, {m: rank_correlation(original[m], attribute(duplicate, x, m, settings).heat) for m in methods}


def randomisation_check(model: nn.Module, x: torch.Tensor, settings: Settings,
                        methods: Sequence[str] = tuple(METHODS)) -> Randomisation:
    """The whole cascade (randomisation_steps) for x (1, C, H, W), each method run with `settings`."""
    steps = list(randomisation_steps(model, x, settings, methods))
    if not steps:
        raise InputError(f"{type(model).__name__} has no layers with parameters to randomise.")
    correlation = {m: np.array([step[m] for _, step in steps]) for m in methods}
    return Randomisation(tuple(layer for layer, _ in steps), correlation,
                         {m: survives(c) for m, c in correlation.items()})

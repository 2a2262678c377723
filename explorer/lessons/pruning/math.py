"""Pruning: set the least important weights to zero, and see what that costs and what it saves.

Unstructured (Han et al., "Learning both Weights and Connections for Efficient Neural Networks", 2015):
each weight w is kept iff |w| is above the k-th smallest |w|, k = round(amount · n), counted per layer
or over all layers at once (global). The random baseline keeps a uniformly random subset of the same size.

Structured (Li et al., "Pruning Filters for Efficient ConvNets", 2017; the survey of He & Xiao, 2023):
whole units go, ranked by the Lp norm ‖W_c‖_p (p = 1 or 2) of their producing weights: a conv filter
with its BatchNorm channel, a hidden neuron of an MLP, an attention head (its q, k, v rows). Every weight
that belongs only to a removed unit is zeroed too (the next layer's input column, the depthwise filter
in between), so the unit's output is exactly zero and `shrink` can cut it out, giving a physically
smaller model that computes the same function. Each layer keeps at least one unit.

Masks are applied with torch.nn.utils.prune to a private deep copy; the shared model is never changed.
Accuracy is measured on that masked copy, the very model whose predictions the lesson shows.

Safe beside other sessions' threads: the graph is traced with torch.fx once per model (fx patches
nn.Module process-wide while it traces; see _Tracer), and the random baseline draws from its own generator.

Tests (tests/lessons/test_pruning_math.py) check: the achieved sparsity against the requested one, per
layer and globally; the masks against an independent NumPy selection of the smallest |w| (and norms);
the shrunk model's outputs against the masked model's; measured accuracy against the shown model's own
count; MACs against a count by hand; the BatchNorm re-estimate against torch's cumulative running
statistics; `speed`'s counts against the shrunk model's and its timings' count; that the shared model is
unchanged; and traces and sweeps in several threads at once.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from explorer.core import complexity, evaluate, trace
from explorer.core.architectures import Attention
from explorer.core.data import EvalSet
from explorer.errors import InputError, choice


@dataclass(frozen=True)
class Method:
    label: str            # what the student reads
    structured: bool
    norm: int | None      # p of the Lp norm that ranks weights or units; None: random


METHODS: dict[str, Method] = {
    "magnitude": Method("smallest |w|", False, 1),
    "random": Method("random (baseline)", False, None),
    "filters-l1": Method("whole units, L1 norm", True, 1),   # units: conv filters, MLP neurons, attention heads
    "filters-l2": Method("whole units, L2 norm", True, 2),
}
SCOPES: dict[str, str] = {"layer": "the same fraction in every layer", "global": "one threshold over all layers"}
MAX_AMOUNT = 0.99
RANDOM_SEED = 0  # the random baseline is the same draw every time, so that the cached curve and the live view agree

# Modules after which a unit's zero output stays exactly zero and keeps its channel (f(0) = 0).
ZERO_KEEPING = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.Mish, nn.Dropout, nn.Identity)
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


# --- Which weights can go ------------------------------------------------------------------------------------


def prunable_layers(model: nn.Module) -> tuple[str, ...]:
    """Conv and linear layers: the weights unstructured pruning ranks."""
    return tuple(name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


@dataclass(frozen=True, eq=False)
class Member:
    """A tensor with one slice per unit: unit u owns tensor.index_select(dim, index[u])."""

    module: str
    tensor: str     # parameter or buffer name
    dim: int
    index: Tensor   # (units, k) int64
    masked: bool    # zeroed when the unit is pruned (buffers such as running_mean are only cut by shrink)


@dataclass(frozen=True, eq=False)
class UnitGroup:
    """Units (filters, neurons, heads) that can be removed together with every weight that belongs to them."""

    name: str                 # the producing module, "features.0"
    unit: str                 # "filter", "neuron", "head"
    size: int                 # number of units
    members: tuple[Member, ...]  # members[0] is the producing weight: its slices' norms rank the units


class _Tracer(fx.Tracer):
    """torch.fx's tracer, made safe beside other threads. While fx traces, it replaces nn.Module.__call__ and
    __getattr__ for the whole process: another thread's forward pass (another session's) would go to this
    tracer and fail with "module is not installed as a submodule". Calls from other threads pass through
    here unchanged; fx's patching of functions in modules' globals (math) is off, so no other thread's
    globals are touched. Traces run one at a time (_trace_lock): fx's patches do not nest across threads."""

    def __init__(self):
        super().__init__(autowrap_modules=(), autowrap_functions=())
        self._thread = threading.get_ident()

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, Attention) or super().is_leaf_module(m, qualname)  # heads are handled as a unit

    def call_module(self, m, forward, args, kwargs):
        if threading.get_ident() != self._thread:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if threading.get_ident() != self._thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


_groups: weakref.WeakKeyDictionary[nn.Module, tuple[UnitGroup, ...]] = weakref.WeakKeyDictionary()
_trace_lock = threading.Lock()


def unit_groups(model: nn.Module) -> tuple[UnitGroup, ...]:
    """The model's removable units, found on its graph (torch.fx): a conv or linear layer whose output
    reaches exactly one next conv or linear layer through channel-keeping steps only (BatchNorm, ReLU-like
    activations, pooling, flatten, a depthwise conv), and attention heads. Outputs that feed a residual sum,
    a concatenation or the logits are not removable this way. Cached per model, and passed on to its copies
    (private_copy), which have the same structure: a model is traced once."""
    with _trace_lock:
        if model not in _groups:
            modules = dict(model.named_modules())
            try:
                graph = _Tracer().trace(model)
            except Exception:  # noqa: BLE001 (fx cannot trace every model; heads can still be found)
                graph = None
            groups = [] if graph is None else [g for node in graph.nodes if (g := _chain(node, modules)) is not None]
            groups += [_heads(name, m) for name, m in modules.items() if isinstance(m, Attention) and m.heads > 1]
            _groups[model] = tuple(groups)
        return _groups[model]


def _rows(n: int, k: int = 1) -> Tensor:
    return torch.arange(n * k).view(n, k)  # (units, k): unit u owns indices u·k … u·k + k - 1


def _chain(node: fx.Node, modules: dict[str, nn.Module]) -> UnitGroup | None:
    producer = modules.get(node.target) if node.op == "call_module" else None
    is_conv = isinstance(producer, nn.Conv2d) and producer.groups == 1
    if not (is_conv or isinstance(producer, nn.Linear)):
        return None
    name, n = node.target, producer.weight.shape[0]
    members = _own(name, producer, n)
    flattened = False
    while True:
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module":
            return None
        node = users[0]
        m = modules[node.target]
        if isinstance(m, nn.BatchNorm2d) and is_conv and not flattened:
            members += _own(node.target, m, n) + [Member(node.target, b, 0, _rows(n), False)
                                                   for b in ("running_mean", "running_var")]
        elif isinstance(m, ZERO_KEEPING) or (isinstance(m, POOLS) and is_conv and not flattened):
            pass
        elif isinstance(m, nn.Flatten) and is_conv and m.start_dim == 1 and not flattened:
            flattened = True
        elif isinstance(m, nn.Conv2d) and is_conv and not flattened and m.groups == m.in_channels == m.out_channels:
            members += _own(node.target, m, n)  # depthwise: channel c in, channel c out
        elif isinstance(m, nn.Conv2d) and is_conv and not flattened and m.groups == 1:
            members.append(Member(node.target, "weight", 1, _rows(n), True))
            return UnitGroup(name, "filter", n, tuple(members))
        elif isinstance(m, nn.Linear) and (flattened or not is_conv):
            if m.in_features % n:
                return None
            members.append(Member(node.target, "weight", 1, _rows(n, m.in_features // n), True))
            return UnitGroup(name, "filter" if is_conv else "neuron", n, tuple(members))
        else:
            return None


def _own(name: str, module: nn.Module, n: int) -> list[Member]:
    """The slices of a module's own weight and bias along its output channels."""
    return [Member(name, t, 0, _rows(n), True) for t in ("weight", "bias") if getattr(module, t, None) is not None]


def _heads(name: str, attn: Attention) -> UnitGroup:
    d = attn.qkv.weight.shape[0] // (3 * attn.heads)
    # qkv rows are [q heads | k heads | v heads], each head d rows: head h owns rows p·H·d + h·d + j
    qkv = torch.stack([torch.cat([p * attn.heads * d + h * d + torch.arange(d) for p in range(3)])
                       for h in range(attn.heads)])  # (heads, 3d)
    members = [Member(f"{name}.qkv", "weight", 0, qkv, True)]
    if attn.qkv.bias is not None:
        members.append(Member(f"{name}.qkv", "bias", 0, qkv, True))
    members.append(Member(f"{name}.proj", "weight", 1, _rows(attn.heads, d), True))
    return UnitGroup(name, "head", attn.heads, tuple(members))


# --- Masks ---------------------------------------------------------------------------------------------------


def _check(method: str, amount: float, scope: str) -> None:
    choice(method, METHODS, "pruning method")
    choice(scope, SCOPES, "pruning scope")
    if not 0.0 <= amount <= MAX_AMOUNT:
        raise InputError(f"sparsity {amount:.0%} is outside 0 % to {MAX_AMOUNT:.0%}; pick a value in that range.")


def private_copy(model: nn.Module) -> nn.Module:
    """trace.private_copy, keeping the model's unit groups (same structure, same names) without tracing again."""
    duplicate = trace.private_copy(model)
    with _trace_lock:
        if model in _groups:
            _groups[duplicate] = _groups[model]
    return duplicate


def unit_norms(group: UnitGroup, model: nn.Module, p: int) -> Tensor:
    """‖W_u‖_p of each unit's producing weights, (units,)."""
    first = group.members[0]
    w = getattr(model.get_submodule(first.module), first.tensor).detach()
    rows = w.index_select(first.dim, first.index.flatten())  # (units·k, ...)
    return rows.reshape(group.size, -1).float().norm(p=p, dim=1)


def units_removed(n: int, amount: float) -> int:
    """round(amount · n), at most n - 1: a layer keeps at least one unit so that the network stays connected."""
    return min(round(amount * n), n - 1)


def unit_masks(model: nn.Module, p: int, amount: float, scope: str,
               groups: Iterable[UnitGroup] | None = None) -> dict[str, Tensor]:
    """Per group, a (units,) bool tensor: True = kept. Ranked by ‖W_u‖_p, smallest removed first."""
    groups = tuple(unit_groups(model) if groups is None else groups)
    norms = {g.name: unit_norms(g, model, p) for g in groups}
    if scope == "layer":
        return {g.name: _keep_largest(norms[g.name], g.size - units_removed(g.size, amount)) for g in groups}
    # global: one threshold over all units, but each group's largest unit always stays
    total = sum(g.size for g in groups)
    candidates = torch.cat([norms[g.name].scatter(0, norms[g.name].argmax().view(1), float("inf")) for g in groups])
    removed = min(round(amount * total), total - len(groups))
    keep = torch.ones(total, dtype=torch.bool)
    keep[candidates.argsort(stable=True)[:removed]] = False
    return dict(zip([g.name for g in groups], keep.split([g.size for g in groups]), strict=True))


def _keep_largest(norms: Tensor, kept: int) -> Tensor:
    keep = torch.zeros(len(norms), dtype=torch.bool)
    keep[norms.argsort(descending=True, stable=True)[:kept]] = True
    return keep


def prune(model: nn.Module, method: str, amount: float, scope: str = "layer", only: str | None = None) -> nn.Module:
    """A pruned copy of `model` (masks via torch.nn.utils.prune); `only` prunes one layer or unit group alone."""
    _check(method, amount, scope)
    spec = METHODS[method]
    # torch's pruning reads weights with .view(-1): standard layout while masking, the model's own afterwards
    layout = _layout(model)
    pruned = private_copy(model).to(memory_format=torch.contiguous_format)
    if spec.structured:
        groups = [g for g in unit_groups(model) if only in (None, g.name)]
        if only is not None and not groups:
            raise InputError(f"{only!r} has no removable units; choose one of: {', '.join(structured_layers(model))}")
        keep = unit_masks(model, spec.norm, amount, scope, groups)
        for group in groups:
            for member in group.members:
                if member.masked:
                    _mask_units(pruned, member, keep[group.name])
        return pruned.to(memory_format=layout)
    names = [n for n in prunable_layers(model) if only in (None, n)]
    if only is not None and not names:
        raise InputError(f"no conv or linear layer named {only!r}; choose one of: {', '.join(prunable_layers(model))}")
    params = [(pruned.get_submodule(n), "weight") for n in names]
    if spec.norm is None:
        for (module, name), mask in zip(params, random_masks([m.weight for m, _ in params], amount, scope),
                                        strict=True):
            torch_prune.custom_from_mask(module, name, mask.to(module.weight.device))
    elif scope == "global" and len(params) > 1:
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=amount)
    else:
        for module, name in params:
            torch_prune.l1_unstructured(module, name, amount=amount)
    return pruned.to(memory_format=layout)


def random_masks(weights: list[Tensor], amount: float, scope: str) -> list[Tensor]:
    """The random baseline: round(amount · n) weights chosen uniformly at random, per layer or over all of them
    (n counted the same way), as torch's RandomUnstructured does, but drawn from a private generator seeded
    with RANDOM_SEED: the same draw in every thread and process, whatever else uses torch's global one."""
    generator = torch.Generator().manual_seed(RANDOM_SEED)
    scores = [torch.rand(w.shape, generator=generator) for w in weights]
    if scope == "global":
        scores = [torch.cat([s.flatten() for s in scores])]  # (all weights,)
    masks = []
    for score in scores:
        mask = torch.ones(score.numel())
        mask[score.flatten().topk(round(amount * score.numel())).indices] = 0
        masks.append(mask.view(score.shape))
    if scope == "global":
        masks = [m.view(w.shape) for m, w in zip(masks[0].split([w.numel() for w in weights]), weights, strict=True)]
    return masks


def _layout(model: nn.Module) -> torch.memory_format:
    """channels_last when the model's conv weights are stored so (zoo.share does it for speed)."""
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        stored = getattr(conv, "weight_orig", conv.weight)  # under a mask: the stored parameter
        # a 1-channel or 1×1 weight is both layouts at once: only an unambiguous one decides
        if stored.is_contiguous(memory_format=torch.channels_last) != stored.is_contiguous():
            return torch.channels_last if stored.is_contiguous(memory_format=torch.channels_last) \
                else torch.contiguous_format
    return torch.contiguous_format


def _mask_units(model: nn.Module, member: Member, keep: Tensor) -> None:
    module = model.get_submodule(member.module)
    existing = getattr(module, f"{member.tensor}_mask", None)
    current = getattr(module, member.tensor)
    mask = torch.ones_like(current) if existing is None else existing.clone()
    removed = member.index[~keep].flatten().to(current.device)
    mask.index_fill_(member.dim, removed, 0)
    if existing is not None:  # a tensor shared by two groups (a depthwise conv between them): combine
        torch_prune.remove(module, member.tensor)
    torch_prune.custom_from_mask(module, member.tensor, mask)


def masks(model: nn.Module) -> dict[str, Tensor]:
    """'layer.weight' -> its pruning mask (1 kept, 0 pruned), for every masked tensor of a pruned copy."""
    return {f"{name}.{buf[:-5]}": mask for name, m in model.named_modules()
            for buf, mask in m.named_buffers(recurse=False) if buf.endswith("_mask")}


# --- What pruning did ----------------------------------------------------------------------------------------


def sparsity(model: nn.Module) -> dict[str, float]:
    """Per conv and linear layer: the fraction of its weights that are exactly zero."""
    weights = {name: model.get_submodule(name).weight for name in prunable_layers(model)}
    return {name: int((w == 0).sum()) / w.numel() for name, w in weights.items()}


def global_sparsity(model: nn.Module) -> float:
    """Zero weights over all conv and linear weights together."""
    weights = [model.get_submodule(n).weight for n in prunable_layers(model)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def unit_fractions(pruned: nn.Module) -> dict[str, float]:
    """Per unit group: the fraction of its units that are removed (every weight of the unit exactly 0)."""
    return {group.name: int((~_alive(pruned, group)).sum()) / group.size for group in unit_groups(pruned)}


def _alive(model: nn.Module, group: UnitGroup) -> Tensor:
    """(units,) bool: True where some masked weight of the unit is not zero."""
    alive = torch.zeros(group.size, dtype=torch.bool)
    for member in group.members:
        if member.masked:
            t = getattr(model.get_submodule(member.module), member.tensor).detach()
            slices = t.index_select(member.dim, member.index.flatten().to(t.device)).movedim(member.dim, 0)
            alive |= slices.reshape(group.size, -1).ne(0).any(dim=1).cpu()
    return alive


@dataclass(frozen=True)
class Counts:
    params: int          # all parameters of the model (masked weights count: dense storage keeps them)
    nonzeros: int        # parameters that are not exactly zero
    macs: int            # multiply-accumulates per image of the dense computation (what dense kernels do)
    macs_nonzero: int    # theoretical: only the multiplications by non-zero weights


@dataclass(frozen=True)
class MacLayout:
    """Where a model's multiply-accumulates happen on one input: the same for every pruned copy."""

    positions: dict[str, int]  # conv/linear layer -> output elements per weight row, per image (H_out·W_out, tokens)
    fixed: int                 # MACs that do not involve weights (attention's Q·Kᵀ and probs·V)


def mac_layout(model: nn.Module, x: Tensor) -> MacLayout:
    """Trace `model` on one input (1, C, H, W) and note each weight's output positions.

    A conv or linear layer does positions · (its weight's size) MACs; only positions · (non-zero weights) of
    them multiply something other than zero. Attention's products cost 2 · T² · (inner width).
    """
    t = trace.run(model, x, keep_inputs=False)
    modules = dict(model.named_modules())
    positions: dict[str, int] = {}
    fixed = 0
    for record in t.records:
        name = record.name.split(":")[0]  # a layer called twice adds up
        module, out = modules.get(name), record.output
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            positions[name] = positions.get(name, 0) + out.numel() // out.shape[0] // module.weight.shape[0]
        elif isinstance(module, Attention):
            fixed += 2 * out.shape[1] ** 2 * (module.qkv.weight.shape[0] // 3)
        else:
            fixed += complexity.layer_macs(record)
    return MacLayout(positions, fixed)


def counts(model: nn.Module, x: Tensor | MacLayout) -> Counts:
    """Parameter and MAC counts on one input (or its MacLayout, which pruning does not change)."""
    layout = x if isinstance(x, MacLayout) else mac_layout(model, x)
    dense = nonzero = layout.fixed
    for name, positions in layout.positions.items():
        w = model.get_submodule(name).weight
        dense += positions * w.numel()
        nonzero += positions * int((w != 0).sum())
    effective = [_effective(m, n) for m in model.modules() for n, _ in m.named_parameters(recurse=False)]
    return Counts(sum(p.numel() for p in effective), sum(int((p != 0).sum()) for p in effective), dense, nonzero)


def _effective(module: nn.Module, name: str) -> Tensor:
    """The tensor the forward uses: `weight` for `weight_orig` under a pruning mask."""
    return getattr(module, name[:-5]) if name.endswith("_orig") else getattr(module, name)


def weight_map(weight: Tensor) -> Tensor:
    """A weight tensor as one 2-D picture, pruned (exactly 0) weights as NaN.

    Conv (C_out, C_in, k, k) -> (C_out · k, C_in · k): one row of k×k kernels per output filter.
    Linear (out, in) as it is. Anything else: flattened to one row.
    """
    w = weight.detach().float().cpu()
    if w.dim() == 4:
        c_out, c_in, kh, kw = w.shape
        w = w.permute(0, 2, 1, 3).reshape(c_out * kh, c_in * kw)  # (C_out·k, C_in·k)
    elif w.dim() != 2:
        w = w.reshape(1, -1)
    return w.masked_fill(w == 0, float("nan"))


# --- Accuracy, shrink, BatchNorm, latency --------------------------------------------------------------------


def measure(model: nn.Module, method: str, amount: float, dataset: EvalSet, scope: str = "layer",
            only: str | None = None) -> evaluate.Accuracy:
    """Accuracy on `dataset` of the pruned model the lesson shows (`prune`: masks on a private copy), measured
    now; at amount 0, of `model` itself (cached by core/evaluate). Kept measurements: measured.py."""
    _check(method, amount, scope)
    if amount == 0:
        return evaluate.accuracy(model, dataset)
    return evaluate.uncached_accuracy(prune(model, method, amount, scope, only), dataset)


def sensitivity_layers(model: nn.Module, method: str) -> tuple[str, ...]:
    """What the per-layer sensitivity prunes one at a time: unit groups (structured) or conv/linear layers."""
    return structured_layers(model) if METHODS[choice(method, METHODS, "pruning method")].structured \
        else prunable_layers(model)


def baked(pruned: nn.Module) -> nn.Module:
    """The pruned copy with its masks multiplied into plain weights (no per-call hooks), in the model's layout."""
    layout = _layout(pruned)
    for module in pruned.modules():
        for tensor in [b[:-5] for b, _ in module.named_buffers(recurse=False) if b.endswith("_mask")]:
            torch_prune.remove(module, tensor)
    return pruned.to(memory_format=layout)


def structured_layers(model: nn.Module) -> tuple[str, ...]:
    return tuple(g.name for g in unit_groups(model))


class PrunedHeadsAttention(Attention):
    """Attention with fewer heads than width / head size: what `shrink` turns a head-pruned layer into."""

    head_dim: int

    def forward(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        h, d = self.heads, self.head_dim
        q, k, v = self.qkv(x).view(B, T, 3, h, d).permute(2, 0, 3, 1, 4)  # each (B, h, T, d)
        attn = self.probs((q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1))  # (B, h, T, T)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, T, h * d))


def shrink(pruned: nn.Module) -> nn.Module:
    """A physically smaller model: every unit whose weights are all zero in `pruned` is cut out (its filter,
    BatchNorm channel, the next layer's input columns). Same outputs, fewer MACs."""
    small = baked(private_copy(pruned))
    layout = _layout(small)
    for group in unit_groups(small):
        keep = _alive(small, group)
        if keep.all():
            continue
        for member in group.members:
            module = small.get_submodule(member.module)
            t = getattr(module, member.tensor)
            kept = member.index[keep].flatten().sort().values  # in the tensor's own order (qkv: q, k, v blocks)
            cut = t.detach().index_select(member.dim, kept.to(t.device)).contiguous()
            if isinstance(t, nn.Parameter):
                setattr(module, member.tensor, nn.Parameter(cut, requires_grad=False))
            else:
                setattr(module, member.tensor, cut)
        if group.unit == "head":
            attn = small.get_submodule(group.name)
            head_dim = group.members[0].index.shape[1] // 3  # qkv rows per head: q, k and v, d each
            attn.__class__ = PrunedHeadsAttention  # same parameters, a forward that does not assume heads·d = width
            attn.heads, attn.head_dim = int(keep.sum()), head_dim
    for module in small.modules():
        _fix_sizes(module)
    with _trace_lock:
        _groups.pop(small, None)  # its structure changed: the groups it kept from `pruned` no longer fit
    return small.to(memory_format=layout)


def _fix_sizes(module: nn.Module) -> None:
    """Bring a module's size attributes in line with its (cut) tensors."""
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        module.out_channels = module.weight.shape[0]
        if depthwise:
            module.groups = module.out_channels
        module.in_channels = module.weight.shape[1] * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.num_features = module.running_mean.shape[0]


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> nn.Module:
    """A copy whose BatchNorm running statistics are re-estimated on `batches` (equal-weight average over
    all of them, torch's momentum=None), everything else unchanged. Returns the copy in eval mode."""
    fixed = private_copy(model)
    norms = [m for m in fixed.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise InputError("this model has no BatchNorm layers: there are no running statistics to re-estimate.")
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every batch seen
        m.train()
    dev = trace.device_of(fixed)
    with torch.no_grad():
        for batch in batches:
            fixed(batch.to(dev))
    return fixed.eval()


def forward(model: nn.Module, x: Tensor) -> Callable[[], None]:
    """One timed run: a forward pass of `model` on `x`, finished (CUDA kernels are asynchronous)."""
    x = x.to(trace.device_of(model))

    def run() -> None:
        with torch.inference_mode():
            model(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
    return run


@dataclass(frozen=True)
class Speed:
    """What pruning buys in time: the dense model against the one the pruning leaves."""

    batch: int
    dense: evaluate.Timing
    pruned: evaluate.Timing       # the masked copy (unstructured), or the shrunk model (structured)
    dense_counts: Counts | None = None   # structured only: the counts of the dense and of the shrunk model
    shrunk_counts: Counts | None = None

    @property
    def speedup(self) -> float:
        """Median dense time over median pruned time."""
        return self.dense.median / self.pruned.median


def speed(model: nn.Module, pruned: nn.Module, x: Tensor, structured: bool) -> Speed:
    """Latency on the batch `x` of `model` and of what `pruned` becomes, timed interleaved (evaluate.interleaved_ms):
    `pruned` itself when the zeros are scattered (dense kernels multiply by them all the same), else its
    `shrink`ed, physically smaller model."""
    if not structured:
        t = evaluate.interleaved_ms({"dense": forward(model, x), "pruned": forward(pruned, x)})
        return Speed(len(x), t["dense"], t["pruned"])
    small = shrink(pruned)
    t = evaluate.interleaved_ms({"dense": forward(model, x), "pruned": forward(small, x)})
    return Speed(len(x), t["dense"], t["pruned"], counts(model, x[:1]), counts(small, x[:1]))

"""Run a model on an input and record what every layer did: a Trace of LayerRecords.

Works on any nn.Module. Layer kinds come from isinstance checks, and attention modules of other libraries
from their structure (attention_layout); a module of an unknown type still gets a record, with kind
"other". Attention probabilities, (B, heads, T, T), come from whichever the layout offers:

    a hook point     a child named `probs` (our ViT, an nn.Identity) or `attn_drop` (timm, unfused)
    returned         the module's second output: Hugging Face ViT/DeiT attention with eager attention
    recomputed       nn.MultiheadAttention: its own forward called again with need_weights=True,
                     average_attn_weights=False (and no hooks), so the caller's call and output stay as they were

Hooks live only inside `recording`, and a hooked forward holds the model's lock, so two sessions
tracing one shared model never see each other's records.
"""

from __future__ import annotations

import copy
import functools
import inspect
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from explorer.core.architectures import Attention
from explorer.errors import InputError, choice

KINDS: tuple[tuple[tuple[type[nn.Module], ...], str], ...] = (
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d), "conv"),
    ((nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm), "norm"),
    ((Attention, nn.MultiheadAttention), "attention"),
    ((nn.Linear, nn.Bilinear), "linear"),
    ((nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
      nn.ELU, nn.Softmax, nn.Mish, nn.PReLU), "activation"),
    ((nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool1d, nn.AvgPool1d), "pool"),
    ((nn.Embedding,), "embedding"),
)
PROBE_NAMES = ("probs", "attn_drop")  # children whose output is an attention module's softmax
HEAD_COUNTS = ("heads", "num_heads", "num_attention_heads")  # ours; timm and torch; Hugging Face
# Three nn.Linear children that make Q, K and V: Hugging Face ViT, DeiT and CLIP (transformers 5); ViTSelfAttention (4)
SEPARATE_PROJECTIONS = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))


@dataclass(frozen=True)
class LayerRecord:
    name: str                    # dotted module path, "features.0"; a repeated call adds ":1", ":2", ...
    kind: str                    # "conv" | "norm" | "attention" | "linear" | "activation" | "pool" | ... | "other"
    module_type: str             # "Conv2d"
    input: Tensor | None         # first tensor input, detached, on CPU (None when not kept)
    output: Tensor               # first tensor output, detached, on CPU
    params: dict[str, Tensor]    # this module's own parameters, as used in this run
    buffers: dict[str, Tensor]   # its own buffers (BatchNorm's running statistics)
    extras: dict[str, Tensor] = field(default_factory=dict)  # {"probs": (B, heads, T, T)} for attention

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return None if self.input is None else tuple(self.input.shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(self.output.shape)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.params.values())


@dataclass(frozen=True)
class Trace:
    records: tuple[LayerRecord, ...]
    logits: Tensor  # (B, classes) on CPU

    def __getitem__(self, name: str) -> LayerRecord:
        return self._by_name[choice(name, self._by_name, "layer")]

    def __iter__(self) -> Iterator[LayerRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.records)

    def of_kind(self, kind: str) -> tuple[LayerRecord, ...]:
        return tuple(r for r in self.records if r.kind == kind)

    @functools.cached_property
    def _by_name(self) -> dict[str, LayerRecord]:
        return {r.name: r for r in self.records}


def kind_of(module: nn.Module) -> str:
    declared = getattr(module, "explorer_kind", None)  # a wrapper that knows its layers' kinds (byo.OnnxNode)
    if isinstance(declared, str):
        return declared
    for types, kind in KINDS:
        if isinstance(module, types):
            return kind
    return "other" if attention_layout(module) is None else "attention"


def attention_layout(module: nn.Module) -> str | None:
    """How an attention module makes Q, K and V, recognised by its structure; None for a module that is not one.

    "multihead": nn.MultiheadAttention. "packed": one Linear named qkv (ours, timm), with a head count or a
    probability hook point. "separate": three Linears (see SEPARATE_PROJECTIONS) and a head count (Hugging Face).
    """
    if isinstance(module, nn.MultiheadAttention):
        return "multihead"
    if isinstance(getattr(module, "qkv", None), nn.Linear) and (_probe(module) is not None
                                                                or head_count(module) is not None):
        return "packed"
    if head_count(module) is not None and separate_projections(module) is not None:
        return "separate"
    return None


def head_count(module: nn.Module) -> int | None:
    """The number of heads an attention module declares (an int attribute named as in HEAD_COUNTS), or None."""
    return next((value for value in (getattr(module, n, None) for n in HEAD_COUNTS)
                 if isinstance(value, int) and not isinstance(value, bool)), None)


def separate_projections(module: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear] | None:
    """The (Q, K, V) Linears of an attention module that has three of them (SEPARATE_PROJECTIONS), or None."""
    for names in SEPARATE_PROJECTIONS:
        layers = tuple(getattr(module, n, None) for n in names)
        if all(isinstance(layer, nn.Linear) for layer in layers):
            return layers
    return None


def default_names(model: nn.Module) -> list[str]:
    """Leaf modules plus attention modules, minus the attention hook points (recorded as extras)."""
    return [name for name, _, _ in _default_layers(model)]


def _default_layers(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(name, module, kind) of the default layers, in one walk over the modules."""
    layers, probes = [], set()
    for name, module in model.named_modules():
        kind = kind_of(module)
        if kind == "attention":
            probe = _probe(module)
            if probe is not None:
                probes.add(probe)
            layers.append((name, module, kind))
        elif name and not module._modules and module not in probes:
            layers.append((name, module, kind))
    return layers


def run(model: nn.Module, x: Tensor, names: Sequence[str] | None = None, keep_inputs: bool = True) -> Trace:
    """Run `model` on `x` and record the named modules (default: every layer, see default_names).

    `names` and `keep_inputs=False` bound the memory kept. The model is not changed; its hooks are
    removed on exit, even when the forward raises.
    """
    if not isinstance(model, nn.Module) and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module  # a zoo.ZooModel
    if not isinstance(model, nn.Module):
        raise InputError(f"trace needs a torch nn.Module, got {type(model).__name__}.")
    x = check_input(x)
    x = x.to(device_of(model))
    layers = _default_layers(model) if names is None else _named_layers(model, names)
    with model_lock(model), torch.no_grad():
        logits, records, altered = _hooked_forward(model, x, layers, keep_inputs, clone=False)
        if altered:  # an in-place op (ReLU(inplace=True), `out += identity`) changed a recorded tensor
            logits, records, _ = _hooked_forward(model, x, layers, keep_inputs, clone=True)
    return Trace(tuple(records), _first_tensor(logits).detach().cpu())


def check_input(x: object) -> Tensor:
    """A floating-point tensor with a batch dimension and only finite values, or an InputError."""
    if not isinstance(x, Tensor):
        raise InputError(f"the model input must be a torch tensor, got {type(x).__name__}; "
                         "use explorer.core.images.to_input to turn an image into one.")
    if not x.is_floating_point():
        raise InputError(f"the model input must hold floating-point values, got {x.dtype}.")
    if x.dim() < 2 or x.shape[0] == 0:
        raise InputError(f"the model input needs a batch dimension first, got shape {tuple(x.shape)}.")
    if not torch.isfinite(x).all():
        raise InputError("the model input contains NaN or infinite values.")
    return x


class _Recorder:
    """Hook callbacks and what they collect during one forward pass."""

    def __init__(self, keep_inputs: bool, clone: bool):
        self.keep_inputs, self.clone = keep_inputs, clone
        self.slots: list[LayerRecord | None] = []  # in the order modules were entered
        self.versions: list[tuple[Tensor, int]] = []  # recorded tensors and their version counters
        self.calls: dict[str, int] = {}
        self.probs: dict[str, Tensor] = {}

    @property
    def records(self) -> list[LayerRecord]:
        return [r for r in self.slots if r is not None]

    def altered(self) -> bool:
        """Whether an in-place op changed a recorded tensor after it was recorded."""
        return any(t._version != v for t, v in self.versions)

    def reserve(self, starts: list[int], module: nn.Module, args: tuple) -> None:
        starts.append(len(self.slots))
        self.slots.append(None)

    def keep_probs(self, name: str, module: nn.Module, args: tuple, output: Tensor) -> None:
        self.probs[name] = self._grab(output)

    def keep_returned(self, name: str, module: nn.Module, args: tuple, output: object) -> None:
        if isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], Tensor):
            self.probs[name] = self._grab(output[1])  # None (not kept) from a fused kernel, such as sdpa

    def keep_recomputed(self, name: str, module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        call = _forward_signature(type(module)).bind(module, *args, **kwargs)
        call.arguments.update(need_weights=True, average_attn_weights=False)
        self.probs[name] = self._grab(type(module).forward(*call.args, **call.kwargs)[1])  # forward itself: no hooks

    def record(self, name: str, kind: str, starts: list[int] | None, module: nn.Module, args: tuple, kwargs: dict,
               output: object) -> None:
        self.calls[name] = self.calls.get(name, -1) + 1
        label = name if self.calls[name] == 0 else f"{name}:{self.calls[name]}"
        inp = _first_tensor(args) if args else _first_tensor(tuple(kwargs.values()))
        extras = {"probs": self.probs.pop(name)} if name in self.probs else {}
        record = LayerRecord(
            name=label, kind=kind, module_type=type(module).__name__,
            input=self._grab(inp) if self.keep_inputs and inp is not None else None,
            output=self._grab(_first_tensor(output)),
            params={k: p.detach().cpu() for k, p in module._parameters.items() if p is not None},
            buffers={k: b.detach().cpu() for k, b in module._buffers.items() if b is not None},
            extras=extras)
        if starts is None:
            self.slots.append(record)
        else:
            self.slots[starts.pop()] = record

    def _grab(self, t: Tensor) -> Tensor:
        kept = t.detach().clone().cpu() if self.clone else t.detach().cpu()
        self.versions.append((kept, kept._version))
        return kept


def _named_layers(model: nn.Module, names: Sequence[str]) -> list[tuple[str, nn.Module, str]]:
    modules = dict(model.named_modules())
    return [(name, modules[choice(name, modules, "module")], kind_of(modules[name])) for name in names]


@contextmanager
def recording(model: nn.Module, names: Sequence[str], keep_inputs: bool = True,
              clone: bool = False) -> Iterator[_Recorder]:
    """Record the named modules while the block runs; every hook is removed on exit, even on error."""
    with _recording(_named_layers(model, names), keep_inputs, clone) as recorder:
        yield recorder


@contextmanager
def _recording(layers: Sequence[tuple[str, nn.Module, str]], keep_inputs: bool, clone: bool) -> Iterator[_Recorder]:
    recorder = _Recorder(keep_inputs, clone)
    with ExitStack() as stack:
        for name, module, kind in layers:
            starts: list[int] | None = None  # a leaf's record is made as it ends: nothing inside it comes first
            if module._modules:  # a container: reserve its place when it starts, before its children's records
                starts = []  # a stack: the slot reserved by each call still running
                stack.enter_context(module.register_forward_pre_hook(functools.partial(recorder.reserve, starts)))
            if kind == "attention":  # registered before the record hook, which takes what it keeps
                stack.enter_context(_probs_hook(recorder, name, module))
            hook = functools.partial(recorder.record, name, kind, starts)
            stack.enter_context(module.register_forward_hook(hook, with_kwargs=True))
        yield recorder


def _probs_hook(recorder: _Recorder, name: str, module: nn.Module) -> torch.utils.hooks.RemovableHandle:
    """The hook that keeps an attention module's probabilities (see the module docstring for the three ways)."""
    probe = _probe(module)
    if probe is not None:
        return probe.register_forward_hook(functools.partial(recorder.keep_probs, name))
    if isinstance(module, nn.MultiheadAttention):
        return module.register_forward_hook(functools.partial(recorder.keep_recomputed, name), with_kwargs=True)
    return module.register_forward_hook(functools.partial(recorder.keep_returned, name))


@functools.lru_cache(maxsize=64)  # one entry per attention class
def _forward_signature(cls: type[nn.Module]) -> inspect.Signature:
    return inspect.signature(cls.forward)


def _hooked_forward(model: nn.Module, x: Tensor, layers: Sequence[tuple[str, nn.Module, str]], keep_inputs: bool,
                    clone: bool) -> tuple[object, list[LayerRecord], bool]:
    with _recording(layers, keep_inputs, clone) as recorder:
        logits = model(x)
    return logits, recorder.records, recorder.altered()


def _probe(module: nn.Module) -> nn.Module | None:
    for p in PROBE_NAMES:
        child = getattr(module, p, None)
        if isinstance(child, nn.Module):
            return child
    return None


def _first_tensor(value: object) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((t for t in map(_first_tensor, value) if t is not None), None)
    if isinstance(value, dict):
        return _first_tensor(tuple(value.values()))
    return None


def device_of(model: nn.Module) -> torch.device:
    """Where the model's tensors live (the CPU for a model without any)."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


_locks: weakref.WeakKeyDictionary[nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def model_lock(model: nn.Module) -> threading.Lock:
    """The lock a hooked forward of `model` holds (see `run`); hold it to add hooks of your own, so that no other
    session's forward fires them."""
    with _locks_guard:
        if model not in _locks:
            _locks[model] = threading.Lock()
        return _locks[model]


def private_copy(model: nn.Module) -> nn.Module:
    """A deep copy of a shared model, for a lesson to change (prune, quantize, randomise): taken under the model's
    trace lock, so never mid-way through another session's hooked forward, and without forward hooks other than a
    pruned copy's masks (torch.nn.utils.prune keeps them as hooks: they are that copy's weights, not a trace)."""
    with model_lock(model):
        duplicate = copy.deepcopy(model)
    for module in duplicate.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks, module._forward_hooks_with_kwargs,
                      module._forward_pre_hooks_with_kwargs, module._forward_hooks_always_called):
            for key in [k for k, hook in hooks.items() if not isinstance(hook, torch_prune.BasePruningMethod)]:
                del hooks[key]
    return duplicate

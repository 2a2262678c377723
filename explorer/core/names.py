"""Names a student can read for a model's layers, from the module's type and shape.

"features.1.conv.0.0" says where a layer sits in the code; "depthwise conv 3×3, 32 channels" says what it does.
`readable_name` gives the second from the module alone (its class and its shape attributes, never its name);
`labelled_name` puts it first and the module path after it, in brackets, as the overview and the lessons show it.
A module of a type not in the table is named by its class, lower case.
"""

from __future__ import annotations

from torch import nn

from explorer.core.trace import HEAD_COUNTS


def _pair(value) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _size(value) -> str:
    """(3, 3) -> '3×3'; 3 -> '3×3'."""
    return "×".join(str(v) for v in _pair(value))


def _conv(m: nn.Conv2d) -> str:
    kernel = _size(m.kernel_size)
    if m.groups > 1 and m.groups == m.in_channels:  # one kernel per input channel
        what = f"depthwise conv {kernel}, {m.in_channels}→{m.out_channels}" if m.out_channels != m.in_channels \
            else f"depthwise conv {kernel}, {m.in_channels} channels"
    elif m.groups > 1:
        what = f"grouped conv {kernel}, {m.in_channels}→{m.out_channels}, {m.groups} groups"
    elif all(k == 1 for k in _pair(m.kernel_size)):
        what = f"pointwise conv 1×1, {m.in_channels}→{m.out_channels}"
    else:
        what = f"conv {kernel}, {m.in_channels}→{m.out_channels}"
    stride = _pair(m.stride)
    return what + (f", stride {stride[0]}" if stride[0] == stride[1] != 1 else
                   f", stride {_size(stride)}" if stride != (1, 1) else "")


def _pool(m: nn.Module, kind: str) -> str:
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        size = _pair(m.output_size)
        return f"global {kind} pool" if size == (1, 1) else f"adaptive {kind} pool to {_size(size)}"
    return f"{kind} pool {_size(m.kernel_size)}"


def _attention(m: nn.Module) -> str:
    heads = next((getattr(m, name) for name in HEAD_COUNTS if isinstance(getattr(m, name, None), int)), None)
    return "self-attention" + (f", {heads} head{'s' * (heads != 1)}" if heads else "")


# (module types, how to name one): the first row whose types match names the module
NAMERS: tuple[tuple[tuple[type[nn.Module], ...], object], ...] = (
    ((nn.Conv2d,), _conv),
    ((nn.Conv1d,), lambda m: f"conv1d {m.kernel_size[0]}, {m.in_channels}→{m.out_channels}"),
    ((nn.BatchNorm1d, nn.BatchNorm2d), lambda m: f"batch norm, {m.num_features} channels"),
    ((nn.LayerNorm,), lambda m: f"layer norm, {m.normalized_shape[-1]} features"),
    ((nn.GroupNorm,), lambda m: f"group norm, {m.num_channels} channels in {m.num_groups} groups"),
    ((nn.Linear,), lambda m: f"linear {m.in_features}→{m.out_features}"),
    ((nn.MultiheadAttention,), _attention),
    ((nn.MaxPool2d, nn.AdaptiveMaxPool2d), lambda m: _pool(m, "max")),
    ((nn.AvgPool2d, nn.AdaptiveAvgPool2d), lambda m: _pool(m, "average")),
    ((nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh), lambda m: type(m).__name__),
    ((nn.Flatten,), lambda m: "flatten"),
    ((nn.Dropout,), lambda m: f"dropout (p = {m.p:g}; off at inference)"),
    ((nn.Identity,), lambda m: "identity"),
)


def readable_name(module: nn.Module) -> str:
    """What a module does, in a few words: 'conv 3×3, 32→16', 'depthwise conv 3×3, 96 channels, stride 2'."""
    for types, name in NAMERS:
        if isinstance(module, types):
            return name(module)
    if any(hasattr(module, count) for count in HEAD_COUNTS):  # our ViT's Attention, timm's, Hugging Face's
        return _attention(module)
    return type(module).__name__.lower()


def labelled_name(model: nn.Module, record_name: str) -> str:
    """'conv 3×3, 32→16 (features.1.conv.0.0)': the readable name first, the module path in brackets. A repeated
    call of one module ("blocks.0:1", see explorer.core.trace) is named after its module."""
    return f"{readable_name(model.get_submodule(record_name.split(':')[0]))} ({record_name})"

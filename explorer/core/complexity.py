"""Multiply-accumulates and activation memory per layer, read off a Trace.

MACs are per input image: a conv output element costs (C_in / groups) · k_h · k_w MACs, a linear
output element costs in_features, self-attention costs 2 · T² · C (Q·Kᵀ and probs·V). Norms,
activations and pooling do no multiply-accumulates in this count.
"""

from __future__ import annotations

import math

from torch import nn

from explorer.core.trace import LayerRecord, Trace


def layer_macs(record: LayerRecord) -> int:
    """Multiply-accumulates of one layer call, per image."""
    out = record.output
    batch = out.shape[0] if out.dim() else 1
    if record.kind == "conv":
        weight = record.params["weight"]  # (C_out, C_in / groups, *kernel)
        return out.numel() // batch * math.prod(weight.shape[1:])
    if record.kind == "linear" and "weight" in record.params:
        return out.numel() // batch * record.params["weight"].shape[-1]
    if record.kind == "attention" and out.dim() == 3:
        tokens, width = out.shape[1], out.shape[2]
        own = 4 * tokens * width * width if record.module_type == nn.MultiheadAttention.__name__ else 0
        return 2 * tokens * tokens * width + own  # MultiheadAttention's projections are not child calls
    return 0


def activation_bytes(record: LayerRecord) -> int:
    """Memory of one layer's output, per image."""
    out = record.output
    return out.numel() * out.element_size() // (out.shape[0] if out.dim() else 1)


def total_macs(trace: Trace) -> int:
    return sum(layer_macs(r) for r in trace.records)

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


# Why layers of these kinds show 0 MACs
ZERO_MAC_KINDS = {
    "activation": "0 MACs: an activation applies a function to each value (ReLU compares with 0); this count has "
                  "only multiply-accumulates",
    "pool": "0 MACs: a pooling takes the largest value or the mean of each window, comparisons and additions that "
            "this count leaves out",
}


def cost_note(record: LayerRecord, trace: Trace) -> str:
    """Why a layer shows 0 MACs or 0 parameters in these counts ('' when it shows neither, or nothing needs saying).

    MACs here count only convolutions, linear layers and attention's two matrix products (`layer_macs`);
    parameters are a module's own (`LayerRecord.n_params`), so a module whose weights sit in child modules
    shows 0, and its children are listed as layers of their own.
    """
    notes = []
    children = [r for r in trace.records if r.name.startswith(record.name + ".")]
    if record.n_params == 0 and (inside := sum(r.n_params for r in children)):
        notes.append(f"0 parameters of its own: its {inside:,} parameters are in "
                     f"{', '.join(r.name for r in children if r.n_params)}, listed as layers of their own")
    if record.kind == "attention" and layer_macs(record) and children:
        notes.append("its MACs are the two matrix products Q·Kᵀ and weights·V (2·T²·C); the projections are "
                     "counted in their own layers")
    if layer_macs(record) == 0 and record.kind == "norm":
        batch = record.module_type.startswith("BatchNorm")
        notes.append("0 MACs: at inference a BatchNorm is a fixed scale and shift per channel, which can be folded "
                     "into the convolution before it; this count leaves it out" if batch else
                     "0 MACs: a normalization computes means, variances, a scale and a shift per value; this count "
                     "has only convolutions, linear layers and attention")
    elif layer_macs(record) == 0 and record.kind in ZERO_MAC_KINDS:
        notes.append(ZERO_MAC_KINDS[record.kind])
    return "; ".join(notes)

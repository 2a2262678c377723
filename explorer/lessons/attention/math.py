"""Self-attention in a vision transformer, one head at a time.

One head h of a pre-LayerNorm block, for the block's input x (T tokens × D features):

    x̂ = LayerNorm(x),   Q = x̂ W_Q,h + b_Q,h,   K = x̂ W_K,h + b_K,h,   V = x̂ W_V,h + b_V,h   (T × d each, d = D / heads)
    P = softmax(Q Kᵀ / (√d · τ))   row by row: row i is how much token i takes from every token
    out_h = P V                     (T × d); the attention output is [out_1 … out_heads] W_Oᵀ + b_O

τ is a teaching temperature: τ = 1 is the model's own attention.

Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", 2020): fuse the heads of
each layer (mean, max or min), add the identity for the residual connection, renormalize each row, and
multiply the layers' matrices from the first to the last: rollout = Â_L · … · Â_1 with Â = (A + I) / 2 row-
normalized. The discard ratio follows Gildenblat's vit-explain (vit_rollout.py): in each fused matrix,
flattened, the indices of the int(ratio · T²) smallest entries are taken, index 0 is removed from them so that
the class token's attention to itself, entry (0, 0), is always kept, and the rest are set to 0 before adding
the identity. vit-explain then divides by a.sum(dim=-1) broadcast along the columns; here each row is divided by
its own sum, as the rollout above asks, so that rows sum to 1 (without discarding the two agree).

Attention distance (Dosovitskiy et al., "An Image is Worth 16x16 Words", 2021, Fig. 7; Raghu et al., "Do
Vision Transformers See Like Convolutional Neural Networks?", 2021): for each head, the distance in pixels
between a query patch's centre and the centres of the patches it attends to, weighted by attention over
the patches (the class token has no position and is left out; the weights are renormalized over the
patches), averaged over the query patches.

head_step reads any attention layout core.trace recognises: one packed qkv projection (ours, timm), separate
q/k/v projections (Hugging Face ViT and DeiT), nn.MultiheadAttention (QKV_WEIGHTS).

Tests (tests/lessons/test_attention_math.py) check head_step against nn.MultiheadAttention with the same
weights and against NumPy, its recombined heads against the model's own attention output, rollout against a
NumPy transcription of vit-explain's rule, and attention_distance and position_similarity against NumPy; what
the lesson reads off them (maps_with_mean, query_weights, rollout_maps, distance_summary, position_mosaic,
inkiest_token) against NumPy too. tests/lessons/test_attention_layouts.py checks the traced probabilities and
every step of head_step against each layout's own module: ours, timm-style, Hugging Face ViT and DeiT, and
nn.MultiheadAttention (batch first or not, alone or in nn.TransformerEncoderLayer).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from explorer.core.trace import LayerRecord, Trace, attention_layout, head_count, kind_of, separate_projections
from explorer.errors import InputError, choice

HEAD_FUSIONS = {"mean": lambda a: a.mean(dim=0), "max": lambda a: a.amax(dim=0), "min": lambda a: a.amin(dim=0)}
ATTENTION_CHILDREN = ("attn", "self_attn", "attention")   # timm and ours, torch's TransformerEncoderLayer, HF
PRE_NORMS = ("norm1", "ln_1", "layernorm_before")         # timm and ours, OpenAI CLIP, HF ViT
PREFIX_TOKENS = (1, 0, 2, 5)  # class token; none; class + distillation token; class + 4 registers


@dataclass(frozen=True)
class PatchGrid:
    """Where the patch tokens sit: tokens first.. are the patches, row by row, each `patch` px square."""

    first: int      # index of the first patch token (1 after a class token)
    rows: int
    cols: int
    patch: float    # side of one patch in input pixels

    @property
    def n(self) -> int:
        return self.rows * self.cols

    def centres_px(self) -> Tensor:
        """(n, 2) patch centres (x, y) in pixels, row by row."""
        r, c = torch.meshgrid(torch.arange(self.rows), torch.arange(self.cols), indexing="ij")
        return torch.stack([c.flatten(), r.flatten()], dim=1).double().add(0.5).mul(self.patch)

    def token(self, row: int, col: int) -> int:
        return self.first + row * self.cols + col

    def cell(self, token: int) -> tuple[int, int] | None:
        """(row, col) of a patch token; None for a token that is not a patch (the class token)."""
        i = token - self.first
        return divmod(i, self.cols) if 0 <= i < self.n else None


@dataclass(frozen=True)
class HeadStep:
    """One head's computation for one input, every intermediate kept (batch item 0)."""

    x: Tensor       # (T, D) the block's input, the residual stream
    normed: Tensor  # (T, D) LayerNorm(x): what the attention reads (x itself when the block has no pre-norm)
    q: Tensor       # (T, d)
    k: Tensor       # (T, d)
    v: Tensor       # (T, d)
    scores: Tensor  # (T, T) Q Kᵀ
    scaled: Tensor  # (T, T) Q Kᵀ / √d / τ: what the softmax takes
    probs: Tensor   # (T, T) softmax of each row of `scaled`
    out: Tensor     # (T, d) probs @ v
    head: int
    scale: float    # 1 / √d as the model uses it
    temperature: float


def attention_records(trace: Trace) -> tuple[str, ...]:
    """Names of the trace's attention records, in the order they ran."""
    return tuple(r.name for r in trace.of_kind("attention"))


def attention_maps(trace: Trace) -> Tensor:
    """(layers, heads, tokens, tokens): every attention layer's probabilities for batch item 0.

    InputError when the model has no attention layers, or when they do not expose their probabilities.
    """
    records = trace.of_kind("attention")
    if not records:
        raise InputError("This model has no attention layers, so sections 1 to 5 have nothing to show: they "
                         "need a vision transformer (pick mnist-vit).")
    unread = [r.name for r in records if r.extras.get("probs") is None]
    if unread:
        raise InputError(
            f"The attention probabilities of {', '.join(unread[:3])}{' …' if len(unread) > 3 else ''} cannot be "
            "read: the layer computes them inside a fused kernel (such as scaled_dot_product_attention) or does not "
            "return them. Load the model with its attention written out (timm: fused_attn=False; Hugging Face: "
            "attn_implementation=\"eager\") to see its attention here.")
    maps = [r.extras["probs"][0].float() for r in records]
    shapes = {tuple(m.shape) for m in maps}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise InputError(f"The attention layers give probabilities of shapes {sorted(shapes)}; this lesson needs "
                         "every layer to attend over the same tokens with (heads, tokens, tokens) per input.")
    return torch.stack(maps)  # (L, H, T, T)


def patch_grid(tokens: int, image_hw: tuple[int, int]) -> PatchGrid:
    """The patch layout of `tokens` tokens over an image of image_hw pixels (square patches, row by row)."""
    h, w = image_hw
    for first in PREFIX_TOKENS:
        n = tokens - first
        if n < 1:
            continue
        patch = math.sqrt(h * w / n)
        rows, cols = round(h / patch), round(w / patch)
        if rows * cols == n and math.isclose(h / rows, w / cols):
            return PatchGrid(first, rows, cols, h / rows)
    raise InputError(f"{tokens} tokens do not tile a {h}×{w} image into square patches (after 0, 1, 2 or 5 "
                     "extra tokens); this lesson can only draw attention of ViTs whose tokens are image patches.")


def query_maps(maps: Tensor, query: int, grid: PatchGrid) -> Tensor:
    """(layers, heads, rows, cols): how much token `query` attends to each patch."""
    return maps[:, :, query, grid.first:grid.first + grid.n].reshape(*maps.shape[:2], grid.rows, grid.cols)


def block_parts(block: nn.Module) -> tuple[nn.Module | None, nn.Module]:
    """(pre-norm or None, attention) of a transformer block; a bare attention module is its own block."""
    if kind_of(block) == "attention":
        return None, block
    attn = next((getattr(block, n) for n in ATTENTION_CHILDREN if isinstance(getattr(block, n, None), nn.Module)),
                None)
    if attn is None or kind_of(attn) != "attention":
        raise InputError(f"{type(block).__name__} holds no attention module named one of "
                         f"{', '.join(ATTENTION_CHILDREN)}.")
    if getattr(block, "norm_first", True) is False:  # nn.TransformerEncoderLayer's post-norm: its norm1 comes after
        return None, attn
    norm = next((getattr(block, n) for n in PRE_NORMS if isinstance(getattr(block, n, None), nn.Module)), None)
    return norm, attn


def _packed(attn: nn.Module) -> tuple[Tensor, Tensor | None]:
    return attn.qkv.weight, attn.qkv.bias


def _multihead(attn: nn.MultiheadAttention) -> tuple[Tensor, Tensor | None]:
    if attn.in_proj_weight is None:
        raise InputError("this nn.MultiheadAttention has separate key and value sizes; head_step reads self-attention, "
                         "whose query, key and value all have the model's width.")
    if attn.bias_k is not None or attn.add_zero_attn:
        raise InputError("this nn.MultiheadAttention adds key and value tokens of its own (add_bias_kv or "
                         "add_zero_attn); head_step reads attention over the input tokens alone.")
    return attn.in_proj_weight, attn.in_proj_bias


def _separate(attn: nn.Module) -> tuple[Tensor, Tensor | None]:
    layers = separate_projections(attn)
    weight = torch.cat([layer.weight for layer in layers])
    if all(layer.bias is None for layer in layers):
        return weight, None
    return weight, torch.cat([layer.weight.new_zeros(layer.out_features) if layer.bias is None else layer.bias
                              for layer in layers])


# attention_layout -> (weight (3·heads·d, D), bias): W_Q, W_K and W_V stacked, each with its heads in order, as
# nn.MultiheadAttention's in_proj_weight and timm's qkv hold them
QKV_WEIGHTS = {"packed": _packed, "multihead": _multihead, "separate": _separate}


def _qkv_projection(attn: nn.Module) -> tuple[Tensor, Tensor | None, int, float]:
    """(weight (3·heads·d, D), bias, heads, scale) of any attention layout in QKV_WEIGHTS."""
    layout = attention_layout(attn)
    heads = head_count(attn)
    if layout is None or heads is None:
        raise InputError(f"{type(attn).__name__} has no Q, K and V projections and head count that head_step can "
                         "read: one Linear named qkv (ours, timm), three named q_proj, k_proj and v_proj (Hugging "
                         "Face), or nn.MultiheadAttention.")
    weight, bias = QKV_WEIGHTS[layout](attn)
    d = weight.shape[0] // (3 * heads)
    scale = next((float(v) for v in (getattr(attn, n, None) for n in ("scale", "scaling")) if isinstance(v, float)),
                 d ** -0.5)  # the module's own, when it names one (timm, Hugging Face)
    return weight, bias, heads, scale


OUTPUT_PROJECTIONS = ("proj", "out_proj", "o_proj")  # ours and timm; nn.MultiheadAttention and CLIP; Hugging Face ViT


def output_projection(attn: nn.Module) -> nn.Linear:
    """The linear layer that mixes the concatenated heads back into D features (W_O)."""
    proj = next((p for p in (getattr(attn, n, None) for n in OUTPUT_PROJECTIONS) if isinstance(p, nn.Linear)), None)
    if proj is None:
        raise InputError(f"{type(attn).__name__} has no output projection named {', '.join(OUTPUT_PROJECTIONS)}.")
    return proj


@torch.no_grad()
def head_step(block: nn.Module, x: Tensor, head: int, temperature: float = 1.0) -> HeadStep:
    """Head `head` of `block` on x ((T, D) or (1, T, D), the block's input), every step kept, on the CPU.

    Runs the block's own LayerNorm and weights (on whatever device they live), so that at temperature 1
    the probabilities are the model's own; the model is only read, and no hook of it fires (forward itself).
    """
    norm, attn = block_parts(block)
    weight, bias, heads, scale = _qkv_projection(attn)
    if not 0 <= head < heads:
        raise InputError(f"head {head} does not exist; this layer has heads 0 to {heads - 1}.")
    x = (x[0] if x.dim() == 3 else x).detach()  # (T, D)
    t = x.shape[0]
    d = weight.shape[0] // (3 * heads)
    normed = norm.forward(x.to(weight.device)) if norm is not None else x.to(weight.device)
    qkv = nn.functional.linear(normed, weight, bias).view(t, 3, heads, d)  # packed as [Q | K | V], heads inside
    q, k, v = (qkv[:, i, head].cpu().double() for i in range(3))  # (T, d) each; double: exact teaching values
    if getattr(attn, "q_norm", None) is not None:  # timm's optional per-head query/key norms (Identity by default)
        q, k = attn.q_norm.forward(q.to(weight)).cpu().double(), attn.k_norm.forward(k.to(weight)).cpu().double()
    scores = q @ k.T  # (T, T)
    scaled, probs, out = _softmax_attention(scores, v, scale, temperature)
    return HeadStep(x.cpu().double(), normed.cpu().double(), q, k, v, scores, scaled, probs, out, head, float(scale),
                    float(temperature))


def with_temperature(step: HeadStep, temperature: float) -> HeadStep:
    """The same head at another softmax temperature: Q, K and V stay, the softmax and what follows change."""
    scaled, probs, out = _softmax_attention(step.scores, step.v, step.scale, temperature)
    return dataclasses.replace(step, scaled=scaled, probs=probs, out=out, temperature=float(temperature))


def _softmax_attention(scores: Tensor, v: Tensor, scale: float, temperature: float) -> tuple[Tensor, Tensor, Tensor]:
    """(scores · scale / τ, its softmax row by row, that times V)."""
    if not temperature > 0:
        raise InputError(f"the softmax temperature must be above 0, got {temperature}.")
    scaled = scores * scale / temperature
    probs = scaled.softmax(dim=-1)
    return scaled, probs, probs @ v


@torch.no_grad()
def combine_heads(block: nn.Module, outs: list[Tensor]) -> Tensor:
    """(T, D): the attention output, [out_1 … out_heads] W_Oᵀ + b_O, from every head's `HeadStep.out`."""
    proj = output_projection(block_parts(block)[1])
    joined = torch.cat(outs, dim=-1)  # (T, heads·d)
    return nn.functional.linear(joined, proj.weight.cpu().double(),
                                None if proj.bias is None else proj.bias.cpu().double())


def rollout(maps: Tensor, head_fusion: str = "mean", discard_ratio: float = 0.0) -> Tensor:
    """(tokens, tokens): how much each token (row) draws on each input token (column) through all layers.

    Each row sums to 1. maps: (layers, heads, tokens, tokens). The discard rule is vit-explain's, with rows
    normalized (see the module docstring).
    """
    fuse = HEAD_FUSIONS[choice(head_fusion, HEAD_FUSIONS, "head fusion")]
    if not 0 <= discard_ratio < 1:
        raise InputError(f"the discard ratio is the share of weakest attention weights dropped; it must be at least "
                         f"0 and below 1, got {discard_ratio}.")
    t = maps.shape[-1]
    eye = torch.eye(t, dtype=torch.float64)
    result = eye
    for layer in maps.double():
        fused = fuse(layer).flatten()  # (T·T,)
        weakest = fused.argsort(stable=True)[:int(fused.numel() * discard_ratio)]  # of equal ones, the first
        weakest = weakest[weakest != 0]  # entry (0, 0), the class token's attention to itself, is kept
        a = (fused.index_fill(0, weakest, 0.0).view(t, t) + eye) / 2  # the residual connection keeps each token
        a = a / a.sum(dim=-1, keepdim=True)  # rows sum to 1 again
        result = a @ result
    return result


def attention_distance(maps: Tensor, grid: PatchGrid) -> Tensor:
    """(layers, heads): mean distance in pixels from a query patch to the patches it attends to."""
    centres = grid.centres_px()
    distance = torch.cdist(centres, centres)  # (n, n) px between patch centres
    p = maps.double()[:, :, grid.first:grid.first + grid.n, grid.first:grid.first + grid.n]  # (L, H, n, n) patches only
    p = p / p.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float64).tiny)
    return (p * distance).sum(dim=-1).mean(dim=-1)


def position_similarity(pos_embed: Tensor, grid: PatchGrid) -> Tensor:
    """(n, n): cosine similarity of the learned position embeddings of every pair of patches."""
    pos = pos_embed.detach().reshape(-1, pos_embed.shape[-1]).cpu().double()  # (T, D)
    if len(pos) == grid.first + grid.n:
        pos = pos[grid.first:]  # the class token's position is not a place in the image
    if len(pos) != grid.n:
        raise InputError(f"the position embedding has {len(pos)} entries for {grid.n} patches.")
    unit = pos / pos.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return unit @ unit.T


def position_embedding(model: nn.Module) -> Tensor | None:
    """The model's learned position embedding (a parameter named pos_embed or position_embedding…), or None."""
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1] in ("pos_embed", "position_embedding", "position_embeddings"):
            return p
    for name, module in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in ("position_embedding", "position_embeddings") and isinstance(module, nn.Embedding):
            return module.weight
    return None


def patch_embedding(trace: Trace, grid: PatchGrid) -> tuple[str, Tensor] | None:
    """(record name, (n, D) one embedding per patch) of the first convolution that makes the patch grid, or None."""
    for record in trace.of_kind("conv"):
        out = record.output
        if out.dim() == 4 and tuple(out.shape[2:]) == (grid.rows, grid.cols):
            return record.name, out[0].flatten(1).T.double()  # (D, rows, cols) -> (n, D)
    return None


def block_and_input(model: nn.Module, trace: Trace, record: str) -> tuple[nn.Module, Tensor]:
    """(block, its input x for batch item 0, (T, D)) for head_step on the attention record `record` ("blocks.0.attn").

    The block is the attention module's parent when the parent holds it as its attention child, with the
    parent's pre-norm input as x; otherwise the attention module alone, with its own input as x.
    """
    path = record.split(":")[0]  # a repeated call's record "name:1" comes from the same module
    attn = model.get_submodule(path)
    parent_path = path.rpartition(".")[0]
    parent = model.get_submodule(parent_path)
    try:
        norm, found = block_parts(parent)
    except InputError:
        norm, found = None, None
    if found is attn and norm is not None:
        norm_path = next(n for n, m in parent.named_children() if m is norm)
        norm_record = f"{parent_path}.{norm_path}" if parent_path else norm_path
        if norm_record in trace.names and trace[norm_record].input is not None:
            return parent, _first_item(trace[norm_record].input, trace[record], attn)
    if trace[record].input is None:
        raise InputError(f"the trace kept no input for {record}; trace the model with keep_inputs=True.")
    return attn, _first_item(trace[record].input, trace[record], attn)


def _first_item(x: Tensor, record: LayerRecord, attn: nn.Module) -> Tensor:
    """(T, D): batch item 0 of x, which is (B, T, D), or (T, B, D) around a sequence-first nn.MultiheadAttention.

    The traced probabilities (B, heads, T, T) say which axis holds the tokens; the module's batch_first decides
    only when B = T.
    """
    if x.dim() == 2:
        return x
    probs = record.extras.get("probs")
    sequence_first = isinstance(attn, nn.MultiheadAttention) and not attn.batch_first
    if probs is not None and probs.dim() == 4 and x.shape[0] != x.shape[1]:
        sequence_first = (x.shape[0], x.shape[1]) == (probs.shape[2], probs.shape[0])
    return x[:, 0] if sequence_first else x[0]


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything the lesson shows about one model and input that does not depend on its controls."""

    records: tuple[str, ...]                   # attention records, one per layer
    maps: Tensor                               # (layers, heads, tokens, tokens)
    grid: PatchGrid
    distance_px: Tensor                        # (layers, heads) attention distance
    uniform_distance_px: float                 # the distance of a head that attends to every patch equally
    positions: Tensor | None                   # (n, n) position-embedding cosine similarity, if the model has one
    embedding: tuple[str, Tensor] | None       # (record name, (n, D)) patch embedding, if a conv makes the patches


def analyse(model: nn.Module, trace: Trace, image_hw: tuple[int, int]) -> Analysis:
    """The attention maps and what follows from them alone; InputError when the model's attention cannot be read."""
    maps = attention_maps(trace)
    grid = patch_grid(maps.shape[-1], image_hw)
    uniform = torch.full(maps.shape[-2:], 1.0 / maps.shape[-1])[None, None]  # (1, 1, T, T)
    pos = position_embedding(model)
    return Analysis(attention_records(trace), maps, grid, attention_distance(maps, grid),
                    float(attention_distance(uniform, grid)), None if pos is None else position_similarity(pos, grid),
                    patch_embedding(trace, grid))


def largest_difference(a: Tensor, b: Tensor) -> float:
    """max |a - b|: how far a recomputed quantity is from the model's own."""
    return float((a.double() - b.double()).abs().max())


def brightest_cell(picture: np.ndarray, grid: PatchGrid) -> tuple[int, int]:
    """(row, col) of the patch whose pixels have the highest mean: where the ink is, on an MNIST digit."""
    grey = torch.as_tensor(np.asarray(picture, dtype=np.float64))  # (H, W)
    side = int(round(grid.patch))
    cells = grey[:grid.rows * side, :grid.cols * side].reshape(grid.rows, side, grid.cols, side).mean(dim=(1, 3))
    return divmod(int(cells.argmax()), grid.cols)


def attention_record_for(layer: str, records: tuple[str, ...]) -> str | None:
    """The attention record that the session's `layer` names: itself, or the attention of the block it lies in
    ('blocks.2.mlp.0' -> 'blocks.2.attn'); None for a layer outside every block (the patch embedding)."""
    if layer in records:
        return layer
    for record in records:
        block = record.rpartition(".")[0]
        if block and layer.startswith(block + "."):
            return record
    return None


def maps_with_mean(maps: Tensor, query: int, grid: PatchGrid) -> Tensor:
    """(layers, heads + 1, rows, cols): query_maps of every head, then their mean over the heads."""
    per_head = query_maps(maps, query, grid)  # (L, H, rows, cols)
    return torch.cat([per_head, per_head.mean(dim=1, keepdim=True)], dim=1)


@dataclass(frozen=True)
class QueryWeights:
    """How one head splits the query's attention, its row of P (which sums to 1)."""

    largest_patch: float  # the largest weight on one patch
    on_itself: float      # the weight the query keeps on itself
    to_prefix: float      # the weight on the tokens in front of the patches (the class token), 0 without any


def query_weights(maps: Tensor, layer: int, head: int, query: int, grid: PatchGrid) -> QueryWeights:
    row = maps[layer, head, query]  # (T,)
    return QueryWeights(float(row[grid.first:grid.first + grid.n].max()), float(row[query]),
                        float(row[:grid.first].sum()))


@dataclass(frozen=True)
class RolloutMaps:
    """What reaches one query token: through all layers (rollout) and through the last layer alone."""

    rollout: Tensor     # (rows, cols) the query's row of the rollout, over the patches
    last_layer: Tensor  # (rows, cols) the query's row of the last layer's attention, mean of its heads
    to_patches: float   # the share of the query's rollout row on the patches
    to_prefix: float    # ... on the tokens in front of the patches (the class token), 0 without any


def rollout_maps(maps: Tensor, query: int, grid: PatchGrid, head_fusion: str = "mean",
                 discard_ratio: float = 0.0) -> RolloutMaps:
    rolled = rollout(maps, head_fusion, discard_ratio)[query]  # (T,)
    patches = slice(grid.first, grid.first + grid.n)
    last = maps[-1, :, query, patches].mean(dim=0)  # (n,)
    return RolloutMaps(rolled[patches].reshape(grid.rows, grid.cols), last.reshape(grid.rows, grid.cols),
                       float(rolled[patches].sum()), float(rolled[:grid.first].sum()))


@dataclass(frozen=True)
class DistanceSummary:
    """attention_distance over the layers and heads, summed up."""

    per_layer: Tensor               # (layers,) mean over the layer's heads
    most_local: tuple[int, int]     # (layer, head) of the smallest distance (the first one, on a tie)
    most_global: tuple[int, int]    # (layer, head) of the largest


def distance_summary(distance_px: Tensor) -> DistanceSummary:
    heads = distance_px.shape[1]
    return DistanceSummary(distance_px.mean(dim=1), divmod(int(distance_px.argmin()), heads),
                           divmod(int(distance_px.argmax()), heads))


def position_mosaic(positions: Tensor, grid: PatchGrid) -> Tensor:
    """(rows·(rows+1) - 1, cols·(cols+1) - 1) float32: position_similarity as one picture, the square of patch
    (r, c) at block (r, c), NaN (transparent) between the squares."""
    blocks = positions.float().reshape(grid.rows, grid.cols, grid.rows, grid.cols)  # (R, C, r, c)
    padded = nn.functional.pad(blocks, (0, 1, 0, 1), value=float("nan"))  # (R, C, r+1, c+1): a NaN gap after each
    picture = padded.permute(0, 2, 1, 3).reshape(grid.rows * (grid.rows + 1), grid.cols * (grid.cols + 1))
    return picture[:-1, :-1]  # no gap after the last square


def inkiest_token(picture: np.ndarray, grid: PatchGrid) -> int:
    """The patch token whose pixels hold the most ink (brightest_cell; a colour picture by its mean colour)."""
    picture = np.asarray(picture)
    grey = picture if picture.ndim == 2 else picture.mean(axis=2)  # (H, W)
    return grid.token(*brightest_cell(grey, grid))

"""Attention from every common ViT layout, against each module's own computation, on small random-weight models.

Layouts: ours (packed qkv, a `probs` hook point), timm's (packed qkv, `attn_drop`), Hugging Face ViT and DeiT (q_proj,
k_proj, v_proj; eager attention returns its probabilities), nn.MultiheadAttention (batch first or sequence first),
and nn.TransformerEncoderLayer (pre-norm and post-norm). For each: the traced probabilities against the module's own
(Hugging Face's output_attentions, nn.MultiheadAttention's need_weights, or its Q and K written out), every field of
head_step against the module's input, projections and output, and the lesson's other numbers on them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explorer.core import trace
from explorer.errors import InputError
from explorer.lessons.attention import math as am
from tests.lessons.test_attention_math import random_vit, randomized, with_timm_attention

IMAGE = (28, 28)
BATCH = 2  # more than one image, so that taking batch item 0 from the wrong axis shows


class MultiheadBlock(nn.Module):
    """A pre-norm block on nn.MultiheadAttention, in whatever token layout it is given."""

    def __init__(self, dim: int, heads: int, batch_first: bool):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class MultiheadViT(nn.Module):
    """A ViT whose blocks use nn.MultiheadAttention; (T, B, D) through the blocks when batch_first is False."""

    def __init__(self, batch_first: bool, dim: int = 32, depth: int = 2, heads: int = 4, patch: int = 7):
        super().__init__()
        self.batch_first = batch_first
        self.patch_embed = nn.Conv2d(1, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (28 // patch) ** 2 + 1, dim))
        self.blocks = nn.ModuleList(MultiheadBlock(dim, heads, batch_first) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, n, D)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed  # (B, T, D)
        if not self.batch_first:
            x = x.transpose(0, 1)  # (T, B, D)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0] if self.batch_first else x[0]))


class EncoderViT(nn.Module):
    """A ViT on torch's nn.TransformerEncoderLayer (which calls its attention with need_weights=False)."""

    def __init__(self, norm_first: bool, dim: int = 32, depth: int = 2, heads: int = 4, patch: int = 7):
        super().__init__()
        self.patch_embed = nn.Conv2d(1, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (28 // patch) ** 2 + 1, dim))
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True,
                                                               norm_first=norm_first) for _ in range(depth))
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(x[:, 0])


class SelfAttention4(nn.Module):
    """transformers 4's ViTSelfAttention: Linears named query, key and value, no output projection (its sibling's);
    returns (context, probabilities)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_attention_heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, hidden_states):
        b, t, dim = hidden_states.shape
        q, k, v = (layer(hidden_states).view(b, t, self.num_attention_heads, -1).transpose(1, 2)
                   for layer in (self.query, self.key, self.value))  # (B, heads, T, d)
        probs = (q @ k.transpose(-2, -1) / (dim // self.num_attention_heads) ** 0.5).softmax(dim=-1)
        return (probs @ v).transpose(1, 2).reshape(b, t, dim), probs


def hugging_face(kind: str, attn_implementation: str = "eager") -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config_class, model_class = {"vit": (transformers.ViTConfig, transformers.ViTForImageClassification),
                                 "deit": (transformers.DeiTConfig, transformers.DeiTForImageClassification)}[kind]
    config = config_class(image_size=28, patch_size=7, num_channels=1, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=64, num_labels=10,
                          attn_implementation=attn_implementation)
    return model_class(config)


@dataclass(frozen=True)
class Layout:
    build: Callable[[torch.Generator], nn.Module]
    prefix_tokens: int  # tokens in front of the patches: class token, DeiT's distillation token
    layout: str         # trace.attention_layout of its attention modules


LAYOUTS = {
    "ours": Layout(lambda rng: random_vit(rng, heads=4), 1, "packed"),
    "timm-style": Layout(lambda rng: with_timm_attention(random_vit(rng, heads=4), fused=False), 1, "packed"),
    "Hugging Face ViT": Layout(lambda rng: randomized(hugging_face("vit"), rng), 1, "separate"),
    "Hugging Face DeiT": Layout(lambda rng: randomized(hugging_face("deit"), rng), 2, "separate"),
    "MultiheadAttention, batch first": Layout(lambda rng: randomized(MultiheadViT(True), rng), 1, "multihead"),
    "MultiheadAttention, sequence first": Layout(lambda rng: randomized(MultiheadViT(False), rng), 1, "multihead"),
    "TransformerEncoderLayer, pre-norm": Layout(lambda rng: randomized(EncoderViT(True), rng), 1, "multihead"),
    "TransformerEncoderLayer, post-norm": Layout(lambda rng: randomized(EncoderViT(False), rng), 1, "multihead"),
}


def first_item(t: Tensor, attn: nn.Module) -> Tensor:
    """Batch item 0 of a (B, T, ...) tensor, or of a (T, B, ...) one around a sequence-first nn.MultiheadAttention."""
    return t[:, 0] if isinstance(attn, nn.MultiheadAttention) and not attn.batch_first else t[0]


def own_projections(attn: nn.Module, normed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Q, K and V, each (..., T, heads, d), as the module itself makes them from its input (..., T, D)."""
    layout = trace.attention_layout(attn)
    if layout == "packed":
        qkv = attn.qkv(normed)
    elif layout == "separate":  # Hugging Face's names in transformers 5, or 4
        layers = (attn.q_proj, attn.k_proj, attn.v_proj) if hasattr(attn, "q_proj") else (attn.query, attn.key,
                                                                                         attn.value)
        qkv = torch.cat([layer(normed) for layer in layers], dim=-1)
    else:  # nn.MultiheadAttention: one in_proj_weight, [W_Q; W_K; W_V]
        qkv = F.linear(normed, attn.in_proj_weight, attn.in_proj_bias)
    return qkv.unflatten(-1, (3, trace.head_count(attn), -1)).unbind(dim=-3)


def own_probabilities(model: nn.Module, x: Tensor, t: trace.Trace, record: str) -> Tensor:
    """(B, heads, T, T) the module's own probabilities, by a path other than the trace's where there is one."""
    attn = model.get_submodule(record)
    layout = trace.attention_layout(attn)
    if layout == "separate":  # Hugging Face's own API
        return model(x, output_attentions=True).attentions[am.attention_records(t).index(record)]
    inp = t[record].input
    if layout == "multihead":
        return attn(inp, inp, inp, need_weights=True, average_attn_weights=False)[1]
    q, k, _ = (p.transpose(1, 2) for p in own_projections(attn, inp))  # (B, heads, T, d)
    return (q @ k.transpose(-2, -1) * attn.scale).softmax(dim=-1)


@pytest.fixture(params=list(LAYOUTS))
def layout(request, rng) -> tuple[Layout, nn.Module, Tensor]:
    chosen = LAYOUTS[request.param]
    return chosen, chosen.build(rng).eval(), torch.randn(BATCH, 1, *IMAGE, generator=rng)


def test_attention_modules_are_recognised_by_their_structure(layout):
    chosen, model, _ = layout
    found = [m for m in model.modules() if trace.kind_of(m) == "attention"]
    assert found and {trace.attention_layout(m) for m in found} == {chosen.layout}


@torch.no_grad()
def test_traced_probabilities_match_the_modules_own(layout):
    _, model, x = layout
    t = trace.run(model, x)
    for record in am.attention_records(t):
        probs = t[record].extras["probs"]
        # the same float32 arithmetic, or Hugging Face's second forward: equal up to float32 rounding
        torch.testing.assert_close(probs, own_probabilities(model, x, t, record), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), rtol=0, atol=1e-5)
        assert probs.shape[:2] == (BATCH, 4)


def assert_within_propagated_rounding(step: am.HeadStep, probs: Tensor, v: Tensor) -> None:
    """The step's P V (float64) against the module's float32 P and V multiplied in float32, within what their
    differences carry into the product: |ΔP| |V| + |P| |ΔV|, plus float32's rounding of a product of T terms. A fixed
    tolerance does not hold on fresh random inputs: ΔP, up to 1e-5 each, adds up over the T tokens."""
    p32, v32 = probs.double(), v.double()
    tokens = probs.shape[-1]
    rounding = tokens * torch.finfo(torch.float32).eps * (p32.abs() @ v32.abs())
    bound = (step.probs - p32).abs() @ step.v.abs() + p32.abs() @ (step.v - v32).abs() + rounding
    error = (step.out - (probs @ v).double()).abs()
    assert (error <= bound).all(), f"{(error - bound).max():.3g} over the propagated bound"


@torch.no_grad()
def test_every_head_step_matches_the_modules_own_computation(layout):
    _, model, x = layout
    t = trace.run(model, x)
    maps = am.attention_maps(t)
    for layer, record in enumerate(am.attention_records(t)):
        attn = model.get_submodule(record)
        block, block_input = am.block_and_input(model, t, record)
        normed = first_item(t[record].input, attn)  # what the attention module itself was given
        q_ref, k_ref, v_ref = own_projections(attn, normed)
        steps = [am.head_step(block, block_input, h) for h in range(maps.shape[1])]
        for h, step in enumerate(steps):
            # float64 steps from float32 weights against the module's float32 values: float32 rounding of values ~1
            for name, ref in (("normed", normed), ("q", q_ref[:, h]), ("k", k_ref[:, h]), ("v", v_ref[:, h]),
                              ("probs", maps[layer, h])):
                torch.testing.assert_close(getattr(step, name).float(), ref, rtol=1e-5, atol=1e-5, msg=name)
            d = q_ref.shape[-1]
            torch.testing.assert_close(step.scores, step.q @ step.k.T, rtol=1e-12, atol=0)
            torch.testing.assert_close(step.scaled, step.scores / d ** 0.5, rtol=1e-12, atol=0)
            torch.testing.assert_close(step.out, step.probs @ step.v, rtol=1e-12, atol=0)
            assert_within_propagated_rounding(step, maps[layer, h], v_ref[:, h])
        own_output = first_item(t[record].output, attn)  # (T, D) the module's output, after its W_O
        torch.testing.assert_close(am.combine_heads(block, [s.out for s in steps]).float(), own_output, rtol=1e-4,
                                   atol=1e-5)


def test_the_lessons_other_numbers_read_every_layout(layout):
    chosen, model, x = layout
    t = trace.run(model, x[:1])
    a = am.analyse(model, t, IMAGE)
    assert a.grid == am.PatchGrid(chosen.prefix_tokens, 4, 4, 7.0)  # class (and distillation) token, 4×4 patches
    assert a.distance_px.shape == (len(a.records), 4)
    assert a.positions is not None and a.positions.shape == (16, 16)
    torch.testing.assert_close(a.positions.diagonal(), torch.ones(16, dtype=torch.float64))  # each patch with itself
    assert a.embedding is not None and a.embedding[1].shape == (16, 32)
    r = am.rollout_maps(a.maps, 0, a.grid, "max", 0.8)
    assert r.to_patches + r.to_prefix == pytest.approx(1.0, rel=1e-12)


def test_tracing_leaves_the_model_as_it_was(layout, rng):
    _, model, x = layout
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = model(x)
    t = trace.run(model, x)
    torch.testing.assert_close(t.logits, getattr(expected, "logits", expected), rtol=0, atol=0)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_hugging_face_attention_in_a_fused_kernel_says_how_to_load_it(rng):
    model = hugging_face("vit", attn_implementation="sdpa").eval()
    t = trace.run(model, torch.randn(1, 1, *IMAGE, generator=rng))
    with pytest.raises(InputError, match=r"^The attention probabilities of vit.layers.0.attention, "
                                         r"vit.layers.1.attention cannot be read: .*attn_implementation=\"eager\""):
        am.attention_maps(t)


def test_fused_timm_attention_cannot_be_read(rng):
    t = trace.run(with_timm_attention(random_vit(rng, depth=4), fused=True), torch.randn(1, 1, 28, 28, generator=rng))
    with pytest.raises(InputError, match=r"^The attention probabilities of blocks.0.attn, blocks.1.attn, "
                                         r"blocks.2.attn … cannot be read: .*fused kernel"):
        am.attention_maps(t)


def test_timm_style_attention_is_read_and_stepped_like_ours(rng):
    vit = random_vit(rng)
    timm_vit = with_timm_attention(vit, fused=False)
    x = torch.randn(1, 1, 28, 28, generator=rng)
    ours, theirs = trace.run(vit, x), trace.run(timm_vit, x)
    torch.testing.assert_close(am.attention_maps(theirs), am.attention_maps(ours))
    block, inp = am.block_and_input(timm_vit, theirs, "blocks.1.attn")
    torch.testing.assert_close(am.head_step(block, inp, 2).probs.float(), am.attention_maps(ours)[1, 2], rtol=1e-5,
                               atol=1e-6)


def test_multihead_attention_with_its_own_key_tokens_is_refused(rng):
    attn = nn.MultiheadAttention(16, 2, add_bias_kv=True, batch_first=True)
    with pytest.raises(InputError, match=r"^this nn.MultiheadAttention adds key and value tokens of its own"):
        am.head_step(attn, torch.randn(5, 16, generator=rng), 0)


def test_transformers_4_self_attention_is_read_and_stepped(rng):
    attention = randomized(SelfAttention4(32, 4), rng)
    model = nn.Sequential(nn.LayerNorm(32), attention).eval()  # as in transformers 4: the norm outside its parent
    x = torch.randn(BATCH, 17, 32, generator=rng)
    t = trace.run(model, x)
    assert am.attention_records(t) == ("1",) and trace.attention_layout(attention) == "separate"
    with torch.no_grad():
        normed = model[0](x)
        _, own = attention(normed)
        q, k, v = own_projections(attention, normed[0])
    torch.testing.assert_close(t["1"].extras["probs"], own)
    block, inp = am.block_and_input(model, t, "1")
    for h in range(4):
        step = am.head_step(block, inp, h)
        # float64 steps from float32 weights against the module's float32 values
        for name, ref in (("normed", normed[0]), ("q", q[:, h]), ("k", k[:, h]), ("v", v[:, h]), ("probs", own[0, h])):
            torch.testing.assert_close(getattr(step, name).float(), ref, rtol=1e-5, atol=1e-5, msg=name)

"""The attention lesson's numbers against independent references: nn.MultiheadAttention, NumPy, a transcription of
vit-explain's rollout, and the model itself. Other attention layouts: test_attention_layouts.py."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from explorer.core import trace, zoo
from explorer.core.architectures import Block, MnistCNN, MnistViT
from explorer.errors import InputError
from explorer.lessons.attention import math as am


def randomized(module: nn.Module, rng: torch.Generator, scale: float = 0.3) -> nn.Module:
    """The module with every parameter drawn afresh from `rng` (N(0, scale²); norm gains around 1)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            gain = name.endswith(("norm1.weight", "layernorm_before.weight"))  # a pre-norm's γ (ours, Hugging Face)
            p.copy_(torch.randn(p.shape, generator=rng) * scale + (1.0 if gain else 0.0))
    return module.eval()


def random_vit(rng: torch.Generator, dim: int = 32, depth: int = 3, heads: int = 4, patch: int = 7) -> MnistViT:
    return randomized(MnistViT(patch=patch, dim=dim, depth=depth, heads=heads), rng)


class TimmStyleAttention(nn.Module):
    """timm's Attention layout: qkv, num_heads, scale, attn_drop as the probability hook point, fused or not."""

    def __init__(self, dim: int, num_heads: int, fused: bool):
        super().__init__()
        self.num_heads, self.scale, self.fused = num_heads, (dim // num_heads) ** -0.5, fused
        self.qkv, self.attn_drop, self.proj = nn.Linear(dim, 3 * dim), nn.Dropout(0.0), nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.fused:
            out = nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            out = self.attn_drop((q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)) @ v
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


def with_timm_attention(vit: MnistViT, fused: bool) -> MnistViT:
    vit = copy.deepcopy(vit)
    for block in vit.blocks:
        timm_attn = TimmStyleAttention(block.attn.qkv.in_features, block.attn.heads, fused)
        timm_attn.load_state_dict({k: v for k, v in block.attn.state_dict().items()})
        block.attn = timm_attn
    return vit


def numpy_head(block: Block, x: np.ndarray, head: int, temperature: float) -> dict[str, np.ndarray]:
    """The pre-LN block's head `head` written out in NumPy, float64, from the module's weights."""
    w = {k: v.double().numpy() for k, v in block.state_dict().items()}
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    normed = (x - mu) / np.sqrt(var + block.norm1.eps) * w["norm1.weight"] + w["norm1.bias"]
    qkv = normed @ w["attn.qkv.weight"].T + w["attn.qkv.bias"]
    t, d_model = x.shape
    d = d_model // block.attn.heads
    q, k, v = (qkv[:, i * d_model + head * d: i * d_model + (head + 1) * d] for i in range(3))
    scaled = q @ k.T / np.sqrt(d) / temperature
    e = np.exp(scaled - scaled.max(-1, keepdims=True))
    probs = e / e.sum(-1, keepdims=True)
    return dict(normed=normed, q=q, k=k, v=v, scores=q @ k.T, probs=probs, out=probs @ v)


@pytest.mark.parametrize(("dim", "heads", "tokens"), [(16, 1, 5), (32, 4, 17), (64, 8, 50), (24, 3, 10)])
def test_head_probabilities_and_output_match_multihead_attention(dim, heads, tokens, rng):
    block = randomized(Block(dim, heads), rng)
    x = torch.randn(1, tokens, dim, generator=rng)
    steps = [am.head_step(block, x, h) for h in range(heads)]
    mha = nn.MultiheadAttention(dim, heads, batch_first=True)
    mha.load_state_dict({"in_proj_weight": block.attn.qkv.weight, "in_proj_bias": block.attn.qkv.bias,
                         "out_proj.weight": block.attn.proj.weight, "out_proj.bias": block.attn.proj.bias})
    normed = block.norm1(x)
    with torch.no_grad():
        ref_out, ref_probs = mha(normed, normed, normed, need_weights=True, average_attn_weights=False)
        exact_out, _ = copy.deepcopy(mha).double()(normed.double(), normed.double(), normed.double())
    for h, step in enumerate(steps):
        # float32 reference against float64 from the same float32 projections: ~1e-7 relative
        torch.testing.assert_close(step.probs, ref_probs[0, h].double(), rtol=1e-5, atol=1e-6)
    # The output sums float32 products over every head and feature: its rounding grows with the width and the values
    # (1.07e-5 once at 64 features, against a fixed 1e-5). Allowed: 4 times the float32 reference's own rounding (its
    # distance from the same attention in float64); 600 random cases of these shapes came within 1.9 times it.
    reference_rounding = float((ref_out.double() - exact_out).abs().max())
    torch.testing.assert_close(am.combine_heads(block, [s.out for s in steps]), ref_out[0].double(), rtol=1e-5,
                               atol=max(1e-5, 4 * reference_rounding))


@pytest.mark.parametrize("temperature", [0.2, 1.0, 3.5])
@pytest.mark.parametrize(("dim", "heads"), [(16, 2), (32, 4)])
def test_every_step_of_a_head_matches_numpy(dim, heads, temperature, rng):
    block = randomized(Block(dim, heads), rng)
    x = torch.randn(13, dim, generator=rng)
    head = int(torch.randint(heads, (1,), generator=rng))
    step = am.head_step(block, x, head, temperature)
    ref = numpy_head(block, x.double().numpy(), head, temperature)
    for name in ("normed", "q", "k", "v", "scores", "probs", "out"):
        # the model's float32 LayerNorm and projection against float64: a few float32 ulps of values ~1-10
        np.testing.assert_allclose(getattr(step, name).numpy(), ref[name], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(step.scaled.numpy(), step.scores.numpy() / np.sqrt(dim // heads) / temperature,
                               rtol=1e-12)


def shipped_or_random(name: str, rng: torch.Generator) -> nn.Module:
    return zoo.load("mnist-vit").module if name == "mnist-vit" else random_vit(rng, dim=48, depth=2, heads=6)


@pytest.mark.parametrize("model_name", [
    pytest.param("mnist-vit", marks=pytest.mark.skipif(not zoo.is_available("mnist-vit"), reason="not trained here")),
    "random ViT"])
def test_heads_recombine_to_the_models_own_attention_output(model_name, rng):
    model = shipped_or_random(model_name, rng)
    t = trace.run(model, torch.randn(1, 1, 28, 28, generator=rng))
    maps = am.attention_maps(t)
    for layer, record in enumerate(am.attention_records(t)):
        block, x = am.block_and_input(model, t, record)
        steps = [am.head_step(block, x, h) for h in range(maps.shape[1])]
        for h, step in enumerate(steps):
            torch.testing.assert_close(step.probs.float(), maps[layer, h], rtol=1e-5, atol=1e-6)
        attn_out = am.combine_heads(block, [s.out for s in steps])
        torch.testing.assert_close(attn_out.float(), t[record].output[0], rtol=1e-4, atol=1e-5)
        # the residual stream after attention is what the block's second LayerNorm reads
        block_name = record.rpartition(".")[0]
        torch.testing.assert_close((x.double() + attn_out).float(), t[f"{block_name}.norm2"].input[0],
                                   rtol=1e-4, atol=1e-5)


def test_probability_rows_sum_to_one(rng):
    vit = random_vit(rng, heads=2)
    t = trace.run(vit, torch.randn(1, 1, 28, 28, generator=rng))
    torch.testing.assert_close(am.attention_maps(t).sum(-1), torch.ones(3, 2, 17))
    block, x = am.block_and_input(vit, t, "blocks.0.attn")
    for temperature in (0.05, 0.5, 1.0, 10.0):
        probs = am.head_step(block, x, 1, temperature).probs
        torch.testing.assert_close(probs.sum(-1), torch.ones(17, dtype=torch.float64))


def vit_explain_rollout(maps: np.ndarray, fusion: str, discard_ratio: float) -> np.ndarray:
    """jacobgil/vit-explain's rollout (vit_rollout.py) in NumPy, for one image: per layer, fuse the heads, take the
    int(T²·ratio) smallest entries of the flattened matrix, leave entry 0 out of them, zero the rest, then
    (A + I) / 2. Rows are divided by their own sums (vit-explain's a / a.sum(dim=-1) divides along columns)."""
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[fusion]
    t = maps.shape[-1]
    result = np.eye(t)
    for layer in maps:
        flat = fuse(layer, axis=0).reshape(-1)  # (T·T,), a fresh array
        drop = int(flat.size * discard_ratio)
        if drop:
            indices = np.argpartition(flat, drop - 1)[:drop]  # the `drop` smallest, in no particular order
            flat[indices[indices != 0]] = 0.0
        a = (flat.reshape(t, t) + np.eye(t)) / 2
        result = (a / a.sum(axis=1, keepdims=True)) @ result
    return result


def random_maps(rng: torch.Generator, layers: int, heads: int, tokens: int) -> torch.Tensor:
    return (torch.randn(layers, heads, tokens, tokens, generator=rng) * 2).softmax(-1)


@pytest.mark.parametrize("discard_ratio", [0.0, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize(("layers", "heads", "tokens"), [(1, 1, 5), (4, 4, 17), (6, 3, 50)])
def test_rollout_matches_vit_explain(layers, heads, tokens, fusion, discard_ratio, rng):
    maps = random_maps(rng, layers, heads, tokens)
    ours = am.rollout(maps, fusion, discard_ratio)
    ref = vit_explain_rollout(maps.double().numpy(), fusion, discard_ratio)
    # both float64, the same products summed in another order
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.sum(-1).numpy(), 1.0, rtol=1e-12)


def test_discarding_keeps_the_class_tokens_attention_to_itself():
    # flattened: 0.1 (entry 0, the class token's own), 0.9, 0.4, 0.6; the smallest half is entries 0 and 2, and only
    # entry 2 is zeroed: (A' + I) / 2 = [[0.55, 0.45], [0, 0.8]], whose rows scaled to sum 1 are the rollout
    maps = torch.tensor([[[[0.1, 0.9], [0.4, 0.6]]]])
    expected = torch.tensor([[0.55, 0.45], [0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(am.rollout(maps, "mean", 0.5), expected, rtol=1e-7, atol=1e-12)  # 0.1 etc. in float32


def test_rollout_rejects_bad_settings(rng):
    maps = random_maps(rng, 2, 2, 5)
    with pytest.raises(InputError, match=r"^no head fusion named 'median'; choose one of: 'mean', 'max', 'min'$"):
        am.rollout(maps, "median")
    with pytest.raises(InputError, match=r"it must be at least 0 and below 1, got 1.0\.$"):
        am.rollout(maps, "mean", 1.0)


@pytest.mark.parametrize(("grid", "layers", "heads"), [
    (am.PatchGrid(1, 4, 4, 7.0), 4, 4), (am.PatchGrid(0, 3, 5, 16.0), 2, 3), (am.PatchGrid(2, 2, 2, 14.0), 1, 1)])
def test_attention_distance_matches_numpy(grid, layers, heads, rng):
    maps = random_maps(rng, layers, heads, grid.first + grid.n)
    ours = am.attention_distance(maps, grid)
    p = maps.double().numpy()[:, :, grid.first:, grid.first:]
    ref = np.zeros((layers, heads))
    for l_, h, i in np.ndindex(layers, heads, grid.n):
        (qr, qc), weights = divmod(i, grid.cols), p[l_, h, i] / p[l_, h, i].sum()
        for j in range(grid.n):
            kr, kc = divmod(j, grid.cols)
            ref[l_, h] += weights[j] * grid.patch * np.hypot(qr - kr, qc - kc) / grid.n
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10)


def test_attention_distance_of_a_head_that_only_looks_at_itself_is_zero():
    grid = am.PatchGrid(1, 4, 4, 7.0)
    maps = torch.eye(17).expand(1, 1, 17, 17)
    assert am.attention_distance(maps, grid).item() == 0.0


def test_position_similarity_matches_numpy(rng):
    grid = am.PatchGrid(1, 3, 4, 7.0)
    pos = torch.randn(1, 13, 8, generator=rng)
    p = pos[0, 1:].double().numpy()
    ref = (p @ p.T) / np.outer(np.linalg.norm(p, axis=1), np.linalg.norm(p, axis=1))
    np.testing.assert_allclose(am.position_similarity(pos, grid).numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize(("tokens", "image", "expected"), [
    (17, (28, 28), am.PatchGrid(1, 4, 4, 7.0)), (196, (224, 224), am.PatchGrid(0, 14, 14, 16.0)),
    (50, (224, 224), am.PatchGrid(1, 7, 7, 32.0)), (9, (28, 56), am.PatchGrid(1, 2, 4, 14.0)),
    (7, (28, 56), am.PatchGrid(5, 1, 2, 28.0))])  # 7 = class token + 4 registers + 2 patches
def test_patch_grid_finds_the_layout(tokens, image, expected):
    assert am.patch_grid(tokens, image) == expected


def test_patch_grid_says_when_tokens_are_not_patches():
    with pytest.raises(InputError, match=r"^8 tokens do not tile a 28×28 image into square patches"):
        am.patch_grid(8, (28, 28))


def test_query_maps_are_the_querys_row_over_the_patches(rng):
    grid = am.PatchGrid(1, 4, 4, 7.0)
    maps = random_maps(rng, 2, 3, 17)
    q = int(torch.randint(17, (1,), generator=rng))
    torch.testing.assert_close(am.query_maps(maps, q, grid)[1, 2], maps[1, 2, q, 1:].reshape(4, 4))
    assert grid.cell(grid.token(2, 3)) == (2, 3) and grid.cell(0) is None


def test_a_cnn_has_no_attention_to_show(rng):
    t = trace.run(MnistCNN().eval(), torch.randn(1, 1, 28, 28, generator=rng))
    with pytest.raises(InputError, match=r"^This model has no attention layers.*pick mnist-vit\)\.$"):
        am.attention_maps(t)


def test_head_step_rejects_bad_heads_and_temperatures(rng):
    block = randomized(Block(16, 2), rng)
    x = torch.randn(4, 16, generator=rng)
    with pytest.raises(InputError, match=r"^head 2 does not exist; this layer has heads 0 to 1\.$"):
        am.head_step(block, x, 2)
    with pytest.raises(InputError, match=r"^the softmax temperature must be above 0, got 0\.$"):
        am.head_step(block, x, 0, 0)


def test_head_step_fires_no_hook_of_the_model(rng):
    # another session's trace may hold hooks on a shared model (under its lock); head_step must not fire them
    block = randomized(Block(16, 2), rng)
    fired = []
    handles = [m.register_forward_hook(lambda *_: fired.append(1)) for m in block.modules()]
    am.head_step(block, torch.randn(5, 16, generator=rng), 1)
    for handle in handles:
        handle.remove()
    assert fired == []


@pytest.mark.skipif(not zoo.is_available("mnist-vit"), reason="mnist-vit is not trained here")
def test_the_lessons_math_does_not_change_the_shared_model(rng):
    model = zoo.load("mnist-vit").module
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = trace.run(model, torch.randn(1, 1, 28, 28, generator=rng))
    for record in am.attention_records(t):
        block, x = am.block_and_input(model, t, record)
        am.combine_heads(block, [am.head_step(block, x, h, 0.3).out for h in range(4)])
    am.position_similarity(am.position_embedding(model), am.patch_grid(17, (28, 28)))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("temperature", [0.1, 0.7, 4.0])
def test_a_temperature_change_equals_a_fresh_head_step(temperature, rng):
    block = randomized(Block(32, 4), rng)
    x = torch.randn(9, 32, generator=rng)
    changed, fresh = am.with_temperature(am.head_step(block, x, 3), temperature), am.head_step(block, x, 3, temperature)
    for name in ("scaled", "probs", "out"):
        torch.testing.assert_close(getattr(changed, name), getattr(fresh, name), rtol=1e-12, atol=0)


@pytest.mark.parametrize(("layer", "expected"), [
    ("blocks.2.attn", "blocks.2.attn"), ("blocks.1.mlp.0", "blocks.1.attn"), ("blocks.0.norm1", "blocks.0.attn"),
    ("patch_embed", None), ("blocks.10.attn", None), ("", None)])
def test_the_attention_record_of_a_layer_is_its_blocks(layer, expected):
    records = ("blocks.0.attn", "blocks.1.attn", "blocks.2.attn")
    assert am.attention_record_for(layer, records) == expected


def test_maps_with_mean_are_every_heads_row_and_their_mean(rng):
    grid = am.PatchGrid(1, 3, 4, 7.0)
    maps = random_maps(rng, 3, 5, grid.first + grid.n)
    q = int(torch.randint(grid.first + grid.n, (1,), generator=rng))
    ours = am.maps_with_mean(maps, q, grid).numpy()
    rows = maps.numpy()[:, :, q, 1:].reshape(3, 5, 3, 4)
    np.testing.assert_array_equal(ours[:, :5], rows)
    np.testing.assert_allclose(ours[:, 5], rows.mean(axis=1), rtol=1e-6)  # float32 means, summed in another order


@pytest.mark.parametrize("grid", [am.PatchGrid(1, 4, 4, 7.0), am.PatchGrid(0, 3, 5, 16.0), am.PatchGrid(2, 2, 3, 9.0)])
def test_query_weights_read_the_querys_row(grid, rng):
    maps = random_maps(rng, 2, 3, grid.first + grid.n)
    layer, head = int(torch.randint(2, (1,), generator=rng)), int(torch.randint(3, (1,), generator=rng))
    q = int(torch.randint(grid.first + grid.n, (1,), generator=rng))
    row = maps[layer, head, q].double().numpy()
    ours = am.query_weights(maps, layer, head, q, grid)
    assert ours.largest_patch == pytest.approx(row[grid.first:].max(), rel=1e-7)
    assert ours.on_itself == pytest.approx(row[q], rel=1e-7)
    assert ours.to_prefix == pytest.approx(row[:grid.first].sum(), rel=1e-6, abs=1e-12)  # float32 sum, 0 without


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("grid", [am.PatchGrid(1, 4, 4, 7.0), am.PatchGrid(0, 3, 5, 16.0)])
def test_rollout_maps_are_the_querys_rows_of_vit_explain_rollout_and_the_last_layer(grid, fusion, rng):
    tokens = grid.first + grid.n
    maps = random_maps(rng, 3, 4, tokens)
    q = int(torch.randint(tokens, (1,), generator=rng))
    discard = float(torch.rand(1, generator=rng)) * 0.9
    ours = am.rollout_maps(maps, q, grid, fusion, discard)
    ref = vit_explain_rollout(maps.double().numpy(), fusion, discard)[q]
    np.testing.assert_allclose(ours.rollout.numpy(), ref[grid.first:].reshape(grid.rows, grid.cols), rtol=1e-10)
    last = maps.numpy()[-1, :, q, grid.first:].mean(axis=0).reshape(grid.rows, grid.cols)
    np.testing.assert_allclose(ours.last_layer.numpy(), last, rtol=1e-6)  # float32 means
    assert ours.to_patches == pytest.approx(ref[grid.first:].sum(), rel=1e-10)
    assert ours.to_prefix == pytest.approx(ref[:grid.first].sum(), rel=1e-10, abs=1e-15)
    assert ours.to_patches + ours.to_prefix == pytest.approx(1.0, rel=1e-12)


def test_distance_summary_finds_the_most_local_and_global_heads(rng):
    distance = torch.rand(5, 6, generator=rng, dtype=torch.float64) * 20
    ours = am.distance_summary(distance)
    d = distance.numpy()
    np.testing.assert_allclose(ours.per_layer.numpy(), d.mean(axis=1), rtol=1e-12)
    assert ours.most_local == tuple(int(i) for i in np.unravel_index(d.argmin(), d.shape))
    assert ours.most_global == tuple(int(i) for i in np.unravel_index(d.argmax(), d.shape))


@pytest.mark.parametrize(("rows", "cols"), [(4, 4), (2, 3), (1, 5)])
def test_position_mosaic_puts_each_patchs_square_in_its_place(rows, cols, rng):
    grid = am.PatchGrid(1, rows, cols, 7.0)
    positions = torch.randn(grid.n, grid.n, generator=rng, dtype=torch.float64)
    ours = am.position_mosaic(positions, grid).numpy()
    blocks = positions.float().numpy().reshape(rows, cols, rows, cols)
    ref = np.full((rows * (rows + 1) - 1, cols * (cols + 1) - 1), np.nan, dtype=np.float32)
    for i, j in np.ndindex(rows, cols):
        ref[i * (rows + 1):i * (rows + 1) + rows, j * (cols + 1):j * (cols + 1) + cols] = blocks[i, j]
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)  # NaN where NaN, the same float32 values elsewhere


@pytest.mark.parametrize("colour", [False, True])
def test_the_inkiest_token_is_the_patch_with_the_brightest_mean(colour, rng):
    grid = am.PatchGrid(1, 4, 4, 7.0)
    picture = (torch.rand(28, 28, *((3,) if colour else ()), generator=rng) * 100).numpy().astype(np.uint8)
    r, c = (int(v) for v in torch.randint(4, (2,), generator=rng))
    picture[r * 7:(r + 1) * 7, c * 7:(c + 1) * 7] = 255  # the only patch full of ink
    assert am.inkiest_token(picture, grid) == grid.token(r, c)
    grey = picture.astype(np.float64).mean(axis=2) if colour else picture.astype(np.float64)
    means = grey.reshape(4, 7, 4, 7).mean(axis=(1, 3))
    assert am.inkiest_token(picture, grid) == grid.token(*divmod(int(means.argmax()), 4))

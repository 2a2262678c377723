"""explorer.lessons.normalization.math against torch.nn.functional and a NumPy reference, on fresh random tensors."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer.core import trace, zoo
from explorer.errors import InputError
from explorer.lessons.normalization.math import (
    KINDS,
    InputStudy,
    LayerStudy,
    affine,
    batch_first_output,
    batch_statistics,
    batch_statistics_copy,
    check_groups,
    common_edges,
    conv_before,
    count_statistics,
    first_output,
    first_probabilities,
    fold_bn,
    gamma_summaries,
    histogram,
    layer_output,
    make_batch,
    max_abs_difference,
    mean_abs_difference,
    norm_records,
    normalize,
    pool_sums,
    sample_pool,
    shared_with,
    with_running_stats,
)

# float32 sums over a few thousand values: relative error ~1e-6; 1e-4 leaves room for a variance near 1e-2
ATOL = 1e-4
CHANNEL_SHAPES = [(1, 1, 1, 1), (2, 4, 3, 3), (5, 6, 7, 2), (8, 16, 1, 9), (3, 12, 10), (2, 8, 4, 3, 2)]
TOKEN_SHAPES = [(1, 17, 64), (4, 5, 8), (2, 1, 12), (3, 2, 4, 6)]


def torch_reference(kind: str, x: torch.Tensor, groups: int, eps: float, layout: str) -> torch.Tensor:
    """What the torch layers compute (no affine)."""
    if layout == "tokens":
        features = x.shape[-1]
        if kind == "layer":
            return F.layer_norm(x, (features,), eps=eps)
        if kind == "rms":
            return F.rms_norm(x, (features,), eps=eps)
        if kind == "group":
            return F.group_norm(x.reshape(-1, features), groups, eps=eps).reshape(x.shape)
        moved = x.movedim(-1, 1)  # (N, D, T...): features as channels
        ref = (F.batch_norm(moved, None, None, training=True, eps=eps) if kind == "batch"
               else F.instance_norm(moved, eps=eps))
        return ref.movedim(1, -1)
    return {"batch": lambda: F.batch_norm(x, None, None, training=True, eps=eps),
            "layer": lambda: F.layer_norm(x, x.shape[1:], eps=eps),
            "group": lambda: F.group_norm(x, groups, eps=eps),
            "instance": lambda: F.instance_norm(x, eps=eps),
            "rms": lambda: F.rms_norm(x, x.shape[1:], eps=eps)}[kind]()


def numpy_reference(kind: str, x: np.ndarray, groups: int, eps: float, layout: str) -> tuple[np.ndarray, ...]:
    """Mean, variance and normalized values, one loop over the statistics, written from the definitions."""
    if layout == "tokens":
        x = np.moveaxis(x, -1, 1)  # (N, D, T...)
        if kind in ("layer", "rms", "group"):  # per token: every token is a sample with D channels and no positions
            n, d = x.shape[0], x.shape[1]
            rest = x.shape[2:]
            flat = np.moveaxis(x, 1, -1).reshape(-1, d, 1)
            mean, var, out = numpy_reference(kind, flat, groups, eps, "channels")
            back = [np.moveaxis(a.reshape(n, *rest, d), -1, 1) for a in (mean, var, out)]
            return tuple(np.moveaxis(a, 1, -1) for a in back)
        mean, var, out = numpy_reference(kind, x, groups, eps, "channels")
        return tuple(np.moveaxis(a, 1, -1) for a in (mean, var, out))
    n, c = x.shape[:2]
    mean, var = np.zeros_like(x), np.zeros_like(x)
    size = c // groups
    for i, j in itertools.product(range(n), range(c)):
        rows = slice(None) if kind == "batch" else slice(i, i + 1)
        cols = (slice(j, j + 1) if kind in ("batch", "instance") else slice(j // size * size, j // size * size + size)
                if kind == "group" else slice(None))
        values = x[rows, cols]
        m = 0.0 if kind == "rms" else values.mean()
        mean[i, j] = m
        var[i, j] = ((values - m) ** 2).mean()
    return mean, var, (x - mean) / np.sqrt(var + eps)


def groups_for(channels: int, rng: torch.Generator) -> int:
    divisors = [g for g in range(1, channels + 1) if channels % g == 0]
    return divisors[int(torch.randint(len(divisors), (1,), generator=rng))]


def cases(for_torch: bool = False):
    for kind in KINDS:
        for shape in CHANNEL_SHAPES:
            if for_torch and shape == (1, 1, 1, 1) and kind not in ("layer", "rms"):
                continue  # torch refuses to normalize a single value per statistic in training mode
            yield kind, shape, "channels"
        for shape in TOKEN_SHAPES:
            if for_torch and kind == "instance" and math.prod(shape[1:-1]) == 1:
                continue
            yield kind, shape, "tokens"


@pytest.mark.parametrize(("kind", "shape", "layout"), list(cases(for_torch=True)))
def test_normalized_matches_torch_functional(kind, shape, layout, rng):
    x = torch.randn(shape, generator=rng, dtype=torch.float64) * 3 + torch.randn((), generator=rng, dtype=torch.float64)
    groups = groups_for(shape[-1] if layout == "tokens" else shape[1], rng)
    ours = normalize(kind, x, groups=groups, eps=1e-5, layout=layout)
    torch.testing.assert_close(ours.normalized, torch_reference(kind, x, groups, 1e-5, layout), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize(("kind", "shape", "layout"), list(cases()))
def test_statistics_match_numpy(kind, shape, layout, rng):
    x = torch.randn(shape, generator=rng) * 2 + 0.5
    groups = groups_for(shape[-1] if layout == "tokens" else shape[1], rng)
    ours = normalize(kind, x, groups=groups, eps=1e-3, layout=layout)
    mean, var, out = numpy_reference(kind, x.numpy().astype(np.float64), groups, 1e-3, layout)
    np.testing.assert_allclose(ours.mean.expand_as(x).numpy(), mean, atol=ATOL)
    np.testing.assert_allclose(ours.var.expand_as(x).numpy(), var, atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(ours.normalized.numpy(), out, atol=ATOL * 10)  # divided by σ ≥ √1e-3


@pytest.mark.parametrize(("kind", "shape", "layout"), list(cases()))
def test_shared_elements_are_exactly_those_that_move_the_statistic(kind, shape, layout, rng):
    """Changing a value inside the box changes x[index]'s mean or variance; changing one outside does not."""
    x = torch.randn(shape, generator=rng, dtype=torch.float64)
    groups = groups_for(shape[-1] if layout == "tokens" else shape[1], rng)
    index = tuple(int(torch.randint(n, (1,), generator=rng)) for n in shape)
    box = shared_with(kind, shape, index, groups, layout)
    stats = normalize(kind, x, groups, layout=layout)
    before = (stats.mean.expand_as(x)[index], stats.var.expand_as(x)[index])
    for other in itertools.islice(itertools.product(*map(range, shape)), 0, 400):
        y = x.clone()
        y[other] += 10.0
        after = normalize(kind, y, groups, layout=layout)
        moved = (after.mean.expand_as(x)[index] != before[0]) or (after.var.expand_as(x)[index] != before[1])
        inside = all(o in r for o, r in zip(other, box, strict=True))
        assert bool(moved) == inside, f"{other} {'inside' if inside else 'outside'} {box}"
    assert count_statistics(kind, shape, groups, layout) * math.prod(len(r) for r in box) == math.prod(shape)


@pytest.mark.parametrize("shape", [(1, 8, 4, 4), (3, 16, 5, 5), (2, 3, 7, 1)])
def test_running_statistics_and_affine_match_eval_batch_norm(shape, rng):
    c = shape[1]
    x = torch.randn(shape, generator=rng)
    mean, var = torch.randn(c, generator=rng), torch.rand(c, generator=rng) + 0.1
    gamma, beta = torch.randn(c, generator=rng), torch.randn(c, generator=rng)
    ref = F.batch_norm(x, mean, var, gamma, beta, training=False, eps=1e-5)
    torch.testing.assert_close(affine(with_running_stats(x, mean, var, 1e-5), gamma, beta), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 17, 64), (2, 5, 8)])
def test_affine_on_tokens_matches_layer_norm(shape, rng):
    x = torch.randn(shape, generator=rng)
    gamma, beta = torch.randn(shape[-1], generator=rng), torch.randn(shape[-1], generator=rng)
    ours = affine(normalize("layer", x, layout="tokens").normalized, gamma, beta, layout="tokens")
    torch.testing.assert_close(ours, F.layer_norm(x, shape[-1:], gamma, beta, eps=1e-5), atol=1e-5, rtol=1e-5)


CONVS = [  # (in, out, kernel, stride, padding, dilation, groups, bias)
    (1, 16, 3, 1, 1, 1, 1, False),
    (3, 8, 3, 2, 1, 1, 1, True),
    (8, 8, 3, 1, 1, 1, 8, False),   # depthwise
    (12, 6, 1, 1, 0, 1, 3, True),   # grouped 1x1
    (4, 12, 5, 1, 4, 2, 4, True),   # grouped, dilated
    (16, 16, 3, 2, 1, 1, 16, True),  # depthwise, strided, with bias
]


@pytest.mark.parametrize("spec", CONVS)
def test_folded_conv_equals_conv_then_eval_batch_norm(spec, rng):
    cin, cout, k, s, p, d, g, bias = spec
    torch.manual_seed(int(torch.randint(2**31, (1,), generator=rng)))
    conv = nn.Conv2d(cin, cout, k, s, p, d, g, bias=bias)
    bn = nn.BatchNorm2d(cout).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.05, 3)
        bn.weight.normal_()
        bn.bias.normal_()
    weight_before = conv.weight.clone()
    x = torch.randn(2, cin, 11, 9, generator=rng)
    folded = fold_bn(conv, bn)
    # float32 convolution sums of ≤ 100 products of O(1) values: errors ~1e-6; 1e-5 is the bar
    assert (folded(x) - bn(conv(x))).abs().max() <= 1e-5
    reference = F.batch_norm(F.conv2d(x, conv.weight, conv.bias, s, p, d, g), bn.running_mean, bn.running_var,
                             bn.weight, bn.bias, training=False, eps=bn.eps)
    assert (folded(x) - reference).abs().max() <= 1e-5
    assert torch.equal(conv.weight, weight_before)  # the input modules are not changed


def test_fold_refuses_mismatched_layers():
    with pytest.raises(InputError, match=r"BatchNorm2d\(4\) cannot fold into a convolution with 8 output channels"):
        fold_bn(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(4))


def test_group_count_must_divide_the_channels():
    with pytest.raises(InputError, match="GroupNorm needs a number of groups that divides the 12 channels, got 5; "
                                         "choose one of: 1, 2, 3, 4, 6, 12."):
        check_groups(12, 5)


def test_batch_statistics_copy_uses_the_batch_and_does_not_touch_the_model(rng):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(6, 1, 8, 8, generator=rng)
    private = batch_statistics_copy(model)
    out = private(x)
    conv = model[0](x)
    expected = F.relu(F.batch_norm(conv, None, None, model[1].weight, model[1].bias, training=True))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    private(x * 3)  # a second forward would have moved running statistics, were there any
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not model.training


def test_make_batch_puts_the_student_first(rng):
    x, pool = torch.randn(1, 1, 4, 4, generator=rng), torch.randn(10, 1, 4, 4, generator=rng)
    batch = make_batch(x, pool, 5)
    assert torch.equal(batch[0], x[0]) and torch.equal(batch[1:], pool[:4])
    with pytest.raises(InputError, match="a batch holds 1 to 11 images here, got 12."):
        make_batch(x, pool, 12)


def test_histogram_matches_numpy(rng):
    a, b = torch.randn(500, generator=rng), torch.randn(300, generator=rng) * 3
    edges = common_edges(a, b, bins=17)
    assert float(edges[0]) == float(min(a.min(), b.min())) and float(edges[-1]) == pytest.approx(float(max(a.max(),
                                                                                                         b.max())))
    counts, _ = np.histogram(b.numpy().astype(np.float64), edges.numpy())
    assert histogram(b, edges).tolist() == counts.tolist()
    narrow = edges[5:12]  # values outside the edges are not counted, as in NumPy
    counts, _ = np.histogram(b.numpy().astype(np.float64), narrow.numpy())
    assert histogram(b, narrow).tolist() == counts.tolist()


def test_gamma_summaries_flag_near_zero_scales(rng):
    model = nn.Sequential(nn.Conv2d(1, 5, 1), nn.BatchNorm2d(5), nn.Conv2d(5, 3, 1), nn.BatchNorm2d(3, affine=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([1.0, -2.0, 0.05, -0.09, 0.11]))
    (summary,) = gamma_summaries(model)
    assert summary.name == "1"
    assert summary.magnitude.tolist() == pytest.approx([1.0, 2.0, 0.05, 0.09, 0.11])
    assert summary.near_zero.tolist() == [False, False, True, True, False]  # below 5 % of max |γ| = 0.1


@pytest.mark.parametrize(("kind", "shape", "layout"), [c for c in cases(for_torch=True) if c[1][0] > 1])
def test_first_output_matches_torch_on_the_whole_batch(kind, shape, layout, rng):
    x = torch.randn(shape, generator=rng, dtype=torch.float64)
    channels = shape[-1] if layout == "tokens" else shape[1]
    groups = groups_for(channels, rng)
    gamma, beta = torch.randn(channels, generator=rng, dtype=torch.float64), torch.randn(channels, generator=rng,
                                                                                         dtype=torch.float64)
    reference = affine(torch_reference(kind, x, groups, 1e-5, layout), gamma, beta, layout)[0]
    torch.testing.assert_close(first_output(kind, x, gamma, beta, groups, 1e-5, layout), reference, atol=1e-9,
                               rtol=1e-9)


@pytest.mark.parametrize(("shape", "layout"), [((9, 3, 5, 4), "channels"), ((12, 16, 7, 7), "channels"),
                                               ((6, 4, 11), "channels"), ((10, 17, 8), "tokens"),
                                               ((0, 32, 7, 7), "channels")])  # no pool: batches of one
def test_batch_statistics_from_running_sums_match_batch_norm_on_every_batch_size(shape, layout, rng):
    first = torch.randn((1, *shape[1:]), generator=rng) * 3 + 1
    pool = torch.randn(shape, generator=rng) * 2 - 0.5
    sums = pool_sums(pool, layout)
    channels = shape[-1] if layout == "tokens" else shape[1]
    gamma, beta = torch.randn(channels, generator=rng), torch.randn(channels, generator=rng)
    for size in range(1, shape[0] + 2):
        batch = make_batch(first, pool, size)
        as_channels = batch.movedim(-1, 1) if layout == "tokens" else batch  # F.batch_norm wants (N, C, ...)
        reference = F.batch_norm(as_channels, None, None, gamma, beta, training=True, eps=1e-5)[0]
        reference = reference.movedim(0, -1) if layout == "tokens" else reference
        mean, var = batch_statistics(first, sums, size)
        c = -1 if layout == "tokens" else 1
        dims = tuple(d for d in range(batch.dim()) if d != batch.dim() + c and d != c)
        torch.testing.assert_close(mean.flatten(), batch.double().mean(dims).float(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(var.flatten(), batch.double().var(dims, correction=0).float(), atol=1e-5,
                                   rtol=1e-5)
        out = batch_first_output(first, sums, size, gamma, beta, 1e-5)
        torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out, first_output("batch", batch, gamma, beta, None, 1e-5, layout), atol=1e-4,
                                   rtol=1e-4)
    with pytest.raises(InputError, match="a batch holds 1 to"):
        batch_statistics(first, sums, shape[0] + 2)


@pytest.mark.parametrize("shape", [(7,), (3, 5, 4), (2, 96, 56, 56)])
def test_differences_match_numpy(shape, rng):
    a, b = torch.randn(shape, generator=rng), torch.randn(shape, generator=rng)
    expected = np.abs(a.numpy().astype(np.float64) - b.numpy().astype(np.float64))
    assert mean_abs_difference(a, b) == pytest.approx(expected.mean(), rel=1e-5)  # float32 pairwise sums
    assert max_abs_difference(a, b) == pytest.approx(expected.max(), rel=1e-6)


def test_first_probabilities_are_the_first_row_of_the_softmax(rng):
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval()
    batch = torch.randn(4, 1, 4, 4, generator=rng)
    expected = F.softmax(model(batch), dim=-1)[0]
    torch.testing.assert_close(first_probabilities(model, batch), expected)
    assert float(first_probabilities(model, batch).sum()) == pytest.approx(1.0, abs=1e-6)


def randomized(module: nn.Module, rng: torch.Generator) -> nn.Module:
    """`module` in eval mode with random running statistics, γ and β (not the 0/1 they start with)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=rng))
                m.running_var.copy_(torch.rand(m.num_features, generator=rng) * 2 + 0.1)
        for m in module.modules():  # γ and β; convolutions keep their default init, values O(1)
            if not isinstance(m, nn.Conv2d):
                for p in m.parameters(recurse=False):
                    p.copy_(torch.randn(p.shape, generator=rng))
    return module.eval().requires_grad_(False)


NORM_MODULES = {  # (module, input shape)
    "BatchNorm2d": (lambda: nn.BatchNorm2d(6), (1, 6, 5, 4)),
    "GroupNorm": (lambda: nn.GroupNorm(3, 6), (1, 6, 5, 4)),
    "InstanceNorm2d": (lambda: nn.InstanceNorm2d(6, affine=True), (1, 6, 5, 4)),
    "LayerNorm on tokens": (lambda: nn.LayerNorm(8), (1, 5, 8)),
    "RMSNorm on tokens": (lambda: nn.RMSNorm(8, eps=1e-6), (1, 5, 8)),
}


@pytest.mark.parametrize("name", NORM_MODULES)
def test_layer_output_matches_the_modules_own_forward(name, rng):
    build, shape = NORM_MODULES[name]
    module = randomized(nn.Sequential(build()), rng)
    x = torch.randn(shape, generator=rng) * 2 + 0.5
    record = norm_records(trace.run(module, x))[0]
    out = layer_output(record, module[0])
    # float32 statistics over ≤ 40 values: ~1e-6 relative; the recorded output is the module's own
    torch.testing.assert_close(out.after, module(x), atol=1e-5, rtol=1e-5)
    assert out.check <= 1e-5
    assert out.check == max_abs_difference(out.after, module(x))


def conv_bn(rng: torch.Generator, bias: bool) -> nn.Sequential:
    torch.manual_seed(int(torch.randint(2**31, (1,), generator=rng)))
    return randomized(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=bias), nn.BatchNorm2d(6), nn.ReLU(),
                                    nn.LayerNorm([6, 7, 7])), rng)


@pytest.mark.parametrize("bias", [False, True])
def test_folding_matches_conv_then_eval_batch_norm(bias, rng):
    model = conv_bn(rng, bias)
    x = torch.randn(1, 3, 7, 7, generator=rng)
    t = trace.run(model, x)
    bn_record, ln_record = norm_records(t)
    conv_record = conv_before(t, bn_record)
    assert conv_record is not None and conv_record.name == "0"
    assert conv_before(t, ln_record) is None  # a ReLU runs in between
    study = LayerStudy(bn_record, model[1], pool_sums(bn_record.input[:0]), (conv_record, model[0]))
    fold = study.folding()
    conv, bn = model[0], model[1]
    expected_scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(fold.scale, expected_scale, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fold.folded.weight, conv.weight * expected_scale.reshape(-1, 1, 1, 1))
    expected_bias = conv.bias if bias else torch.zeros(6)
    assert torch.equal(fold.bias, expected_bias) and torch.equal(fold.weight, conv.weight)
    reference = F.batch_norm(F.conv2d(x, conv.weight, conv.bias, padding=1), bn.running_mean, bn.running_var,
                             bn.weight, bn.bias, training=False, eps=bn.eps)
    assert fold.difference == max_abs_difference(fold.folded(x), bn_record.output)
    assert fold.difference <= 1e-5  # float32 sums of 27 products, as in the folding test above
    torch.testing.assert_close(fold.folded(x), reference, atol=1e-5, rtol=1e-5)
    assert LayerStudy(ln_record, model[3], pool_sums(ln_record.input[:0])).folding() is None


@pytest.mark.parametrize("size", [1, 2, 5, 11])
def test_layer_study_matches_torch_on_the_assembled_batch(size, rng):
    model = conv_bn(rng, bias=True)
    first, pool = torch.randn(1, 3, 7, 7, generator=rng), torch.randn(10, 3, 7, 7, generator=rng) * 1.5
    record = norm_records(trace.run(model, first))[0]
    study = LayerStudy(record, model[1], pool_sums(trace.run(model, pool)["1"].input))
    batch = model[0](make_batch(first, pool, size))  # the BatchNorm's input for the whole batch
    mean, var = study.batch_statistics(size)
    torch.testing.assert_close(mean.flatten(), batch.mean((0, 2, 3)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(var.flatten(), batch.var((0, 2, 3), correction=0), atol=1e-5, rtol=1e-4)
    bn = model[1]
    train = F.batch_norm(batch, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)[0]
    torch.testing.assert_close(study.first_output("batch", size, 2), train, atol=1e-4, rtol=1e-4)
    layer = F.layer_norm(batch[:1], batch.shape[1:], eps=bn.eps) * bn.weight.reshape(-1, 1, 1) \
        + bn.bias.reshape(-1, 1, 1)
    group = F.group_norm(batch[:1], 2, bn.weight, bn.bias, eps=bn.eps)
    for kind, reference in (("batch", train), ("layer", layer[0]), ("group", group[0])):
        expected = (reference - record.output[0]).abs().double().mean()
        assert study.difference(kind, size, 2) == pytest.approx(float(expected), rel=1e-3, abs=1e-6)
    own = study.own_statistics()  # per channel over H×W of the student's input alone
    torch.testing.assert_close(own.mean.flatten(), record.input[0].mean((1, 2)), atol=1e-5, rtol=1e-5)


MNIST_MODELS = [m for m in ("mnist-cnn", "mnist-vit") if zoo.is_available(m)]


@pytest.mark.parametrize("model_name", MNIST_MODELS)
def test_batch_statistics_of_the_sample_match_a_trace_of_the_whole_batch(model_name, rng):
    model = zoo.load(model_name)
    x = torch.randn(1, *model.card.input_shape, generator=rng)
    study = InputStudy(model, x, model.trace(x))
    assert study.batchable and list(study.records) == [r.name for r in norm_records(model.trace(x))]
    for size in (1, 3, 256):
        whole = model.trace(make_batch(x, sample_pool(model.card), size))
        for name in study.records:
            inputs = whole[name].input
            dims = (0, 2, 3) if inputs.dim() == 4 else (0, 1)  # per channel, or per feature over batch and tokens
            mean, var = study.layer(name).batch_statistics(size)
            torch.testing.assert_close(mean.flatten(), inputs.mean(dims), atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(var.flatten(), inputs.var(dims, correction=0), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("model_name", MNIST_MODELS)
def test_batch_probabilities_match_the_model_with_batch_norm_in_train_mode(model_name, rng):
    model = zoo.load(model_name)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    x = torch.randn(1, *model.card.input_shape, generator=rng)
    study = InputStudy(model, x, model.trace(x))
    reference_model = copy.deepcopy(model.module).eval()
    batch_norms = [m for m in reference_model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in batch_norms:
        m.train()
    for size in (1, 16):
        probs = study.probabilities(size)
        assert study.knows_probabilities(size)
        if not batch_norms:
            assert probs is None  # no BatchNorm: the prediction does not depend on the batch
            continue
        with torch.no_grad():
            expected = reference_model(make_batch(x, sample_pool(model.card), size)).softmax(-1)[0]
        torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
    state = model.module.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in before.items())  # the shared model is never changed

"""Pruning math against independent references: NumPy selections, hand counts, torch's BatchNorm statistics."""

from __future__ import annotations

import copy
import functools
import threading

import numpy as np
import pytest
import torch
from torch import nn

from explorer.core import agreement, evaluate, zoo
from explorer.core.architectures import MnistCNN, MnistViT
from explorer.core.data import EvalSet
from explorer.errors import InputError
from explorer.lessons.pruning import math as pm

AMOUNTS = [0.0, 0.13, 0.5, 0.77, 0.99]


def random_cnn(rng: torch.Generator) -> nn.Module:
    model = MnistCNN(widths=(6, 10, 12))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=rng))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=rng))
                m.running_var.copy_(torch.rand(m.num_features, generator=rng) + 0.5)
    return model.eval().requires_grad_(False)


def random_vit(rng: torch.Generator) -> nn.Module:
    model = MnistViT(dim=16, depth=2, heads=4)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=rng) * 0.3)
    return model.eval().requires_grad_(False)


def smallest_mask(w: np.ndarray, k: int) -> np.ndarray:
    """NumPy: 0 at the k smallest |w|, 1 elsewhere (random weights: no ties)."""
    mask = np.ones(w.size)
    mask[np.argsort(np.abs(w).ravel(), kind="stable")[:k]] = 0
    return mask.reshape(w.shape)


@pytest.mark.parametrize("amount", AMOUNTS)
@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_layer_sparsity_equals_the_requested_amount_in_every_layer(amount, method, rng):
    model = random_cnn(rng)
    pruned = pm.prune(model, method, amount, "layer")
    for name, achieved in pm.sparsity(pruned).items():
        n = model.get_submodule(name).weight.numel()
        assert achieved == round(amount * n) / n, name  # torch prunes round(amount · n) weights


@pytest.mark.parametrize("amount", AMOUNTS)
@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_global_sparsity_equals_the_requested_amount(amount, method, rng):
    model = random_vit(rng)
    pruned = pm.prune(model, method, amount, "global")
    total = sum(model.get_submodule(n).weight.numel() for n in pm.prunable_layers(model))
    assert pm.global_sparsity(pruned) == round(amount * total) / total


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_the_random_baseline_is_the_same_draw_whatever_the_global_generator_did(scope, rng):
    model = random_cnn(rng)
    first = pm.masks(pm.prune(model, "random", 0.5, scope))
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))  # another session's draws in between
    torch.rand(1000)
    again = pm.masks(pm.prune(model, "random", 0.5, scope))
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    magnitude = pm.masks(pm.prune(model, "magnitude", 0.5, scope))
    assert not all(torch.equal(first[k], magnitude[k]) for k in first)  # random, not the smallest |w|


@pytest.mark.parametrize("amount", AMOUNTS[1:])
def test_layer_magnitude_masks_match_numpy_smallest_weights(amount, rng):
    model = random_vit(rng)
    got = pm.masks(pm.prune(model, "magnitude", amount, "layer"))
    for name in pm.prunable_layers(model):
        w = model.get_submodule(name).weight.numpy()
        expected = smallest_mask(w, round(amount * w.size))
        np.testing.assert_array_equal(got[f"{name}.weight"].numpy(), expected, err_msg=name)


@pytest.mark.parametrize("amount", AMOUNTS[1:])
def test_global_magnitude_masks_match_numpy_smallest_weights(amount, rng):
    model = random_cnn(rng)
    names = pm.prunable_layers(model)
    weights = [model.get_submodule(n).weight.numpy() for n in names]
    flat = np.concatenate([w.ravel() for w in weights])
    expected = np.split(smallest_mask(flat, round(amount * flat.size)), np.cumsum([w.size for w in weights])[:-1])
    got = pm.masks(pm.prune(model, "magnitude", amount, "global"))
    for name, w, mask in zip(names, weights, expected, strict=True):
        np.testing.assert_array_equal(got[f"{name}.weight"].numpy(), mask.reshape(w.shape), err_msg=name)


@pytest.mark.parametrize("amount", AMOUNTS)
@pytest.mark.parametrize("p", [1, 2])
def test_structured_layer_masks_remove_the_filters_with_smallest_norms(amount, p, rng):
    model = random_cnn(rng)
    pruned = pm.prune(model, f"filters-l{p}", amount, "layer")
    fractions = pm.unit_fractions(pruned)
    for group in pm.unit_groups(model):
        w = model.get_submodule(group.name).weight.numpy()
        norms = np.linalg.norm(w.reshape(len(w), -1), ord=p, axis=1)
        removed = min(round(amount * len(w)), len(w) - 1)  # a layer keeps one filter
        expected = np.ones(len(w))
        expected[np.argsort(norms, kind="stable")[:removed]] = 0
        mask = pm.masks(pruned)[f"{group.name}.weight"].numpy()
        np.testing.assert_array_equal(mask.reshape(len(w), -1).max(axis=1), expected, err_msg=group.name)
        assert fractions[group.name] == removed / len(w)
        bn = pm.masks(pruned)  # the BatchNorm channel after the filter goes with it
        bn_name = next(m.module for m in group.members if m.module != group.name and m.dim == 0)
        np.testing.assert_array_equal(bn[f"{bn_name}.weight"].numpy(), expected)


def test_structured_layer_masks_match_torch_ln_structured(rng):
    model = random_cnn(rng)
    pruned = pm.prune(model, "filters-l2", 0.5, "layer")
    for group in pm.unit_groups(model):
        conv = nn.Conv2d(1, 1, 1)
        conv.weight = nn.Parameter(model.get_submodule(group.name).weight.clone())
        torch.nn.utils.prune.ln_structured(conv, "weight", amount=0.5, n=2, dim=0)
        # compare whole filters: our mask also zeroes input channels that an earlier group removed
        kept = pm.masks(pruned)[f"{group.name}.weight"].amax(dim=(1, 2, 3))
        assert torch.equal(kept, conv.weight_mask.amax(dim=(1, 2, 3)))


@pytest.mark.parametrize("amount", [0.3, 0.6, 0.9])
def test_global_structured_removes_the_smallest_norms_over_all_layers(amount, rng):
    model = random_cnn(rng)
    groups = pm.unit_groups(model)
    norms = [np.abs(model.get_submodule(g.name).weight.numpy()).reshape(g.size, -1).sum(1) for g in groups]
    protected = [n.copy() for n in norms]
    for n in protected:
        n[n.argmax()] = np.inf  # each layer's largest filter stays
    flat = np.concatenate(protected)
    removed = min(round(amount * flat.size), flat.size - len(groups))
    keep = np.ones(flat.size, bool)
    keep[np.argsort(flat, kind="stable")[:removed]] = False
    expected = np.split(keep, np.cumsum([g.size for g in groups])[:-1])
    pruned = pm.prune(model, "filters-l1", amount, "global")
    for group, want in zip(groups, expected, strict=True):
        assert pm.unit_fractions(pruned)[group.name] == pytest.approx(1 - want.mean())


@pytest.mark.parametrize("amount", [0.25, 0.5, 0.75, 0.99])
@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("build", [random_cnn, random_vit])
def test_shrunk_model_outputs_equal_the_masked_models(build, scope, amount, rng):
    model = build(rng)
    pruned = pm.prune(model, "filters-l1", amount, scope)
    small = pm.shrink(pruned)
    x = torch.randn(5, 1, 28, 28, generator=rng)
    assert sum(p.numel() for p in small.parameters()) == pm.counts(pruned, x[:1]).nonzeros or scope == "global"
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    # float sums over fewer terms (the zeros are gone) round differently: a few ulps of the largest summands, so
    # a logit near 0 after cancellation may differ by ~1e-7 of the largest logit (random weights reach ~1e2-1e3)
    masked = pruned(x)
    torch.testing.assert_close(small(x), masked, rtol=1e-5, atol=1e-5 * float(masked.abs().max()))


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
def test_shrunk_mobilenet_equals_masked_and_is_smaller(rng):
    model = zoo.load("mobilenet_v2").module
    pruned = pm.prune(model, "filters-l2", 0.5, "layer")
    small = pm.shrink(pruned)
    x = torch.randn(2, 3, 224, 224, generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(small(x), pruned(x), rtol=1e-4, atol=1e-4)
    assert pm.counts(small, x[:1]).macs < 0.6 * pm.counts(model, x[:1]).macs


def test_macs_match_a_count_by_hand(rng):
    model = random_cnn(rng)  # widths 6, 10, 12 on 28, 14, 7 px; linear 12·3·3 -> 10
    dense = 6 * 9 * 28 * 28 + 10 * 6 * 9 * 14 * 14 + 12 * 10 * 9 * 7 * 7 + 10 * 12 * 9
    x = torch.randn(1, 1, 28, 28, generator=rng)
    assert pm.counts(model, x).macs == dense
    pruned = pm.prune(model, "magnitude", 0.5, "layer")
    layers = [(6 * 9, 28 * 28), (10 * 6 * 9, 14 * 14), (12 * 10 * 9, 7 * 7), (10 * 12 * 9, 1)]
    expected = sum(round(0.5 * n) * pos for n, pos in layers)  # zeroed weights times their output positions
    c = pm.counts(pruned, x)
    assert (c.macs, c.macs - c.macs_nonzero) == (dense, expected)
    assert c.params - c.nonzeros == sum(round(0.5 * n) for n, _ in layers)


def test_batchnorm_recalibration_matches_torch_cumulative_statistics(rng):
    model = random_cnn(rng)
    batches = [torch.randn(8, 1, 28, 28, generator=rng) for _ in range(3)]
    fixed = pm.recalibrate_batchnorm(model, batches)
    x = torch.cat(batches)
    first_bn_input = model.features[0](x)  # (24, 6, 28, 28)
    # Equal-weight average of per-batch means (torch's momentum=None); batches have equal size here
    mean = torch.stack([model.features[0](b).mean((0, 2, 3)) for b in batches]).mean(0)
    var = torch.stack([model.features[0](b).var((0, 2, 3), correction=1) for b in batches]).mean(0)
    torch.testing.assert_close(fixed.features[1].running_mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fixed.features[1].running_var, var, rtol=1e-4, atol=1e-5)
    assert first_bn_input.shape == (24, 6, 28, 28) and not fixed.training
    assert torch.equal(model.features[0].weight, fixed.features[0].weight)


def test_agreement_set_labels_are_the_dense_models_predictions(rng):
    model = random_cnn(rng)
    x = torch.randn(7, 1, 28, 28, generator=rng)
    ref = agreement.labelled(model, x, "seven images")
    assert torch.equal(ref.labels, model(x).argmax(-1))
    assert pm.measure(model, "magnitude", 0.0, ref).top1 == 1.0


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("method", list(pm.METHODS))
def test_measured_accuracy_is_the_shown_pruned_models_exact_count(method, scope, rng):
    model = random_cnn(rng)
    x = torch.randn(40, 1, 28, 28, generator=rng)
    labels = torch.randint(0, 10, (40,), generator=rng)
    dataset = EvalSet(f"random {rng.initial_seed()}", x, labels)
    for amount in (0.0, 0.5, 0.9):
        shown = pm.prune(model, method, amount, scope)  # the copy whose predictions the lesson shows
        correct = int((shown(x).argmax(-1) == labels).sum())
        acc = pm.measure(model, method, amount, dataset, scope)
        assert (acc.correct, acc.n, acc.top1) == (correct, 40, correct / 40)  # the same model: no rounding slack


def test_measured_sensitivity_prunes_only_the_named_layer(rng):
    model = random_cnn(rng)
    x = torch.randn(30, 1, 28, 28, generator=rng)
    dataset = EvalSet(f"random {rng.initial_seed()}", x, torch.randint(0, 10, (30,), generator=rng))
    for name in pm.sensitivity_layers(model, "magnitude"):
        reference = copy.deepcopy(model)
        layer = reference.get_submodule(name)
        w = layer.weight.detach().numpy()
        with torch.no_grad():  # NumPy: zero the round(0.6 · n) smallest |w| of this layer, nothing else
            layer.weight.mul_(torch.from_numpy(smallest_mask(w, round(0.6 * w.size))).float())
        correct = int((reference(x).argmax(-1) == dataset.labels).sum())
        assert pm.measure(model, "magnitude", 0.6, dataset, only=name).correct == correct, name
    assert pm.sensitivity_layers(model, "filters-l1") == tuple(g.name for g in pm.unit_groups(model))


def test_a_trace_in_one_thread_leaves_other_threads_forward_passes_alone(rng):
    """torch.fx replaces nn.Module.__call__ process-wide while it traces: another session's forward pass used to
    fail with NameError("module is not installed as a submodule")."""
    model = random_cnn(rng)
    x = torch.randn(4, 1, 28, 28, generator=rng)
    expected = model(x)
    errors: list[BaseException] = []
    traced, forwards = [0], [0]
    stop = threading.Event()

    def trace_copies() -> None:
        try:
            while not stop.is_set():
                pm.unit_groups(copy.deepcopy(model))  # a plain deep copy: not known, traced each time
                traced[0] += 1
        except Exception as e:  # noqa: BLE001 (collected for the assertion below)
            errors.append(e)

    def forward() -> None:
        try:
            while (traced[0] < 30 or forwards[0] < 300) and not errors:
                assert torch.equal(model(x), expected)
                forwards[0] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            stop.set()

    _run_together(trace_copies, forward)
    assert errors == []
    assert [g.name for g in pm.unit_groups(copy.deepcopy(model))] == [g.name for g in pm.unit_groups(model)]


def test_two_sweeps_at_once_on_one_shared_model_measure_what_one_alone_does(rng):
    """Two sessions sweeping at once (two threads), structured and unstructured, on the same shared model."""
    model = random_cnn(rng)
    x = torch.randn(32, 1, 28, 28, generator=rng)
    dataset = EvalSet(f"random {rng.initial_seed()}", x, torch.randint(0, 10, (32,), generator=rng))
    amounts = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    got: dict[tuple[str, float], int] = {}
    errors: list[BaseException] = []

    def sweep(method: str) -> None:
        try:
            for amount in amounts:
                got[(method, amount)] = pm.measure(model, method, amount, dataset).correct
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    _run_together(*(functools.partial(sweep, method) for method in pm.METHODS))
    assert errors == []
    for (method, amount), correct in got.items():
        shown = pm.prune(model, method, amount)
        assert correct == int((shown(x).argmax(-1) == dataset.labels).sum()), (method, amount)
    assert len(got) == len(pm.METHODS) * len(amounts)


def _run_together(*work) -> None:
    threads = [threading.Thread(target=w) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_the_shared_model_is_unchanged_by_pruning(rng):
    model = zoo.load("mnist-cnn").module
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for method in pm.METHODS:
        pm.shrink(pm.prune(model, method, 0.7, "global"))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("args, message", [
    (("magnitude", 1.0, "layer"), "sparsity 100% is outside 0 % to 99%; pick a value in that range."),
    (("l3", 0.5, "layer"), "no pruning method named 'l3'; choose one of: 'magnitude', 'random', 'filters-l1', "
                           "'filters-l2'"),
    (("magnitude", 0.5, "model"), "no pruning scope named 'model'; choose one of: 'layer', 'global'"),
])
def test_bad_settings_are_input_errors(args, message, rng):
    with pytest.raises(InputError) as e:
        pm.prune(random_cnn(rng), *args)
    assert str(e.value) == message


@pytest.mark.parametrize("build", [random_cnn, random_vit])
def test_speed_times_the_masked_model_or_the_shrunk_ones_counts(build, rng):
    model = build(rng)
    x = torch.randn(4, 1, 28, 28, generator=rng)
    scattered = pm.speed(model, pm.prune(model, "magnitude", 0.5), x, structured=False)
    assert (scattered.batch, scattered.dense_counts, scattered.shrunk_counts) == (4, None, None)
    for timing in (scattered.dense, scattered.pruned):  # every repeat of both, interleaved (tests/core/test_evaluate)
        assert len(timing.times_ms) == evaluate.LATENCY_REPEATS and min(timing.times_ms) > 0
    assert scattered.speedup == scattered.dense.median / scattered.pruned.median
    pruned = pm.prune(model, "filters-l2", 0.5)
    units = pm.speed(model, pruned, x, structured=True)
    # the counts are the dense model's and the shrunk model's own, on the first image of the batch
    assert units.dense_counts == pm.counts(model, x[:1])
    assert units.shrunk_counts == pm.counts(pm.shrink(pruned), x[:1])
    assert units.shrunk_counts.params < units.dense_counts.params and units.pruned.median > 0

"""accuracy() against a NumPy count of argmax == label, and its cache keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explorer.core import evaluate
from explorer.core.data import EvalSet
from explorer.errors import InputError


def random_set(rng: torch.Generator, n: int = 300) -> EvalSet:
    return EvalSet(f"random {n}", torch.randn(n, 1, 28, 28, generator=rng), torch.randint(0, 10, (n,), generator=rng))


def linear_model(rng: torch.Generator) -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval().requires_grad_(False)
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(10, 784, generator=rng))
    return model


def test_accuracy_matches_numpy_argmax_count(rng):
    model, dataset = linear_model(rng), random_set(rng)
    w, b = model[1].weight.numpy(), model[1].bias.numpy()
    logits = dataset.inputs.reshape(len(dataset), -1).numpy() @ w.T + b
    expected = np.mean(logits.argmax(1) == dataset.labels.numpy())
    result = evaluate.accuracy(model, dataset, batch_size=64)  # several batches, the last one partial
    assert result.top1 == pytest.approx(expected)
    assert (result.n, result.dataset) == (300, "random 300")


def test_results_are_cached_per_module_and_per_key(rng):
    model, dataset = linear_model(rng), random_set(rng)
    first = evaluate.accuracy(model, dataset)
    with torch.no_grad():
        model[1].weight.neg_()  # a shared module never changes; a cache hit proves no re-measurement
    assert evaluate.accuracy(model, dataset) is first
    keyed = evaluate.accuracy(model, dataset, key=("copy", 0.5))
    w, b = model[1].weight.numpy(), model[1].bias.numpy()  # the negated weights, counted with NumPy
    logits = dataset.inputs.reshape(len(dataset), -1).numpy() @ w.T + b
    # measured again, on the changed weights (comparing top-1 values alone failed when both came out equal)
    assert keyed is not first and keyed.correct == int((logits.argmax(1) == dataset.labels.numpy()).sum())
    assert evaluate.accuracy(model, dataset, key=("copy", 0.5)) is keyed


def test_keyed_cache_is_bounded(rng, monkeypatch):
    monkeypatch.setattr(evaluate, "MAX_KEYED_RESULTS", 3)
    model, dataset = linear_model(rng), random_set(rng, 20)
    for i in range(10):
        evaluate.accuracy(model, dataset, key=("bounded", i))
    assert sum(1 for k in evaluate._by_key if k[0][0] == "bounded") == 3


def test_empty_sets_and_training_mode_are_refused(rng):
    model = linear_model(rng)
    with pytest.raises(InputError, match="holds no images"):
        evaluate.accuracy(model, EvalSet("empty", torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(InputError, match="measured in eval mode"):
        evaluate.accuracy(model.train(), random_set(rng), key="training")


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_interval_matches_scipy_binomtest(confidence, rng):
    from scipy.stats import binomtest

    for _ in range(25):
        n = int(torch.randint(1, 2000, (1,), generator=rng))
        k = int(torch.randint(0, n + 1, (1,), generator=rng))
        ref = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
        low, high = evaluate.wilson_interval(k, n, confidence)
        assert low == pytest.approx(ref.low, abs=1e-12) and high == pytest.approx(ref.high, abs=1e-12), (k, n)


def test_the_interval_of_a_kept_fraction_and_its_words_come_from_its_count(rng):
    n = int(torch.randint(50, 500, (1,), generator=rng))
    k = int(torch.randint(0, n + 1, (1,), generator=rng))
    low, high = evaluate.wilson_interval(k, n)
    assert evaluate.interval_of(k / n, n) == (low, high)
    assert evaluate.interval_text(k / n, n) == f"95 % CI {100 * low:.1f}–{100 * high:.1f} %, n = {n:,}"
    with pytest.raises(InputError, match="0 ≤ correct ≤ n and n ≥ 1; got 3 of 2"):
        evaluate.wilson_interval(3, 2)


def test_timing_median_and_quartiles_match_numpy(rng):
    times = tuple(float(t) for t in torch.rand(15, generator=rng) * 50 + 10)
    timing = evaluate.Timing(times)
    assert timing.median == pytest.approx(np.median(times))
    assert timing.quartiles == pytest.approx(tuple(np.percentile(times, [25, 75])))  # NumPy's default: linear


def test_timings_whose_ranges_overlap_show_no_measurable_difference(rng):
    # 20-24 ms spread evenly, in a random order with a little jitter, like one model timed on a noisy machine: its
    # interquartile range is about 21-23 ms (uniform random draws may bunch up and leave a range narrower than 1 ms)
    spread = torch.linspace(20, 24, 15)[torch.randperm(15, generator=rng)]
    base = spread + (torch.rand(15, generator=rng) - 0.5) * 0.1
    a = evaluate.Timing(tuple(base.tolist()))
    shifted = evaluate.Timing(tuple((base + 1).tolist()))  # a 1-ms shift inside a 4-ms spread
    apart = evaluate.Timing(tuple((base * 2 + 20).tolist()))  # 60-68 ms: clearly slower
    assert a.overlaps(shifted) and shifted.overlaps(a)
    assert not a.overlaps(apart) and not apart.overlaps(a)


def test_interleaved_timing_alternates_the_candidates_after_the_warmup(monkeypatch):
    order: list[str] = []
    clock = iter(range(1000))
    monkeypatch.setattr(evaluate.time, "perf_counter", lambda: next(clock) / 1000)  # every call 1 ms later
    timings = evaluate.interleaved_ms({"dense": lambda: order.append("dense"),
                                       "pruned": lambda: order.append("pruned")}, repeats=4, warmup=2)
    assert order == ["dense", "pruned"] * 6
    assert {k: len(t.times_ms) for k, t in timings.items()} == {"dense": 4, "pruned": 4}
    assert timings["dense"].times_ms == pytest.approx((1.0,) * 4)  # start and stop: consecutive clock ticks

"""Top-1 accuracy on a held-out set: batched, no gradients, on the device, cached; how sure it is; latency.

Results are cached by (model, dataset), where the model is either a shared module (whose weights
never change) or an explicit `key` naming a modified copy, e.g. ("mnist-cnn", Modification(...)).

An accuracy measured on n images is a proportion k / n; `wilson_interval` is its Wilson score interval
(Wilson 1927; Brown, Cai & DasGupta, "Interval Estimation for a Binomial Proportion", 2001), with z the
normal quantile of the confidence:

    centre = (p̂ + z² / 2n) / (1 + z² / n),   half-width = z / (1 + z² / n) · √(p̂ (1 − p̂) / n + z² / 4n²)

It stays inside [0, 1] and is honest at p̂ = 0 or 1, where the textbook p̂ ± z·√(p̂(1 − p̂)/n) collapses to a
point. Tests compare it with scipy.stats.binomtest(k, n).proportion_ci(method="wilson").

Latency (`interleaved_ms`): one wall time is noise on a shared machine. Each candidate runs `repeats` times,
interleaved (a, b, a, b, ...) after warm-up runs, so that a slow spell of the machine hits both; `Timing` keeps
the times and gives the median and the interquartile range, and two timings whose ranges overlap show no
measurable difference (`Timing.overlaps`).

    python -m explorer.core.evaluate mnist-cnn   # re-measure a card's accuracy on the MNIST test set
"""

from __future__ import annotations

import argparse
import math
import statistics
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
from torch import nn

from explorer.core.data import EvalSet
from explorer.errors import InputError

MAX_KEYED_RESULTS = 512
CONFIDENCE = 0.95
LATENCY_REPEATS = 15  # timed runs of each candidate
LATENCY_WARMUP = 2    # untimed runs of each first (allocations, caches, onnxruntime's first-run set-up)


@dataclass(frozen=True)
class Accuracy:
    top1: float    # fraction correct
    correct: int
    n: int
    dataset: str   # EvalSet.name


_by_module: weakref.WeakKeyDictionary[nn.Module, dict[str, Accuracy]] = weakref.WeakKeyDictionary()
_by_key: OrderedDict[tuple[Hashable, str], Accuracy] = OrderedDict()
_lock = threading.Lock()


def accuracy(model: nn.Module, dataset: EvalSet, key: Hashable | None = None, batch_size: int = 250) -> Accuracy:
    """Top-1 accuracy of `model` on `dataset`; `key` names a modified copy for the cache."""
    if len(dataset) == 0:
        raise InputError(f"{dataset.name} holds no images; accuracy needs at least one.")
    cached = _lookup(model, dataset, key)
    if cached is not None:
        return cached
    result = uncached_accuracy(model, dataset, batch_size)
    with _lock:
        if key is None:
            _by_module.setdefault(model, {})[dataset.name] = result
        else:
            _by_key[(key, dataset.name)] = result
            while len(_by_key) > MAX_KEYED_RESULTS:
                _by_key.popitem(last=False)
    return result


def predictions(model: nn.Module, dataset: EvalSet, batch_size: int = 250) -> torch.Tensor:
    """Predicted class of every image, (N,) int64 on the CPU."""
    dev = next(model.parameters()).device
    was_training = model.training
    if was_training:
        raise InputError("accuracy is measured in eval mode; call model.eval() on your copy first.")
    with torch.inference_mode():
        return torch.cat([model(batch.to(dev, non_blocking=True)).argmax(-1).cpu()
                          for batch in dataset.inputs.split(batch_size)])


def uncached_accuracy(model: nn.Module, dataset: EvalSet, batch_size: int = 250) -> Accuracy:
    """Top-1 accuracy measured now, bypassing the cache (benchmarks, and callers that keep their own)."""
    correct = int((predictions(model, dataset, batch_size) == dataset.labels).sum())
    return Accuracy(correct / len(dataset), correct, len(dataset), dataset.name)


def _lookup(model: nn.Module, dataset: EvalSet, key: Hashable | None) -> Accuracy | None:
    with _lock:
        if key is None:
            return _by_module.get(model, {}).get(dataset.name)
        hit = _by_key.get((key, dataset.name))
        if hit is not None:
            _by_key.move_to_end((key, dataset.name))
        return hit


def wilson_interval(correct: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval (low, high) of the proportion correct / n (see the module)."""
    if n <= 0 or not 0 <= correct <= n:
        raise InputError(f"a proportion needs 0 ≤ correct ≤ n and n ≥ 1; got {correct} of {n}.")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p, z2 = correct / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def interval_of(fraction: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """`wilson_interval` of a kept fraction (a stored accuracy) of n images: k is round(fraction · n)."""
    return wilson_interval(round(fraction * n), n, confidence)


def interval_text(fraction: float, n: int) -> str:
    """"95 % CI 88.2–97.1 %, n = 104": the interval of an accuracy measured on n images, as the lessons write it."""
    low, high = interval_of(fraction, n)
    return f"{100 * CONFIDENCE:.0f} % CI {100 * low:.1f}–{100 * high:.1f} %, n = {n:,}"


@dataclass(frozen=True)
class Timing:
    """Wall times of repeated runs of one thing, in ms."""

    times_ms: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def quartiles(self) -> tuple[float, float]:
        """(25th, 75th) percentile: the interquartile range, the spread the lessons show."""
        if len(self.times_ms) < 2:
            return self.times_ms[0], self.times_ms[0]
        q1, _, q3 = statistics.quantiles(self.times_ms, n=4, method="inclusive")
        return q1, q3

    def overlaps(self, other: Timing) -> bool:
        """Whether the two interquartile ranges overlap: then the timings show no measurable difference."""
        (a1, a3), (b1, b3) = self.quartiles, other.quartiles
        return a1 <= b3 and b1 <= a3


def interleaved_ms(runs: dict[str, Callable[[], object]], repeats: int = LATENCY_REPEATS,
                   warmup: int = LATENCY_WARMUP) -> dict[str, Timing]:
    """Time each of `runs` (name -> one run, which returns once its work is done) `repeats` times, interleaved
    round by round after `warmup` untimed rounds (see the module)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(warmup + repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if round_ >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: Timing(tuple(t)) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    from explorer.core import data, zoo

    parser = argparse.ArgumentParser(description="Measure a zoo model's top-1 accuracy on MNIST.")
    parser.add_argument("model", choices=[n for n in zoo.list() if n.startswith("mnist")])
    parser.add_argument("--split", default="test", choices=sorted(data.SPLITS))
    args = parser.parse_args(argv)
    model = zoo.load(args.model)
    result = accuracy(model.module, data.eval_set(args.split, model.card.mean, model.card.std))
    print(f"{args.model}: {result.top1:.2%} ({result.correct:,} of {result.n:,}) on {result.dataset}")


if __name__ == "__main__":
    main()

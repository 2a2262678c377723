"""Median latency of trace.run per zoo model, and of accuracy() over the MNIST test set.

    python benchmarks/trace.py [--repeats 50]

Targets on the 2-core CPU machine (issue 2): MNIST CNN trace <= 1 ms, ViT <= 2 ms, MobileNetV2 at
224x224 <= 40 ms; CNN accuracy over 10k test images <= 1 s. The traces are timed twice: with the C
library's default allocator, then keeping freed memory as the served app does (explorer/core/allocator.py).
Prints figures only; never asserts.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

from explorer.core import allocator, data, device, evaluate, trace, zoo


def median_ms(fn, repeats: int, warmup: int = 5) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), statistics.quantiles(times, n=20)[-1] if len(times) > 1 else times[0]


def time_traces(repeats: int) -> None:
    for name in zoo.list(available_only=True):
        model = zoo.load(name)
        x = torch.randn(1, *model.card.input_shape)
        with torch.no_grad():
            plain, _ = median_ms(functools.partial(model.module, x), repeats)
        med, p95 = median_ms(functools.partial(trace.run, model.module, x), repeats)
        print(f"trace.run {name:13s} {tuple(x.shape)}: median {med:7.2f} ms, p95 {p95:7.2f} ms "
              f"(plain forward {plain:.2f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print(f"device {device.describe()}, torch {torch.__version__}")
    time_traces(args.repeats)
    if allocator.keep_freed_memory():  # as the served app runs (explorer/serve/tunings.py)
        print("with freed memory kept for reuse (allocator.keep_freed_memory):")
        time_traces(args.repeats)
    if data.is_fetched():
        for name in zoo.list(available_only=True):
            model = zoo.load(name)
            if model.card.preprocess != "mnist":
                continue
            test = data.eval_set("test", model.card.mean, model.card.std)
            measure = functools.partial(evaluate.uncached_accuracy, model.module, test)
            med, p95 = median_ms(measure, max(5, args.repeats // 10), warmup=1)
            print(f"accuracy  {name:13s} over {len(test):,} images: median {med:7.1f} ms, p95 {p95:7.1f} ms")
    else:
        print("accuracy: MNIST not fetched (explorer fetch mnist)")


if __name__ == "__main__":
    main()

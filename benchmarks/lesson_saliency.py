"""The saliency lesson's compute: one map per method, the deletion and insertion pass, and the sanity check.

    python benchmarks/lesson_saliency.py [--repeats 7] [--sanity-repeats 1] [--models mnist-cnn ...] [--threads N]

Per model, on a random input of the model's size, for the predicted class, with the lesson's default settings
(SmoothGrad 16 samples, Integrated Gradients 32 steps from black, Grad-CAM at the default layer): the time for one
map per method; for one deletion curve plus one insertion curve (20 steps each, from the vanilla gradient's map);
and for the whole randomisation sanity check over every layer with all five methods. Targets on the 2-core CPU
machine (issue 22): <= 100 ms for the gradient and Grad-CAM on MobileNetV2, <= 1 s for Integrated Gradients with
32 steps. Medians after one uncounted warm-up run (the sanity check, which runs after the maps, has none), with
freed memory kept for reuse as the served app runs (explorer/core/allocator.py), beside one plain forward pass of the
model: on a shared machine, compare ratios. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import trace as trace_benchmark  # noqa: E402
from explorer.core import allocator, device, zoo  # noqa: E402
from explorer.lessons.saliency import faithfulness, sanity  # noqa: E402
from explorer.lessons.saliency import math as sm  # noqa: E402

MODELS = ("mnist-cnn", "mnist-vit", "mobilenet_v2")


def median_ms(fn, repeats: int, warm_up: bool = True) -> float:
    """benchmarks/trace.py's timing, with one warm-up run (first oneDNN kernels, first allocations) or none."""
    return trace_benchmark.median_ms(fn, repeats, warmup=int(warm_up))[0]


def measure(name: str, repeats: int, sanity_repeats: int) -> Iterator[tuple[str, float]]:
    """(what, median ms) rows for one model, each as soon as it is measured."""
    model = zoo.load(name)
    x = torch.randn(1, *model.card.input_shape, generator=torch.Generator().manual_seed(0))
    settings = sm.Settings(sm.predicted_class(model.module, x), black=sm.black_pixel(model.card.mean, model.card.std))
    with torch.no_grad():  # the yardstick: one plain forward pass, to read the rest as ratios on a busy machine
        yield "plain forward", median_ms(lambda: model.module(x), repeats)
    for method in sm.METHODS:
        yield sm.METHODS[method], median_ms(lambda m=method: sm.attribute(model.module, x, m, settings), repeats)
    heat = sm.attribute(model.module, x, "gradient", settings).heat

    def curves() -> None:
        faithfulness.deletion_curve(model.module, x, heat, settings.target, black=settings.black)
        faithfulness.insertion_curve(model.module, x, heat, settings.target)

    yield "deletion + insertion", median_ms(curves, repeats)
    if sanity_repeats:
        layers = len(sanity.randomisation_order(model.module))
        yield (f"sanity check ({layers} layers)",
               median_ms(lambda: sanity.randomisation_check(model.module, x, settings), sanity_repeats, warm_up=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sanity-repeats", type=int, default=1, help="0 leaves the sanity check out")
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator.keep_freed_memory()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"device {device.describe()}, torch {torch.__version__}; load average {load} (other work slows it)")
    print(f"{'model':13s} {'what':28s} {'median ms':>10s}")
    for name in args.models:
        if not zoo.is_available(name):
            print(f"{name:13s} not on this machine: {zoo.FETCHABLE.get(name, f'explorer train {name}')}")
            continue
        for what, ms in measure(name, args.repeats, args.sanity_repeats):
            print(f"{name:13s} {what:28s} {ms:10.1f}", flush=True)


if __name__ == "__main__":
    main()

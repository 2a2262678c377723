"""Top-1 accuracy on a held-out set: batched, no gradients, on the device, cached.

Results are cached by (model, dataset), where the model is either a shared module (whose weights
never change) or an explicit `key` naming a modified copy, e.g. ("mnist-cnn", Modification(...)).

    python -m explorer.core.evaluate mnist-cnn   # re-measure a card's accuracy on the MNIST test set
"""

from __future__ import annotations

import argparse
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import torch
from torch import nn

from explorer.core.data import EvalSet
from explorer.errors import InputError

MAX_KEYED_RESULTS = 512


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

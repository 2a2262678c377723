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

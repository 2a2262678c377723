"""explorer/core/shared_results.py: one computation per key for every session, however many ask at once; a bounded
memory; failures never kept; digests that tell inputs apart."""

from __future__ import annotations

import dataclasses
import gc
import threading
import weakref

import numpy as np
import pytest
import torch

from explorer.core.shared_results import SharedResults, input_digest, model_token, size_of


def counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value

    return compute, calls


def test_a_key_is_computed_once_and_its_result_read_back():
    results = SharedResults(budget=10_000)
    compute, calls = counting(np.zeros(10))
    first = results.get(("map", 1), compute)
    assert results.get(("map", 1), compute) is first
    assert len(calls) == 1
    results.get(("map", 2), compute)
    assert len(calls) == 2


def test_requests_for_a_key_being_computed_wait_for_its_answer():
    results = SharedResults(budget=10_000)
    started, release = threading.Event(), threading.Event()
    calls = []

    def slow():
        calls.append(1)
        started.set()
        assert release.wait(10)
        return np.arange(4)

    answers = []
    first = threading.Thread(target=lambda: answers.append(results.get("k", slow)))
    first.start()
    assert started.wait(10)
    waiting = [threading.Thread(target=lambda: answers.append(results.get("k", slow))) for _ in range(6)]
    for t in waiting:
        t.start()
    release.set()
    for t in [first, *waiting]:
        t.join(10)
    assert len(calls) == 1
    assert len(answers) == 7 and all(a is answers[0] for a in answers)


def test_a_failure_reaches_every_waiting_request_and_is_not_kept():
    results = SharedResults(budget=10_000)
    started, release = threading.Event(), threading.Event()

    def failing():
        started.set()
        assert release.wait(10)
        raise ValueError("no")

    errors = []

    def ask():
        try:
            results.get("k", failing)
        except ValueError as e:
            errors.append(e)

    threads = [threading.Thread(target=ask)]
    threads[0].start()
    assert started.wait(10)
    threads += [threading.Thread(target=ask) for _ in range(3)]
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(10)
    assert len(errors) == 4
    compute, calls = counting(5)
    assert results.get("k", compute) == 5 and calls == [1]  # computed again, now kept
    assert len(results) == 1


def test_the_least_recently_used_results_go_first_and_memory_stays_within_the_budget(rng):
    results = SharedResults(budget=1000)
    arrays = {k: torch.rand(100, generator=rng) for k in "abcd"}  # 400 bytes each
    for k in "ab":
        results.get(k, lambda k=k: arrays[k])
    results.get("a", lambda: pytest.fail("a is kept"))  # a is now the most recently used
    results.get("c", lambda: arrays["c"])  # 1200 bytes: b goes
    assert results.used == 800 and len(results) == 2
    compute, calls = counting(arrays["b"])
    results.get("b", compute)
    assert calls == [1]  # b was dropped, a (used after it) was kept until now
    for k in "cb":
        results.get(k, lambda k=k: pytest.fail(f"{k} is kept"))
    assert results.used <= results.budget


def test_kept_reads_without_computing_and_counts_as_a_use():
    results = SharedResults(budget=800)
    assert results.kept("a") is None and len(results) == 0
    results.get("a", lambda: np.zeros(50))  # 400 bytes
    results.get("b", lambda: np.zeros(50))
    assert results.kept("a")[0].shape == (50,)  # a is now the most recently used
    results.get("c", lambda: np.zeros(50))  # b goes
    assert results.kept("b") is None and results.kept("a") is not None


def test_a_result_larger_than_the_budget_is_returned_and_not_kept():
    results = SharedResults(budget=100)
    big = np.zeros(1000)
    assert results.get("big", lambda: big) is big
    assert len(results) == 0 and results.used == 0


def test_a_budget_of_zero_keeps_nothing():
    results = SharedResults(budget=0)
    compute, calls = counting(np.zeros(1))
    results.get("k", compute)
    results.get("k", compute)
    assert len(calls) == 2


def test_the_digest_is_equal_for_equal_inputs_and_differs_for_any_change(rng):
    x = torch.rand(1, 3, 8, 8, generator=rng)
    assert input_digest(x) == input_digest(x.clone())
    assert input_digest(x) == input_digest(x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2))  # same values
    changed = x.clone()
    changed[0, 2, 7, 7] = torch.nextafter(changed[0, 2, 7, 7], torch.tensor(2.0))  # one value, by one float step
    assert input_digest(changed) != input_digest(x)
    assert input_digest(x.reshape(1, 3, 4, 16)) != input_digest(x)  # the same bytes, another shape
    assert input_digest(x.double()) != input_digest(x)


def test_the_size_counts_the_tensors_and_arrays_inside_results():
    @dataclasses.dataclass(frozen=True)
    class Result:
        values: torch.Tensor
        heat: np.ndarray
        name: str

    r = Result(torch.zeros(2, 5), np.zeros((4, 4)), "x")
    assert size_of(r) == 40 + 128 + size_of("x")
    assert size_of((r, [r], {"k": r})) == 3 * size_of(r) + size_of("k")
    # a view keeps all of its storage alive, and is counted so
    assert size_of(torch.zeros(100, 10)[:1]) == 4000 and size_of(np.zeros((100, 10))[:1]) == 8000


def test_a_model_token_does_not_keep_the_model_alive_and_never_matches_another_model():
    class Model:
        pass

    results, model = SharedResults(budget=10_000), Model()
    results.get(("map", model_token(model)), lambda: np.zeros(4))
    assert results.kept(("map", model_token(model))) is not None  # the same model: found
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None  # the kept result did not keep its model alive
    others = [Model() for _ in range(100)]  # some may live where the dead one did: same id, same hash
    assert all(results.kept(("map", model_token(other))) is None for other in others)

"""Results that depend only on a model and an input, computed once for every session of the process.

A class clicks the same gallery digits. Thirty students asking for the saliency maps of one digit, or for the
frequency spectra of every layer on it, get one computation: the first request computes, a request for the same key
while that runs waits for its answer, and later ones read the kept result.

- A key names what is computed and everything it depends on: the model (`model_token`: a model loaded once per
  process, so another model or another version of one, even under the same name, is another key; held weakly, so
  that a student's own model, once replaced, is not kept alive by its results), `input_digest` of the input tensor,
  and the settings the computation reads.
- Results are kept most recently used first, within a budget of bytes (the tensors and arrays they hold, see
  `size_of`): memory stays bounded however long a class runs. A result larger than the whole budget is returned and
  not kept.
- A failure is not kept: it reaches every request waiting for it, and the next request computes again.
- Every computation kept here must be deterministic (a seeded generator at most): a result read back from the
  cache must be the one the reader would have computed.

`EXPLORER_RESULTS_CACHE_MB` sets the budget (default 64; 0 keeps nothing, and every request computes), once for the
lessons' results (RESULTS) and once for the traces every view reads (TRACES).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch

ENV_VAR = "EXPLORER_RESULTS_CACHE_MB"
DEFAULT_MB = 64


def model_token(model: object) -> weakref.ref:
    """The model's part of a key: equal for the same model object while it lives, and never equal to another
    (a dead reference equals only itself), without keeping the model alive."""
    return weakref.ref(model)


def input_digest(x: torch.Tensor) -> tuple:
    """(shape, dtype, BLAKE2b of the values) of a tensor: equal for equal inputs, whichever session made them."""
    values = x.detach().cpu().contiguous()
    return tuple(values.shape), str(values.dtype), hashlib.blake2b(values.numpy().tobytes(), digest_size=16).digest()


def size_of(value: Any) -> int:
    """Bytes held by the tensors and arrays in `value` (all of the memory a view keeps alive; dataclasses, tuples,
    lists and dicts are looked into), plus the object's own size for anything else."""
    if isinstance(value, torch.Tensor):
        return value.untyped_storage().nbytes()  # a view keeps all of its storage alive
    if isinstance(value, np.ndarray):
        return value.base.nbytes if isinstance(value.base, np.ndarray) else value.nbytes
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(size_of(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, (tuple, list)):
        return sum(size_of(v) for v in value)
    if isinstance(value, dict):
        return sum(size_of(k) + size_of(v) for k, v in value.items())
    return sys.getsizeof(value)


class SharedResults:
    """compute() once per key for the whole process, the most recently used results kept within `budget` bytes."""

    def __init__(self, budget: int):
        self.budget = budget
        self._lock = threading.Lock()
        self._kept: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()  # key -> (result, its size)
        self._used = 0
        self._running: dict[Hashable, Future] = {}  # key -> the answer of the computation under way

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The result for `key`: kept, or being computed by another request (waited for), or computed now."""
        with self._lock:
            found = self._read(key)
            if found is not None:
                return found[0]
            running = self._running.get(key)
            if running is None:
                answer = self._running[key] = Future()
        if running is not None:
            return running.result()
        try:
            result = compute()
        except BaseException as e:
            with self._lock:
                del self._running[key]
            answer.set_exception(e)
            raise
        with self._lock:
            del self._running[key]
            self._keep(key, result)
        answer.set_result(result)
        return result

    def kept(self, key: Hashable) -> tuple[Any] | None:
        """(the kept result,) for `key`, or None where none is kept: never computes or waits."""
        with self._lock:
            return self._read(key)

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def used(self) -> int:
        """Bytes held by the kept results."""
        return self._used

    def _read(self, key: Hashable) -> tuple[Any] | None:
        """(the kept result,) marked as the most recently used, or None; under the lock."""
        if key not in self._kept:
            return None
        self._kept.move_to_end(key)
        return (self._kept[key][0],)

    def _keep(self, key: Hashable, result: Any) -> None:
        size = size_of(result)
        if size > self.budget:
            return
        self._kept[key] = (result, size)
        self._used += size
        while self._used > self.budget:
            _, (_, dropped) = self._kept.popitem(last=False)
            self._used -= dropped


def _budget() -> int:
    return int(float(os.environ.get(ENV_VAR, DEFAULT_MB)) * 2**20)


RESULTS = SharedResults(_budget())
# Every layer's output for one (model, input) (explorer/session/state.py's `infer`), kept apart from RESULTS: one
# trace of a 224×224 model is tens of MB and must not push the lessons' results (saliency maps, spectra) out.
TRACES = SharedResults(_budget())

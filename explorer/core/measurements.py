"""Measurements that do not depend on the student (accuracy at a pruning or quantization setting): measured
once, kept, and shared by every session and every server process.

Looked up in two places, in order:

1. **Stored beside the card**: `models/NAME.measurements.json`, written by `explorer measure NAME`
   (`explorer/measure.py`) with the date, the command and the weights' SHA-256. The shipped models carry
   their accuracy-vs-sparsity and accuracy-vs-bits curves and per-layer sensitivities this way, so the
   lessons show them at once. A stored file whose SHA-256 is not the weights' is ignored (retrained weights).
2. **The on-disk cache** (`cache_dir()/measurements`): everything else (MobileNetV2 once fetched, a
   student's own model, settings off the stored grid) is measured once per machine and kept there.
   diskcache keeps it in SQLite: several processes read and write it at once, and a crash mid-write leaves
   the previous contents intact. Values are stored as JSON (no pickle is ever read back).

A key is (weights' SHA-256, what, setting, dataset): `what` names the quantity ("pruning", "quantization",
...), `setting` is a flat mapping of JSON values (canonicalised, so key order does not matter) and `dataset`
is `EvalSet.name`, which says which images were used.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import diskcache
import torch
from torch import nn

from explorer.core.paths import MODELS, cache_dir

Setting = Mapping[str, object]
FORMAT = 1  # of the stored file; bump when its layout changes
_SUFFIX = ".measurements.json"


@dataclass(frozen=True)
class Key:
    what: str
    setting: str   # canonical JSON of the setting
    dataset: str

    @classmethod
    def of(cls, what: str, setting: Setting, dataset: str) -> Key:
        return cls(what, json.dumps(dict(setting), sort_keys=True, separators=(",", ":")), dataset)

    def as_text(self) -> str:
        return json.dumps([self.what, json.loads(self.setting), self.dataset], sort_keys=True, separators=(",", ":"))


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, dtypes, shapes, bytes): the same for the same
    weights whatever file or process they came from. Computed once per module object."""
    with _hash_lock:
        known = _hashes.get(module)
    if known is not None:
        return known
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    value = digest.hexdigest()
    with _hash_lock:
        _hashes[module] = value
    return value


_hashes: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()
_hash_lock = threading.Lock()


# --- the stored file beside the card ------------------------------------------------------------------------


def stored_path(model_name: str, folder: Path | None = None) -> Path:
    """`models/NAME.measurements.json` (or in `folder`)."""
    return (MODELS if folder is None else folder) / f"{model_name}{_SUFFIX}"


@dataclass(frozen=True)
class Stored:
    """The contents of a `.measurements.json`: values by key, with where they came from."""

    model: str
    weights_sha256: str
    measured_by: str
    measured_date: str
    values: dict[Key, float]

    @classmethod
    def read(cls, path: Path) -> Stored:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"{path}: format {raw.get('format')!r}, expected {FORMAT}")
        values = {Key.of(e["what"], e["setting"], e["dataset"]): float(e["value"]) for e in raw["measurements"]}
        return cls(raw["model"], raw["weights_sha256"], raw["measured_by"], raw["measured_date"], values)

    def write(self, path: Path) -> None:
        entries = sorted(({"what": k.what, "setting": json.loads(k.setting), "dataset": k.dataset, "value": v}
                          for k, v in self.values.items()), key=lambda e: json.dumps(e, sort_keys=True))
        text = json.dumps({"format": FORMAT, "model": self.model, "weights_sha256": self.weights_sha256,
                           "measured_by": self.measured_by, "measured_date": self.measured_date,
                           "measurements": entries}, indent=1) + "\n"
        partial = path.with_suffix(".partial")
        partial.write_text(text)
        partial.replace(path)  # atomic: a reader sees the old file or the new one, never half of one


_stored: dict[tuple[str, str], dict[Key, float]] = {}
_stored_lock = threading.Lock()


def _stored_values(model_name: str, sha: str) -> dict[Key, float]:
    """The stored values for this model name, if the file exists and was measured on these weights."""
    with _stored_lock:
        if (model_name, sha) not in _stored:
            path = stored_path(model_name)
            stored = Stored.read(path) if path.exists() else None
            _stored[(model_name, sha)] = stored.values if stored and stored.weights_sha256 == sha else {}
        return _stored[(model_name, sha)]


def forget_stored() -> None:
    """Re-read stored files on next use (after `explorer measure` rewrote one in this process)."""
    with _stored_lock:
        _stored.clear()


# --- the on-disk cache ---------------------------------------------------------------------------------------


_cache: diskcache.Cache | None = None
_cache_folder: Path | None = None
_cache_lock = threading.Lock()


def disk_cache() -> diskcache.Cache:
    """The cache shared by every process of this machine (re-opened if EXPLORER_CACHE changed)."""
    global _cache, _cache_folder
    folder = cache_dir() / "measurements"
    with _cache_lock:
        if _cache is None or _cache_folder != folder:
            _cache = diskcache.Cache(str(folder), disk=diskcache.JSONDisk, size_limit=2**28)
            _cache_folder = folder
        return _cache


def _cache_key(sha: str, key: Key) -> str:
    return f"{sha}|{key.as_text()}"


@dataclass(frozen=True)
class Planned:
    """One measurement that `explorer measure` stores beside a card: what, at which setting, on which data, and
    how to measure it."""

    what: str
    setting: Setting
    dataset: str
    measure: Callable[[], float]


# --- lookups -------------------------------------------------------------------------------------------------


class Measurer:
    """The measurements of one model: `get` looks up, `measured` looks up or measures and keeps.

    `model_name` chooses the stored file; `sha` names the weights (`weights_sha256(module)`)."""

    def __init__(self, model_name: str, sha: str):
        self.model_name, self.sha = model_name, sha

    @classmethod
    def of(cls, model_name: str, module: nn.Module) -> Measurer:
        return cls(model_name, weights_sha256(module))

    def get(self, what: str, setting: Setting, dataset: str) -> float | None:
        key = Key.of(what, setting, dataset)
        stored = _stored_values(self.model_name, self.sha).get(key)
        if stored is not None:
            return stored
        value = disk_cache().get(_cache_key(self.sha, key))
        return None if value is None else float(value)

    def measured(self, what: str, setting: Setting, dataset: str, measure: Callable[[], float]) -> float:
        """The kept value, or `measure()` now, kept for every session and process."""
        value = self.get(what, setting, dataset)
        if value is None:
            value = float(measure())
            disk_cache().set(_cache_key(self.sha, Key.of(what, setting, dataset)), value)
        return value

    def store(self, entries: Iterable[tuple[str, Setting, str]], command: str, folder: Path | None = None) -> Path:
        """Write the stored file beside the card with the kept values of `entries` (measure them first)."""
        values = {}
        for what, setting, dataset in entries:
            value = self.get(what, setting, dataset)
            if value is None:
                raise KeyError(f"{what} {dict(setting)} on {dataset} has not been measured")
            values[Key.of(what, setting, dataset)] = value
        path = stored_path(self.model_name, folder)
        Stored(self.model_name, self.sha, command, datetime.date.today().isoformat(), values).write(path)
        forget_stored()
        return path

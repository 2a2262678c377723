"""Measurements kept beside the card and in the on-disk cache shared by every process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from explorer.core import measurements
from explorer.core.measurements import Measurer


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "cache"))
    measurements.forget_stored()
    yield
    measurements.forget_stored()


def small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))


def test_the_weights_hash_names_the_weights_not_the_object():
    a, b = small_net(0), small_net(0)
    assert measurements.weights_sha256(a) == measurements.weights_sha256(b)
    assert measurements.weights_sha256(a) != measurements.weights_sha256(small_net(1))
    c = small_net(0)
    with torch.no_grad():
        c[3].bias[0] += 1e-6  # one value in one tensor
    assert measurements.weights_sha256(c) != measurements.weights_sha256(a)
    renamed = nn.Sequential()
    for i, m in enumerate(small_net(0)):
        renamed.add_module(f"layer{i}", m)
    assert measurements.weights_sha256(renamed) != measurements.weights_sha256(a)  # names are part of the weights


def test_a_measurement_is_made_once_and_the_setting_order_does_not_matter():
    calls = []
    m = Measurer("net", "sha-a")
    first = m.measured("pruning", {"method": "magnitude", "amount": 0.5}, "set", lambda: calls.append(1) or 0.75)
    again = m.measured("pruning", {"amount": 0.5, "method": "magnitude"}, "set", lambda: calls.append(1) or 0.0)
    assert first == again == 0.75 and calls == [1]
    assert m.get("pruning", {"amount": 0.5, "method": "magnitude"}, "other set") is None  # the data is in the key
    assert Measurer("net", "sha-b").get("pruning", {"amount": 0.5, "method": "magnitude"}, "set") is None


def test_a_second_process_reuses_the_disk_cache(tmp_path):
    Measurer("net", "sha-a").measured("quantization", {"bits": 4}, "set", lambda: 0.5)
    script = ("from explorer.core.measurements import Measurer; "
              "print(Measurer('net', 'sha-a').get('quantization', {'bits': 4}, 'set'))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0.5"


def test_the_stored_file_is_read_for_the_same_weights_only(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    m = Measurer("net", "sha-a")
    m.measured("pruning", {"amount": 0.2}, "set", lambda: 0.9)
    path = m.store([("pruning", {"amount": 0.2}, "set")], command="explorer measure net", folder=folder)
    raw = json.loads(path.read_text())
    assert raw["weights_sha256"] == "sha-a" and raw["measured_by"] == "explorer measure net"
    assert raw["measurements"] == [{"what": "pruning", "setting": {"amount": 0.2}, "dataset": "set", "value": 0.9}]
    assert measurements.Stored.read(path).values == {measurements.Key.of("pruning", {"amount": 0.2}, "set"): 0.9}

    monkeypatch.setattr(measurements, "MODELS", folder)
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "empty cache"))  # only the stored file can answer now
    measurements.forget_stored()
    assert Measurer("net", "sha-a").get("pruning", {"amount": 0.2}, "set") == 0.9
    assert Measurer("net", "retrained").get("pruning", {"amount": 0.2}, "set") is None


def test_storing_an_unmeasured_setting_is_refused(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    with pytest.raises(KeyError, match="has not been measured"):
        Measurer("net", "sha-a").store([("pruning", {"amount": 0.3}, "set")], command="x", folder=folder)
    assert not list(folder.iterdir())  # nothing half-written


def test_a_writer_killed_mid_write_leaves_the_cache_readable(tmp_path):
    Measurer("net", "sha-a").measured("pruning", {"amount": 0.1}, "set", lambda: 0.8)
    # A process that writes many values and is killed while writing.
    script = ("import os, signal\nfrom explorer.core.measurements import Measurer\nm = Measurer('net', 'sha-a')\n"
              "for i in range(100000):\n"
              "    m.measured('pruning', {'amount': i}, 'set', lambda: 0.5)\n"
              "    if i == 200: os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == -9
    m = Measurer("net", "sha-a")
    assert m.get("pruning", {"amount": 0.1}, "set") == 0.8
    assert m.get("pruning", {"amount": 150}, "set") == 0.5
    assert m.measured("pruning", {"amount": 0.7}, "set", lambda: 0.6) == 0.6  # and still takes new values

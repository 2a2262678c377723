"""The model registry: cards (explorer.core.card), one shared read-only instance per model and process.

A model card is a JSON file beside its safetensors weights. Every number on it is measured by the
command named in `evaluated_by`, and tests re-check the card against the model and the weights.
Shipped models live in models/; fetched ones (MobileNetV2) in the user cache; bring-your-own
models are registered in memory with `from_module`.
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
import datetime
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from explorer.core import complexity, images, trace
from explorer.core.architectures import ARCHITECTURES
from explorer.core.card import ModelCard
from explorer.core.device import device
from explorer.core.fetch import sha256_of
from explorer.core.paths import ASSETS, MODELS, cache_dir
from explorer.errors import InputError, choice

IMAGENET_LABELS = ASSETS / "imagenet_classes.txt"
FETCHABLE = {"mobilenet_v2": "explorer fetch mobilenet_v2"}


@dataclass(frozen=True, eq=False)
class ZooModel:
    """A loaded model: the shared module (eval mode, on the device, never modified) and its card."""

    module: nn.Module
    card: ModelCard

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    def preprocess(self, obj: object) -> Tensor:
        """A user's image (bytes, PIL image, array, canvas strokes) as a (1, C, H, W) input."""
        return images.to_input(obj, self.card)

    def check(self, x: Tensor) -> Tensor:
        """The input, validated against the card's (N, C, H, W), or an InputError."""
        x = trace.check_input(x)
        if x.dim() != 4 or tuple(x.shape[1:]) != self.card.input_shape:
            raise InputError(f"{self.name} takes inputs of shape (N, {', '.join(map(str, self.card.input_shape))}), "
                             f"got {tuple(x.shape)}; use preprocess() to turn an image into one.")
        return x

    def trace(self, x: Tensor, **options) -> trace.Trace:
        return trace.run(self.module, self.check(x), **options)

    @torch.no_grad()
    def probabilities(self, x: Tensor) -> Tensor:
        """Softmax over classes, (N, classes), on the CPU."""
        return self.module(self.check(x).to(device())).softmax(-1).cpu()


_custom: dict[str, Callable[[], ZooModel]] = {}
_loaded: dict[str, ZooModel] = {}
_load_lock = threading.Lock()


def card_path(name: str) -> Path:
    """Where the card of a shipped or fetched model lives."""
    folder = cache_dir() / "models" if name in FETCHABLE else MODELS
    return folder / f"{name}.json"


def list(available_only: bool = False) -> builtins.list[str]:  # noqa: A001  (the issue's API name)
    """Names of the registered models: shipped, fetchable (once fetched, or all) and your own."""
    names = sorted(ARCHITECTURES) + sorted(_custom)
    return [n for n in names if not available_only or is_available(n)]


def is_available(name: str) -> bool:
    return name in _custom or card_path(name).exists()


def card(name: str) -> ModelCard:
    choice(name, list(), "model")
    if name in _custom:
        return load(name).card
    path = card_path(name)
    if not path.exists():
        raise InputError(f"{name} is not on this machine yet; run `{FETCHABLE.get(name, f'explorer train {name}')}` "
                         "first.")
    return ModelCard.read(path)


def load(name: str) -> ZooModel:
    """The shared instance of a model: built, weights read and checked once per process."""
    with _load_lock:
        if name not in _loaded:
            choice(name, list(), "model")
            _loaded[name] = _custom[name]() if name in _custom else _load_weights(card(name), card_path(name).parent)
        return _loaded[name]


def _load_weights(model_card: ModelCard, folder: Path) -> ZooModel:
    path = folder / model_card.weights
    actual = sha256_of(path)
    if actual != model_card.sha256:
        raise InputError(f"{path} has SHA-256 {actual} but its card says {model_card.sha256}; "
                         f"the file was changed. Re-run `{model_card.evaluated_by}` or restore it.")
    module = ARCHITECTURES[model_card.architecture]()
    module.load_state_dict(load_file(path))
    return ZooModel(share(module), model_card)


def share(module: nn.Module) -> nn.Module:
    """Make a module the shared read-only instance: eval mode, no gradients, on the device.

    Conv weights go channels-last: oneDNN's convolutions run about twice as fast so on the CPU
    (benchmarks/trace.py), with the same results.
    """
    return module.eval().requires_grad_(False).to(device(), memory_format=torch.channels_last)


def from_module(module: nn.Module, input_shape: tuple[int, int, int], labels: builtins.list[str] | tuple[str, ...],
                mean: tuple[float, ...], std: tuple[float, ...], name: str = "my-model", family: str = "cnn",
                task: str = "your own model", source: str = "registered with explorer.zoo.from_module",
                license: str = "unknown", preprocess: str | None = None, architecture: str = "custom") -> ZooModel:
    """Register any nn.Module so that the lessons can use it. It is copied, never changed.

    `preprocess` (see core/images.py) defaults to "mnist" for a 1x28x28 input, else "resize";
    `architecture` names the class in architectures.ARCHITECTURES when the module is one of ours.
    """
    if not isinstance(module, nn.Module):
        raise InputError(f"from_module needs a torch nn.Module, got {type(module).__name__}.")
    if name in ARCHITECTURES or name in _custom:
        raise InputError(f"a model named {name!r} is already registered; pick another name.")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"input_shape must be (channels, height, width), got {tuple(input_shape)}.")
    if len(mean) != shape[0] or len(std) != shape[0] or min(std) <= 0:
        raise InputError(f"mean and std need one value per input channel ({shape[0]}), and std > 0; "
                         f"got mean={tuple(mean)}, std={tuple(std)}.")
    shared = share(copy.deepcopy(module))
    probe = trace.run(shared, torch.zeros(1, *shape, device=device()))
    classes = probe.logits.shape[-1]
    if len(labels) != classes:
        raise InputError(f"the model gives {classes} outputs but {len(labels)} labels were given.")
    model_card = ModelCard(
        name=name, family=family, task=task, architecture=architecture, input_shape=shape,  # type: ignore[arg-type]
        preprocess=preprocess or ("mnist" if shape == (1, 28, 28) else "resize"), mean=tuple(mean), std=tuple(std),
        labels=tuple(str(label) for label in labels), n_params=sum(p.numel() for p in shared.parameters()),
        macs=complexity.total_macs(probe), top1=None, evaluated_on="", evaluated_date="", evaluated_by="",
        source=source, license=license, weights="", sha256="")
    zoo_model = ZooModel(shared, model_card)
    _custom[name] = lambda: zoo_model
    return zoo_model


def unregister(name: str) -> None:
    """Forget a model registered with from_module (tests, or a student replacing their upload)."""
    choice(name, _custom, "registered model")
    del _custom[name]
    _loaded.pop(name, None)


def write_model(module: nn.Module, model_card: ModelCard, folder: Path) -> ModelCard:
    """Save weights as safetensors beside the card, with the weights' SHA-256 filled in."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{model_card.name}.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, weights)
    model_card = dataclasses.replace(model_card, weights=weights.name, sha256=sha256_of(weights))
    model_card.write(folder / f"{model_card.name}.json")
    return model_card


def measured_card(module: nn.Module, *, name: str, family: str, task: str, preprocess: str,
                  input_shape: tuple[int, int, int], mean: tuple[float, ...], std: tuple[float, ...],
                  labels: tuple[str, ...], top1: float | None, evaluated_on: str, evaluated_by: str,
                  source: str, license: str) -> ModelCard:
    """A card whose parameter and MAC counts are measured on the module itself."""
    probe = trace.run(module.eval(), torch.zeros(1, *input_shape, device=trace.device_of(module)))
    return ModelCard(
        name=name, family=family, task=task, architecture=name, input_shape=input_shape, preprocess=preprocess,
        mean=mean, std=std, labels=labels, n_params=sum(p.numel() for p in module.parameters()),
        macs=complexity.total_macs(probe), top1=top1, evaluated_on=evaluated_on,
        evaluated_date=datetime.date.today().isoformat(), evaluated_by=evaluated_by, source=source,
        license=license, weights="", sha256="")


def imagenet_labels() -> tuple[str, ...]:
    return tuple(IMAGENET_LABELS.read_text().splitlines())

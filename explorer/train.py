"""Train a shipped MNIST model and write its weights and measured card to models/.

    python -m explorer.train mnist-cnn     # or: explorer train mnist-vit

Reproducible: a fixed seed, a fixed recipe per model (the RECIPES table), the 60,000 MNIST
training images with light random affine augmentation, and the card's accuracy measured on the
full 10,000-image MNIST test set, which training never sees.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from explorer.core import data, evaluate, zoo
from explorer.core.architectures import ARCHITECTURES
from explorer.core.data import MNIST_MEAN, MNIST_STD
from explorer.core.device import device
from explorer.core.paths import MODELS


@dataclass(frozen=True)
class Recipe:
    family: str
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int = 128
    rotate_deg: float = 10.0   # augmentation: random rotation, scale and shift
    scale: float = 0.1
    shift_px: float = 2.0
    label_smoothing: float = 0.0


RECIPES = {
    "mnist-cnn": Recipe("cnn", epochs=15, lr=4e-3, weight_decay=5e-4),
    "mnist-vit": Recipe("vit", epochs=30, lr=2e-3, weight_decay=0.05, label_smoothing=0.05),
}


def augment(x: Tensor, recipe: Recipe, generator: torch.Generator) -> Tensor:
    """Random rotation, scale and shift of a (B, 1, 28, 28) batch in [0, 1], zeros outside."""
    B, _, H, _ = x.shape
    u = torch.rand(B, 4, generator=generator) * 2 - 1  # (B, 4) in [-1, 1]
    angle, scale = u[:, 0] * math.radians(recipe.rotate_deg), 1 + u[:, 1] * recipe.scale
    shift = u[:, 2:] * recipe.shift_px * 2 / H  # pixels -> affine_grid's [-1, 1] coordinates
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def train(name: str, seed: int = 0, out: Path = MODELS, epochs: int | None = None) -> zoo.ModelCard:
    recipe = RECIPES[name]
    epochs = epochs or recipe.epochs
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    dev = device()
    model = ARCHITECTURES[name]().to(dev)
    train_set = data.mnist("train")
    images = torch.from_numpy(train_set.images).float().div_(255).unsqueeze(1)  # (N, 1, 28, 28) in [0, 1]
    labels = torch.from_numpy(train_set.labels.astype("int64"))
    steps_per_epoch = len(labels) // recipe.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=epochs * steps_per_epoch,
                                                   pct_start=0.15)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        bar = tqdm(range(steps_per_epoch), desc=f"{name} epoch {epoch + 1}/{epochs}", unit="batch")
        for step in bar:
            idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            x = (augment(images[idx], recipe, generator) - MNIST_MEAN[0]) / MNIST_STD[0]
            loss = F.cross_entropy(model(x.to(dev)), labels[idx].to(dev), label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    minutes = (time.perf_counter() - start) / 60
    return _write(name, model, recipe, seed, minutes, out)


def _write(name: str, model: nn.Module, recipe: Recipe, seed: int, minutes: float, out: Path) -> zoo.ModelCard:
    model = zoo.share(model)
    test = data.eval_set("test", MNIST_MEAN, MNIST_STD)
    result = evaluate.accuracy(model, test)
    card = zoo.measured_card(
        model, name=name, family=recipe.family, task="MNIST handwritten digits, 10 classes", preprocess="mnist",
        input_shape=(1, 28, 28), mean=MNIST_MEAN, std=MNIST_STD, labels=tuple(str(d) for d in range(10)),
        top1=result.top1, evaluated_on=f"{test.name} (split: test)", evaluated_by=f"python -m explorer.train {name}",
        source=f"trained by `python -m explorer.train {name}` (seed {seed}, {recipe.epochs} epochs, "
               f"{minutes:.1f} min on {device().type}) on the MNIST training set, 60,000 images",
        license="BSD-3-Clause (this project); trained on MNIST, CC BY-SA 3.0")
    card = zoo.write_model(model, card, out)
    print(f"{name}: {result.top1:.2%} on {result.dataset}; wrote {out / card.weights} in {minutes:.1f} min")
    return card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train a shipped MNIST model (writes models/NAME.*).")
    parser.add_argument("model", choices=sorted(RECIPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    parser.add_argument("--out", type=Path, default=MODELS, help="folder for the weights and card")
    args = parser.parse_args(argv)
    train(args.model, args.seed, args.out, args.epochs)


if __name__ == "__main__":
    main()

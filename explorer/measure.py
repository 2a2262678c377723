"""`explorer measure NAME` (also `python -m explorer.measure NAME`): measure the curves and sensitivities that the
lessons show for a model, and store them beside its card (`models/NAME.measurements.json`, see
explorer/core/measurements.py), with the date, this command and the weights' SHA-256.

Each lesson that shows such measurements says what to measure in its `measured.py` (`plan(model)`); values
already in the on-disk cache are not measured again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from explorer.core import measurements, zoo


def plan(model: zoo.ZooModel) -> list[measurements.Planned]:
    from explorer.lessons.pruning import measured as pruning
    from explorer.lessons.quantization import measured as quantization

    return [*pruning.plan(model), *quantization.plan(model)]


def measure(name: str, folder: Path | None = None) -> Path:
    """Measure what the lessons' plans list for zoo model `name` (reusing kept values) and store it beside the card."""
    model = zoo.load(name)
    measurer = measurements.Measurer.of(name, model.module)
    todo = plan(model)
    for item in tqdm(todo, desc=f"measuring {name}", unit="setting"):
        measurer.measured(item.what, item.setting, item.dataset, item.measure)
    return measurer.store([(i.what, i.setting, i.dataset) for i in todo], command=f"explorer measure {name}",
                          folder=folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="explorer measure", description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=zoo.list(available_only=True))
    args = parser.parse_args(argv)
    print(f"wrote {measure(args.model)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

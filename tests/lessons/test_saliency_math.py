"""The saliency lesson's attributions against Captum 0.9, on random small CNNs and on the shipped models.

Tolerances: ours and Captum's run the same float32 operations, but in other batch splits and summation orders, so
the maps agree to float32 rounding of the largest value (about 1e-6 relative), well inside rtol=1e-4 and atol of
1e-5 times the map's largest magnitude.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.ndimage
import torch
from captum.attr import InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency
from torch import nn

from explorer.core import zoo
from explorer.core.architectures import MnistViT
from explorer.errors import InputError
from explorer.lessons.saliency import math as sm

SHIPPED = [pytest.param(name, marks=pytest.mark.skipif(not zoo.is_available(name), reason=f"{name} is not here"))
           for name in ("mnist-cnn", "mnist-vit")]
# Every method on every model, but Grad-CAM on the ViT's token maps, which needs a tapped copy (see below).
MODEL_METHODS = [pytest.param(name, method, marks=model.marks, id=f"{name}-{method}")
                 for model in [pytest.param("random CNN"), *SHIPPED] for name in model.values for method in sm.METHODS
                 if (name, method) != ("mnist-vit", "grad_cam")]


def random_cnn(rng: torch.Generator, channels: int = 3, classes: int = 7) -> nn.Module:
    """A small CNN with BatchNorm (random running statistics), fresh random weights from `rng`, in eval mode."""
    model = nn.Sequential(
        nn.Conv2d(channels, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(classes))
    model(torch.zeros(1, channels, 16, 16))  # materialises the lazy layer
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=rng) * 0.4)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=rng) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=rng) + 0.5)
    return model.eval().requires_grad_(False)


def model_and_input(name: str, rng: torch.Generator) -> tuple[nn.Module, torch.Tensor]:
    if name == "random CNN":
        return random_cnn(rng), torch.randn(1, 3, 16, 16, generator=rng)
    shipped = zoo.load(name)
    return shipped.module, torch.randn(1, *shipped.card.input_shape, generator=rng)


def assert_maps_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    ref = ref.detach().float()
    scale = float(ref.abs().max()) or 1.0
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * scale)


def captum_reference(model: nn.Module, x: torch.Tensor, method: str, s: sm.Settings, relu: bool = True
                     ) -> torch.Tensor:
    x = x.clone().requires_grad_()
    if method == "gradient":
        return Saliency(model).attribute(x, target=s.target, abs=False)
    if method == "gradient_x_input":
        return InputXGradient(model).attribute(x, target=s.target)
    if method == "smoothgrad":
        sigma = s.noise * float(x.detach().max() - x.detach().min())
        with torch.random.fork_rng(devices=[]):  # the global generator is as it was afterwards
            torch.manual_seed(s.seed)  # NoiseTunnel draws from the global generator: the same draws as ours
            return NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=s.samples,
                                                          stdevs=sigma, target=s.target, abs=False)
    if method == "integrated_gradients":
        return IntegratedGradients(model).attribute(x, baselines=sm.baseline_image(x.detach(), s), target=s.target,
                                                    n_steps=s.steps, method="gausslegendre")
    cam = LayerGradCam(model, model.get_submodule(s.layer)).attribute(x, target=s.target, relu_attributions=relu)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")


@pytest.mark.parametrize(("name", "method"), MODEL_METHODS)
def test_attribution_matches_captum(name, method, rng):
    model, x = model_and_input(name, rng)
    target = int(torch.randint(model(x).shape[1], (1,), generator=rng))
    layers = sm.grad_cam_layers(model)
    layer = layers[int(torch.randint(len(layers), (1,), generator=rng))]
    s = sm.Settings(target, noise=0.2, samples=5, baseline=sm.BASELINES[int(torch.randint(3, (1,), generator=rng))],
                    steps=int(torch.randint(2, 20, (1,), generator=rng)), layer=layer, seed=int(rng.initial_seed()))
    ours = sm.attribute(model, x, method, s)
    assert_maps_close(ours.values, captum_reference(model, x, method, s))
    np.testing.assert_allclose(ours.heat, ours.values[0].double().sum(0).numpy(), rtol=1e-12)


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
@pytest.mark.parametrize("method", ["gradient", "grad_cam"])
def test_mobilenet_attribution_matches_captum(method, rng):
    model, x = model_and_input("mobilenet_v2", rng)
    s = sm.Settings(int(torch.randint(1000, (1,), generator=rng)), layer="features.18.0")
    assert_maps_close(sm.attribute(model, x, method, s).values, captum_reference(model, x, method, s))


class GridTap(nn.Module):
    """A ViT block whose output patch tokens pass through an nn.Identity as a (1, D, rows, cols) map, so that Captum's
    LayerGradCam can weigh them as a conv feature map."""

    def __init__(self, block: nn.Module, rows: int, cols: int):
        super().__init__()
        self.block, self.tap, self.rows, self.cols = block, nn.Identity(), rows, cols

    def forward(self, x):
        y = self.block(x)
        b, t, d = y.shape
        grid = self.tap(y[:, 1:].transpose(1, 2).reshape(b, d, self.rows, self.cols))
        return torch.cat([y[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)


@pytest.mark.parametrize("name", ["random ViT", *SHIPPED[1:]])
def test_vit_grad_cam_matches_captum_on_the_patch_grid(name, rng):
    if name == "random ViT":
        model = MnistViT(dim=32, depth=3, heads=4)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=rng) * 0.2)
        model = model.eval()
    else:
        model = zoo.load(name).module
    x = torch.randn(1, 1, 28, 28, generator=rng)
    blocks = [n for n in sm.grad_cam_layers(model) if n.startswith("blocks.")]
    assert blocks == [f"blocks.{i}" for i in range(len(model.blocks))]
    index = int(torch.randint(len(blocks) - 1, (1,), generator=rng))  # the last block's patch tokens reach no output
    tapped = copy.deepcopy(model)
    tapped.blocks[index] = GridTap(tapped.blocks[index], 4, 4)
    target = int(torch.randint(10, (1,), generator=rng))
    ours = sm.attribute(model, x, "grad_cam", sm.Settings(target, layer=blocks[index]))
    ref = sm.Settings(target, layer=f"blocks.{index}.tap")
    assert_maps_close(ours.values, captum_reference(tapped, x, "grad_cam", ref))
    # not two empty maps by construction: the weighted sum under Grad-CAM's ReLU is not zero (where it is negative
    # everywhere, the map is rightly all zero, as Captum's is)
    assert float(captum_reference(tapped, x, "grad_cam", ref, relu=False).abs().max()) > 0


def test_timm_and_hugging_face_blocks_are_found_and_weighed_like_ours(rng):
    from explorer.core.hf import HuggingFaceClassifier
    from tests.lessons.test_attention_layouts import hugging_face
    from tests.lessons.test_attention_math import random_vit, with_timm_attention

    ours = random_vit(rng)
    timm_style = with_timm_attention(ours, fused=False)  # the same weights in timm's attention layout
    x = torch.randn(1, 1, 28, 28, generator=rng)
    assert sm.grad_cam_layers(timm_style) == sm.grad_cam_layers(ours)
    for layer in sm.grad_cam_layers(ours):
        torch.testing.assert_close(sm.attribute(timm_style, x, "grad_cam", sm.Settings(2, layer=layer)).values,
                                   sm.attribute(ours, x, "grad_cam", sm.Settings(2, layer=layer)).values)
    hf = HuggingFaceClassifier(hugging_face("vit")).eval()
    blocks = [n for n in sm.grad_cam_layers(hf) if not n.endswith("projection")]
    assert len(blocks) == 2 and sm.default_grad_cam_layer(hf) == blocks[0]
    assert sm.attribute(hf, x, "grad_cam", sm.Settings(2)).values.abs().max() > 0


def test_vit_default_layer_is_the_last_block_that_reaches_the_class_token(rng):
    model = MnistViT(dim=32, depth=3, heads=4).eval()
    assert sm.grad_cam_layers(model) == ("patch_embed", "blocks.0", "blocks.1", "blocks.2")
    assert sm.default_grad_cam_layer(model) == "blocks.1"
    last = sm.attribute(model, torch.randn(1, 1, 28, 28, generator=rng), "grad_cam", sm.Settings(3, layer="blocks.2"))
    assert not last.values.any()  # the head reads only the class token of the last block's output


def test_cnn_default_layer_is_the_last_convolution(rng):
    assert sm.default_grad_cam_layer(random_cnn(rng)) == "7"


def test_completeness_gap_matches_captums_convergence_delta(rng):
    model, x = random_cnn(rng), torch.randn(1, 3, 16, 16, generator=rng)
    s = sm.Settings(2, baseline="blurred", steps=7)
    ours = sm.attribute(model, x, "integrated_gradients", s)
    _, delta = IntegratedGradients(model).attribute(x, baselines=sm.blurred(x), target=2, n_steps=7,
                                                    method="gausslegendre", return_convergence_delta=True)
    assert ours.completeness_gap == pytest.approx(float(delta), rel=1e-3, abs=1e-5)


@pytest.mark.parametrize("name", ["smooth CNN", *SHIPPED[:1]])
def test_completeness_gap_shrinks_as_steps_grow(name, rng):
    if name == "smooth CNN":  # smooth activations: Gauss–Legendre converges fast
        model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Conv2d(4, 4, 3, stride=2), nn.Softplus(),
                              nn.Flatten(), nn.Linear(4 * 12 * 12, 5))
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=rng) * 0.5)
        model = model.eval()
        x, target = torch.randn(1, 1, 28, 28, generator=rng), 1
    else:
        model = zoo.load(name).module
        x = torch.randn(1, 1, 28, 28, generator=rng)
        target = sm.predicted_class(model, x)
    gaps = [abs(sm.attribute(model, x, "integrated_gradients", sm.Settings(target, steps=n)).completeness_gap)
            for n in (2, 4, 128)]
    with torch.no_grad():
        scale = float(model(x)[0, target].abs() + model(sm.black_image(x, None))[0, target].abs())
    # float32 sums of a few thousand terms: about 1e-6 of the logits' size is rounding, not quadrature error
    floor = 1e-5 * scale
    assert gaps[2] < gaps[0]
    if name == "smooth CNN":
        assert gaps[2] < gaps[1] + floor
        assert gaps[2] < floor
    else:  # ReLU kinks along the path: slower convergence, and a coarse rule can be lucky, but it gets there
        assert gaps[2] < 0.02 * scale


def test_blurred_matches_scipy_gaussian_filter(rng):
    x = torch.randn(1, 3, 40, 33, generator=rng)
    sigma = sm.BLUR_FRACTION * 40
    ref = np.stack([scipy.ndimage.gaussian_filter(c, sigma, mode="mirror", truncate=4.0)
                    for c in x[0].double().numpy()])
    np.testing.assert_allclose(sm.blurred(x)[0].numpy(), ref, rtol=1e-4, atol=1e-5)


def test_black_baseline_is_a_zero_pixel_through_the_normalisation(rng):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    black = sm.black_pixel(mean, std)
    x = torch.randn(1, 3, 5, 5, generator=rng)
    image = sm.baseline_image(x, sm.Settings(0, baseline="black", black=black))
    pixels = image[0].permute(1, 2, 0).reshape(-1, 3) * torch.tensor(std) + torch.tensor(mean)
    torch.testing.assert_close(pixels, torch.zeros(25, 3), rtol=0, atol=1e-6)
    assert not sm.baseline_image(x, sm.Settings(0, baseline="black")).any()


def test_noise_baseline_spans_the_input_range_and_follows_the_seed(rng):
    x = torch.randn(1, 1, 28, 28, generator=rng)
    a, b, c = (sm.baseline_image(x, sm.Settings(0, baseline="noise", seed=seed)) for seed in (4, 4, 5))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert x.min() <= a.min() and a.max() <= x.max()


def test_predicted_class_is_the_largest_logit(rng):
    model, x = random_cnn(rng), torch.randn(1, 3, 16, 16, generator=rng)
    assert sm.predicted_class(model, x) == int(model(x).argmax())


@pytest.mark.parametrize("name", ["random CNN", *SHIPPED])
def test_attribute_does_not_change_the_model(name, rng):
    model, x = model_and_input(name, rng)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for layer in sm.grad_cam_layers(model):
        sm.attribute(model, x, "grad_cam", sm.Settings(0, layer=layer))
    for method in sm.METHODS:
        sm.attribute(model, x, method, sm.Settings(1, samples=2, steps=2))
    assert not model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_a_model_in_training_mode_is_explained_in_eval_mode_and_left_training(rng):
    model, x = random_cnn(rng), torch.randn(1, 3, 16, 16, generator=rng)
    expected = sm.attribute(model, x, "gradient", sm.Settings(3)).values
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.testing.assert_close(sm.attribute(model, x, "gradient", sm.Settings(3)).values, expected)
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BatchNorm statistics included


@pytest.mark.parametrize(("method", "settings", "message"), [
    ("occlusion", sm.Settings(0), "no saliency method named 'occlusion'; choose one of: 'gradient', "
                                  "'gradient_x_input', 'smoothgrad', 'integrated_gradients', 'grad_cam'"),
    ("gradient", sm.Settings(7), "class 7 does not exist; this model has classes 0 to 6."),
    ("smoothgrad", sm.Settings(0, samples=0), "SmoothGrad's sample count must be from 1 to 256, got 0."),
    ("smoothgrad", sm.Settings(0, noise=1.5), "SmoothGrad's noise level is a fraction of the input's range, "
                                              "from 0 to 1; got 1.5."),
    ("integrated_gradients", sm.Settings(0, baseline="white"), "no baseline named 'white'; choose one of: "
                                                               "'black', 'blurred', 'noise'"),
    ("integrated_gradients", sm.Settings(0, black=(0.0, 1.0)), "black gives 2 channel values for an input with 3 "
                                                               "channels; give one per channel "
                                                               "(black_pixel(card.mean, card.std))."),
    ("grad_cam", sm.Settings(0, layer="2"), "no Grad-CAM layer named '2'; choose one of: '0', '4', '7'"),
])
def test_bad_settings_say_what_to_do(method, settings, message, rng):
    with pytest.raises(InputError) as error:
        sm.attribute(random_cnn(rng), torch.randn(1, 3, 16, 16, generator=rng), method, settings)
    assert str(error.value) == message

"""Deletion and insertion curves against a plain NumPy loop over the pixels, on random CNNs and the shipped models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.core import gallery, zoo
from explorer.errors import InputError
from explorer.lessons.saliency import faithfulness as fa
from explorer.lessons.saliency import math as sm
from tests.lessons.test_saliency_math import SHIPPED, model_and_input


def numpy_curve(model, x: torch.Tensor, heat: np.ndarray, target: int, steps: int, fill: np.ndarray,
                delete: bool) -> tuple[np.ndarray, np.ndarray]:
    """One image per step, built pixel by pixel in NumPy: deletion writes `fill` over x, insertion writes x over
    `fill`, at the pixels of the largest heat first (ties in reading order)."""
    c, h, w = x.shape[1:]
    image, source = x[0].double().numpy(), fill[0]
    flat = heat.ravel()
    order = sorted(range(h * w), key=lambda p: (-flat[p], p))
    fractions, probabilities = [], []
    for k in range(steps + 1):
        chosen = order[:k * h * w // steps]
        picture = image.copy() if delete else source.copy()
        for p in chosen:
            picture[:, p // w, p % w] = source[:, p // w, p % w] if delete else image[:, p // w, p % w]
        with torch.no_grad():
            logits = model(torch.from_numpy(picture[None]).float()).double()[0].numpy()
        e = np.exp(logits - logits.max())
        fractions.append(len(chosen) / (h * w))
        probabilities.append(e[target] / e.sum())
    return np.array(fractions), np.array(probabilities)


def numpy_trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2 for i in range(len(x) - 1)))


@pytest.mark.parametrize("name", ["random CNN", *SHIPPED])
@pytest.mark.parametrize("kind", ["deletion", "insertion from blurred", "insertion from black"])
def test_curve_matches_a_numpy_loop(kind, name, rng):
    model, x = model_and_input(name, rng)
    c, h, w = x.shape[1:]
    heat = torch.randn(h, w, generator=rng).double().numpy()
    heat[: h // 3] = 0.0  # a tied region, as Grad-CAM's ReLU makes
    target, steps = int(torch.randint(model(x).shape[1], (1,), generator=rng)), int(torch.randint(3, 13, (1,),
                                                                                                generator=rng))
    black = tuple(float(v) for v in torch.randn(c, generator=rng))
    if kind == "deletion":
        curve = fa.deletion_curve(model, x, heat, target, steps, black=black)
    else:
        curve = fa.insertion_curve(model, x, heat, target, steps, start=kind.split()[-1], black=black)
    fill = (sm.blurred(x) if kind.endswith("blurred") else torch.tensor(black).reshape(1, c, 1, 1).expand_as(x))
    fractions, probabilities = numpy_curve(model, x, heat, target, steps, fill.double().numpy(), kind == "deletion")
    np.testing.assert_array_equal(curve.fractions, fractions)
    assert curve.fractions[0] == 0 and curve.fractions[-1] == 1
    # float32 forward passes of the same images, batched or one by one: probabilities agree to ~1e-6
    np.testing.assert_allclose(curve.probabilities, probabilities, rtol=1e-4, atol=1e-6)
    assert curve.area == pytest.approx(numpy_trapezoid(probabilities, fractions), rel=1e-4, abs=1e-6)


def test_deleting_by_the_gradient_x_input_map_lowers_the_probability_faster_than_a_random_order(rng):
    """On the trained CNN (shipped with the project), the map's order beats random orders on average: the point of
    the curve."""
    model = zoo.load("mnist-cnn")
    digit = next(item for item in gallery.mnist_gallery())
    x = model.preprocess(digit.source)
    target = sm.predicted_class(model.module, x)
    black = sm.black_pixel(model.card.mean, model.card.std)
    heat = sm.attribute(model.module, x, "gradient_x_input", sm.Settings(target, black=black)).heat
    guided = fa.deletion_curve(model.module, x, heat, target, black=black).area
    random_areas = [fa.deletion_curve(model.module, x, torch.rand(28, 28, generator=rng).numpy(), target,
                                      black=black).area for _ in range(3)]
    assert guided < np.mean(random_areas)


def test_curves_do_not_change_the_model(rng):
    model, x = model_and_input("random CNN", rng)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    heat = torch.randn(16, 16, generator=rng).numpy()
    fa.deletion_curve(model, x, heat, 0)
    fa.insertion_curve(model, x, heat, 0)
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(("call", "message"), [
    (lambda m, x: fa.deletion_curve(m, x, np.zeros((15, 16)), 0),
     "the map has shape (15, 16) but the input is 16×16 px; pass the map made for this input (Attribution.heat)."),
    (lambda m, x: fa.deletion_curve(m, x, np.zeros((16, 16)), 0, steps=0),
     "the curve needs from 1 to 256 steps (one per pixel at most), got 0."),
    (lambda m, x: fa.insertion_curve(m, x, np.zeros((16, 16)), 0, start="grey"),
     "no insertion start named 'grey'; choose one of: 'blurred', 'black'"),
    (lambda m, x: fa.deletion_curve(m, x, np.zeros((16, 16)), 9),
     "class 9 does not exist; this model has classes 0 to 6."),
])
def test_bad_curve_requests_say_what_to_do(call, message, rng):
    model, x = model_and_input("random CNN", rng)
    with pytest.raises(InputError) as error:
        call(model, x)
    assert str(error.value) == message

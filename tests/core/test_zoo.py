"""The registry: every card checked against its model and weights, golden logits, bring-your-own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from explorer.core import complexity, data, evaluate, fetch, trace, zoo
from explorer.errors import InputError

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
AVAILABLE = zoo.list(available_only=True)
SHIPPED = ["mnist-cnn", "mnist-vit"]


def test_the_shipped_models_are_on_disk():
    assert set(SHIPPED) <= set(AVAILABLE)


@pytest.mark.parametrize("name", AVAILABLE)
def test_card_matches_the_model(name):
    model = zoo.load(name)
    card = model.card
    assert card.n_params == sum(p.numel() for p in model.module.parameters())
    t = model.trace(torch.zeros(1, *card.input_shape))
    assert t.logits.shape == (1, len(card.labels))
    assert card.macs == complexity.total_macs(t)
    assert len(card.mean) == len(card.std) == card.input_shape[0]
    assert card.evaluated_by and card.source and card.license and card.evaluated_date


@pytest.mark.parametrize("name", AVAILABLE)
def test_weights_match_the_cards_sha256(name):
    card = zoo.card(name)
    assert fetch.sha256_of(zoo.card_path(name).parent / card.weights) == card.sha256


@pytest.mark.parametrize("name", AVAILABLE)
def test_shared_model_is_loaded_once_read_only_and_in_eval_mode(name):
    model = zoo.load(name)
    assert zoo.load(name) is model
    assert not model.module.training
    assert not any(p.requires_grad for p in model.module.parameters())


@pytest.mark.parametrize("name", SHIPPED)
def test_logits_match_the_golden_tensors(name):
    golden = load_file(GOLDEN / f"{name}.safetensors")
    t = zoo.load(name).trace(golden["input"])
    # Same weights and input; only BLAS summation order may differ between machines.
    torch.testing.assert_close(t.logits, golden["logits"], rtol=1e-4, atol=1e-4)
    for key, value in golden.items():
        if key.startswith("record:"):
            torch.testing.assert_close(t[key.removeprefix("record:")].output, value, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", SHIPPED)
def test_card_accuracy_holds_on_the_committed_sample(name):
    model = zoo.load(name)
    sample = data.eval_set("sample", model.card.mean, model.card.std)
    measured = evaluate.accuracy(model.module, sample).top1
    # 2,000 of the 10,000 test images: the binomial standard error at 99 % is 0.22 points; allow ~4.5 of them.
    assert abs(measured - model.card.top1) < 0.01, f"{measured:.4f} on the sample vs card {model.card.top1:.4f}"


@pytest.mark.parametrize("name", SHIPPED)
def test_card_accuracy_is_reproduced_on_the_full_test_set(name):
    if not data.is_fetched():
        pytest.skip("MNIST is not fetched here (explorer fetch mnist); `make test` fetches it")
    model = zoo.load(name)
    result = evaluate.accuracy(model.module, data.eval_set("test", model.card.mean, model.card.std))
    assert result.n == 10_000
    assert abs(result.top1 - model.card.top1) <= 2 / 10_000  # at most 2 images flip across BLAS builds


def test_shipped_models_meet_their_accuracy_targets():
    assert zoo.card("mnist-cnn").top1 >= 0.992
    assert zoo.card("mnist-vit").top1 >= 0.980


def test_unknown_model_names_list_the_valid_ones():
    with pytest.raises(InputError, match=r"no model named 'resnet50'; choose one of: 'mnist-cnn', 'mnist-vit'"):
        zoo.load("resnet50")


def test_wrong_input_shape_is_refused_with_the_expected_shape():
    model = zoo.load("mnist-cnn")
    with pytest.raises(InputError, match=r"mnist-cnn takes inputs of shape \(N, 1, 28, 28\), got \(1, 3, 28, 28\)"):
        model.trace(torch.zeros(1, 3, 28, 28))
    with pytest.raises(InputError, match="NaN or infinite"):
        model.probabilities(torch.full((1, 1, 28, 28), float("nan")))
    assert model.probabilities(torch.zeros(1, 1, 28, 28)).sum().item() == pytest.approx(1.0)


def test_a_changed_weights_file_is_refused(tmp_path, monkeypatch):
    card = zoo.card("mnist-cnn")
    (tmp_path / card.weights).write_bytes((zoo.card_path("mnist-cnn").parent / card.weights).read_bytes() + b"x")
    with pytest.raises(InputError, match="has SHA-256 .* but its card says"):
        zoo._load_weights(card, tmp_path)


@pytest.fixture
def registered():
    names = []
    yield names
    for name in names:
        zoo.unregister(name)


def test_from_module_registers_a_private_copy(registered, rng):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    model = zoo.from_module(net, (3, 16, 16), ["cat", "dog"], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), name="pets")
    registered.append("pets")
    assert "pets" in zoo.list() and zoo.load("pets") is model
    assert model.module is not net and net.training  # the caller's module is untouched
    assert model.card.n_params == 4 * 3 * 9 + 4 + 4 * 2 + 2
    assert model.card.macs == 14 * 14 * 4 * 27 + 4 * 2  # conv: 14x14x4 outputs of 3x3x3 MACs; linear 4x2
    x = torch.randn(2, 3, 16, 16, generator=rng)
    torch.testing.assert_close(model.trace(x).logits, net.eval()(x))


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_shape=(28, 28)), r"input_shape must be \(channels, height, width\)"),
    (dict(labels=["a"]), "the model gives 10 outputs but 1 labels were given"),
    (dict(std=(0.0,)), "std > 0"),
    (dict(name="mnist-cnn"), "a model named 'mnist-cnn' is already registered"),
])
def test_from_module_refuses_inconsistent_cards(kwargs, message):
    args = dict(module=zoo.load("mnist-cnn").module, input_shape=(1, 28, 28), labels=list("0123456789"),
                mean=(0.1,), std=(0.3,), name="mine")
    with pytest.raises(InputError, match=message):
        zoo.from_module(**{**args, **kwargs})
    assert "mine" not in zoo.list()


def test_from_module_refuses_what_is_not_a_module():
    with pytest.raises(InputError, match="needs a torch nn.Module, got dict"):
        zoo.from_module({}, (1, 28, 28), ["a"], (0.0,), (1.0,))


@pytest.mark.parametrize("name", AVAILABLE)
def test_tracing_and_evaluating_never_modify_the_shared_model(name):
    model = zoo.load(name)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    model.trace(torch.randn(2, *model.card.input_shape))
    if model.card.preprocess == "mnist":
        evaluate.accuracy(model.module, data.eval_set("sample", model.card.mean, model.card.std))
    after = model.module.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.module.modules())
    assert trace.kind_of(model.module) == "other"

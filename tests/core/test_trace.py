"""trace.run against the models' own forward, functional references, and its hook hygiene."""

from __future__ import annotations

import gc
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer.core import trace
from explorer.core.architectures import Attention, MnistCNN, MnistViT, MobileNetV2
from explorer.errors import InputError


class BasicBlock(nn.Module):
    """ResNet's block, with its in-place ReLU and `out += identity`."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(8), BasicBlock(8))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.pool(self.layer1(self.stem(x))).flatten(1))


class EncoderClassifier(nn.Module):
    """A classifier built on nn.TransformerEncoder (its attention uses need_weights=False)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(16, 32)
        layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 3)

    def forward(self, x):  # x: (B, 1, 8, 16) seen as 8 tokens of 16 features
        return self.head(self.encoder(self.embed(x.flatten(1, 2))).mean(1))


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


MODELS = {
    "mnist-cnn": (MnistCNN, (2, 1, 28, 28)),
    "mnist-vit": (MnistViT, (2, 1, 28, 28)),
    "mobilenet_v2": (MobileNetV2, (1, 3, 64, 64)),
    "tiny-resnet": (TinyResNet, (2, 3, 16, 16)),
    "encoder": (EncoderClassifier, (2, 1, 8, 16)),
}


def build(name: str, rng: torch.Generator) -> tuple[nn.Module, torch.Tensor]:
    cls, shape = MODELS[name]
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    model = cls().eval()
    for m in model.modules():  # non-trivial running statistics, so eval-mode BN is not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model, torch.randn(*shape, generator=rng)


def has_hooks(model: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trace_logits_match_the_models_forward(name, rng):
    model, x = build(name, rng)
    with torch.no_grad():
        expected = model(x)
    t = trace.run(model, x)
    torch.testing.assert_close(t.logits, expected, rtol=0, atol=0)
    assert not has_hooks(model)
    called = [n for n in trace.default_names(model) if not n.endswith("self_attn.out_proj")]
    assert sorted(n.split(":")[0] for n in t.names) == sorted(called + _reused(model, t))  # one record per call


def _reused(model: nn.Module, t: trace.Trace) -> list[str]:
    """Names of modules called more than once (each extra call is an extra record)."""
    return [n.split(":")[0] for n in t.names if ":" in n]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_conv_and_linear_record_matches_functional_ops(name, rng):
    model, x = build(name, rng)
    t = trace.run(model, x)
    checked = 0
    for r in t:
        module = model.get_submodule(r.name.split(":")[0])
        if isinstance(module, nn.Conv2d):
            ref = F.conv2d(r.input, r.params["weight"], r.params.get("bias"), module.stride, module.padding,
                           module.dilation, module.groups)
        elif isinstance(module, nn.Linear):
            ref = F.linear(r.input, r.params["weight"], r.params.get("bias"))
        elif isinstance(module, nn.BatchNorm2d):
            ref = F.batch_norm(r.input, r.buffers["running_mean"], r.buffers["running_var"], r.params["weight"],
                               r.params["bias"], eps=module.eps)
        else:
            continue
        torch.testing.assert_close(r.output, ref, rtol=1e-5, atol=1e-5)  # float32 reassociation only
        checked += 1
    assert checked >= 3


def test_in_place_ops_do_not_change_recorded_tensors(rng):
    """ResNet's ReLU(inplace=True) and `out += identity` would overwrite a naive record."""
    model, x = build("tiny-resnet", rng)
    t = trace.run(model, x)
    bn2 = t["layer1.0.bn2"]
    assert (bn2.output < 0).any()  # not overwritten by the in-place ReLU that follows
    block = model.layer1[0]
    with torch.no_grad():
        expected = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(model.stem(x))))))
    torch.testing.assert_close(bn2.output, expected)
    relu_calls = [r.name for r in t if r.name.startswith("layer1.0.relu")]
    assert relu_calls == ["layer1.0.relu", "layer1.0.relu:1"]  # one record per call of a reused module


def test_records_follow_the_order_modules_are_entered(rng):
    model, x = build("mnist-vit", rng)
    names = trace.run(model, x).names
    assert names[:4] == ("patch_embed", "blocks.0.norm1", "blocks.0.attn", "blocks.0.attn.qkv")
    assert names[-2:] == ("norm", "head")


def test_vit_attention_probabilities_match_scaled_dot_product_attention(rng):
    model, x = build("mnist-vit", rng)
    t = trace.run(model, x)
    for i, block in enumerate(model.blocks):
        rec = t[f"blocks.{i}.attn"]
        B, T, C = rec.input.shape
        q, k, v = F.linear(rec.input, block.attn.qkv.weight, block.attn.qkv.bias).view(B, T, 3, 4, C // 4).permute(
            2, 0, 3, 1, 4)
        ref_probs = (q @ k.transpose(-2, -1) / (C // 4) ** 0.5).softmax(-1)
        torch.testing.assert_close(rec.extras["probs"], ref_probs, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rec.extras["probs"].sum(-1), torch.ones(B, 4, T))
        ref_out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, C)
        torch.testing.assert_close(rec.output, block.attn.proj(ref_out), rtol=1e-4, atol=1e-5)
    assert "blocks.0.attn.probs" not in t.names  # the hook point is recorded as its parent's extras


@pytest.mark.parametrize("asks", [dict(need_weights=False), dict(), dict(average_attn_weights=False)],
                         ids=["no weights", "mean weights", "per-head weights"])
def test_multihead_attention_probabilities_are_recorded_however_it_is_called(asks, rng):
    class Caller(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, x):
            out, weights = self.mha(x, x, x, **asks)
            return out.sum(1) if weights is None else out.sum(1) + weights.flatten(1).sum(1, keepdim=True)

    model = Caller().eval()
    x = torch.randn(3, 5, 16, generator=rng)
    with torch.no_grad():
        expected = model(x)
        _, ref = model.mha(x, x, x, need_weights=True, average_attn_weights=False)
    t = trace.run(model, x)
    torch.testing.assert_close(t.logits, expected, rtol=0, atol=0)  # the caller's call and what it got are unchanged
    assert t["mha"].kind == "attention"
    torch.testing.assert_close(t["mha"].extras["probs"], ref)  # (B, heads, T, T), the module's own computation
    assert not has_hooks(model)


def test_transformer_encoder_layers_record_their_attention_probabilities(rng):
    model, x = build("encoder", rng)
    t = trace.run(model, x)
    attention = t.of_kind("attention")
    assert [r.name for r in attention] == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    for record, layer in zip(attention, model.encoder.layers, strict=True):
        with torch.no_grad():  # the layer calls it with need_weights=False; the trace asks it again, for every head
            _, ref = layer.self_attn(record.input, record.input, record.input, average_attn_weights=False)
        torch.testing.assert_close(record.extras["probs"], ref)
        torch.testing.assert_close(record.extras["probs"].sum(-1), torch.ones(x.shape[0], 4, 8))
    assert {r.kind for r in t} >= {"linear", "norm", "attention"}


def test_unknown_modules_get_generic_records(rng):
    class Scale(nn.Module):
        def forward(self, x):
            return 2 * x

    model = nn.Sequential(nn.Linear(4, 4), Scale())
    x = torch.randn(2, 4, generator=rng)
    rec = trace.run(model, x)["1"]
    assert (rec.kind, rec.module_type) == ("other", "Scale")
    torch.testing.assert_close(rec.output, 2 * rec.input)


def test_trace_leaves_no_hooks_when_forward_raises(rng):
    model, x = build("mnist-cnn", rng)
    model.classifier = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        trace.run(model, x)
    assert not has_hooks(model)
    model.classifier = nn.Linear(576, 10)
    assert trace.run(model, x).logits.shape == (2, 10)  # and the model still works


def test_selected_names_and_no_inputs_bound_what_is_kept(rng):
    model, x = build("mnist-cnn", rng)
    t = trace.run(model, x, names=["features.0", "classifier"], keep_inputs=False)
    assert t.names == ("features.0", "classifier")
    assert all(r.input is None for r in t)


def test_unknown_layer_name_lists_the_valid_ones(rng):
    model, x = build("mnist-cnn", rng)
    with pytest.raises(InputError, match=r"no module named 'features.99'; choose one of: .*'features.0'"):
        trace.run(model, x, names=["features.99"])
    assert not has_hooks(model)


@pytest.mark.parametrize("bad, message", [
    ("an image", "must be a torch tensor, got str"),
    (torch.zeros(1, 1, 28, 28, dtype=torch.uint8), "floating-point values, got torch.uint8"),
    (torch.zeros(28), "needs a batch dimension first, got shape (28,)"),
    (torch.full((1, 1, 28, 28), float("nan")), "contains NaN or infinite values"),
    (torch.full((1, 1, 28, 28), float("inf")), "contains NaN or infinite values"),
])
def test_bad_inputs_are_refused_with_a_clear_message(bad, message, rng):
    model, x = build("mnist-cnn", rng)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        trace.run(model, bad)
    assert trace.run(model, x).logits.shape == (2, 10)


def test_two_threads_tracing_one_model_each_get_their_own_records(rng):
    model, _ = build("mnist-cnn", rng)
    inputs = [torch.randn(1, 1, 28, 28, generator=rng) for _ in range(2)]
    results: dict[int, list] = {0: [], 1: []}

    def work(i: int) -> None:
        for _ in range(25):
            results[i].append(trace.run(model, inputs[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i in range(2):
        for t in results[i]:
            assert len(t) == 14
            torch.testing.assert_close(t["features.0"].input, inputs[i], rtol=0, atol=0)
            torch.testing.assert_close(t.logits, model(inputs[i]), rtol=0, atol=0)


def test_200_traces_in_a_row_keep_memory_flat(rng):
    model, x = build("mnist-cnn", rng)

    def live_tensor_bytes() -> int:
        gc.collect()
        return sum(o.numel() * o.element_size() for o in gc.get_objects() if type(o) in (torch.Tensor, nn.Parameter))

    trace.run(model, x)
    before = live_tensor_bytes()
    for _ in range(200):
        trace.run(model, x)
    assert live_tensor_bytes() - before < 64 * 1024  # no records or hooks survive a run
    assert not has_hooks(model)


def test_attention_module_refuses_an_indivisible_width():
    with pytest.raises(ValueError, match="not divisible"):
        Attention(10, 4)


def test_a_module_with_a_child_called_module_is_traced_whole(rng):
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = nn.Linear(4, 3)

        def forward(self, x):
            return self.module(x) * 10

    model, x = Wrapper().eval(), torch.randn(2, 4, generator=rng)
    t = trace.run(model, x)
    torch.testing.assert_close(t.logits, model(x))
    assert t.names == ("module",)

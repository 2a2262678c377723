"""Quantization math against a NumPy reference and torch's fake-quantize ops, on fresh random tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from explorer.core import agreement, trace, zoo
from explorer.core.data import EvalSet
from explorer.errors import InputError
from explorer.lessons.quantization import math as qm

SHAPES = [(16, 8, 3, 3), (10, 64), (7, 1, 5, 5), (3, 200)]


def numpy_quantize(x: np.ndarray, bits: int, scheme: str, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """(codes, dequantized) with min-max ranges, written out independently in float64."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    rows = x.reshape(x.shape[0], -1) if per_channel else x.reshape(1, -1)
    lo, hi = np.minimum(rows.min(1), 0)[:, None], np.maximum(rows.max(1), 0)[:, None]
    if scheme == "symmetric":
        scale, zero = np.maximum(np.maximum(-lo, hi) / qmax, qm.EPS), np.zeros_like(lo)
    else:
        scale = np.maximum((hi - lo) / (qmax - qmin), qm.EPS)
        zero = np.clip(qmin - np.round(lo / scale), qmin, qmax)
    q = np.clip(np.round(rows / scale) + zero, qmin, qmax)
    return q.reshape(x.shape), ((q - zero) * scale).reshape(x.shape)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("granularity", qm.GRANULARITIES)
@pytest.mark.parametrize("scheme", qm.SCHEMES)
@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_codes_and_dequantized_values_match_numpy(shape, granularity, scheme, bits, rng):
    x = torch.randn(shape, generator=rng) * torch.rand(shape[0], *[1] * (len(shape) - 1), generator=rng)
    ours = qm.quantize(x, bits, scheme, granularity)
    q_ref, deq_ref = numpy_quantize(x.double().numpy(), bits, scheme, granularity == "per-channel")
    # float32 (ours) and float64 (reference) can round a value sitting on a .5 boundary differently: one code,
    # and only rarely
    q_diff = np.abs(ours.q.numpy() - q_ref)
    assert q_diff.max() <= 1 and (q_diff > 0).mean() < 1e-2
    step = np.broadcast_to(qm.broadcast(ours.scale, ours.axis, x.dim()).numpy(), x.shape)
    assert np.all(np.abs(ours.dequantized.numpy() - deq_ref) <= step * (1 + 1e-5) + 1e-7)


@pytest.mark.parametrize("scheme", qm.SCHEMES)
def test_eight_bit_per_tensor_matches_torch_fake_quantize(scheme, rng):
    for shape in SHAPES:
        x = torch.randn(shape, generator=rng) * 0.1
        ours = qm.quantize(x, 8, scheme, "per-tensor")
        ref = torch.fake_quantize_per_tensor_affine(x, float(ours.scale), int(ours.zero_point), -128, 127)
        # torch multiplies by 1/s where we divide by s: they may round differently at .5 ties, by one step
        assert (ours.dequantized - ref).abs().max() <= float(ours.scale) * (1 + 1e-5)
        assert (ours.dequantized != ref).float().mean() < 1e-2


@pytest.mark.parametrize("scheme", qm.SCHEMES)
def test_eight_bit_per_channel_matches_torch_fake_quantize(scheme, rng):
    for shape in SHAPES:
        x = torch.randn(shape, generator=rng) * torch.rand(shape[0], *[1] * (len(shape) - 1), generator=rng)
        ours = qm.quantize(x, 8, scheme, "per-channel")
        ref = torch.fake_quantize_per_channel_affine(x, ours.scale.float(), ours.zero_point.int(), 0, -128, 127)
        step = qm.broadcast(ours.scale, 0, x.dim())
        assert ((ours.dequantized - ref).abs() <= step * (1 + 1e-5)).all()  # one step at .5 ties, as above
        assert (ours.dequantized != ref).float().mean() < 1e-2


@pytest.mark.parametrize("clip", qm.CLIPS)
@pytest.mark.parametrize("scheme", qm.SCHEMES)
@pytest.mark.parametrize("bits", [2, 3, 5, 8])
def test_codes_stay_in_range_and_zero_stays_exact(clip, scheme, bits, rng):
    x = torch.randn(12, 5, 3, 3, generator=rng) * 3 + torch.rand((), generator=rng)
    x[0, 0, 0, 0] = 0.0
    for granularity in qm.GRANULARITIES:
        qt = qm.quantize(x, bits, scheme, granularity, clip=clip)
        assert int(qt.q.min()) >= qt.qmin == -(2 ** (bits - 1))
        assert int(qt.q.max()) <= qt.qmax == 2 ** (bits - 1) - 1
        assert float(qt.dequantized[0, 0, 0, 0]) == 0.0
        assert (qt.lo <= 0).all() and (qt.hi >= 0).all()


@pytest.mark.parametrize("scheme", qm.SCHEMES)
@pytest.mark.parametrize("bits", [4, 5, 6, 7])
def test_each_extra_bit_buys_about_six_db_on_uniform_data(bits, scheme, rng):
    x = torch.rand(256, 128, 3, 3, generator=rng) * 2 - 1
    gain = (qm.sqnr(x, qm.quantize(x, bits + 1, scheme).dequantized)
            - qm.sqnr(x, qm.quantize(x, bits, scheme).dequantized))
    # Uniform noise of step s has power s²/12, so the gain is 20·log10 of the step ratio: (2^b - 1) / (2^(b+1) - 1)
    # steps over the range for affine, max / (2^(b-1) - 1) for symmetric; both tend to 20·log10(2) ≈ 6.02 dB.
    levels = (lambda b: 2 ** b - 1) if scheme == "affine" else (lambda b: 2 ** (b - 1) - 1)
    expected = 20 * math.log10(levels(bits + 1) / levels(bits))
    # 294,912 values measure the gain to ±0.01 dB (one standard deviation over seeds); the tolerance is six of them.
    # With 18,432 values the spread was four times wider and 4-bit symmetric (6.62 dB) crossed 6.7 on 2 % of seeds.
    assert gain == pytest.approx(expected, abs=0.06)
    assert 5.9 < gain < 6.7


def test_sqnr_matches_numpy(rng):
    for n in (10, 1000):
        r, a = torch.randn(n, generator=rng), torch.randn(n, generator=rng)
        ref = 10 * np.log10(np.sum(r.double().numpy() ** 2) / np.sum((r.double().numpy() - a.double().numpy()) ** 2))
        assert qm.sqnr(r, a) == pytest.approx(ref, rel=1e-9)
    assert qm.sqnr(r, r) == math.inf


@pytest.mark.parametrize("scheme", qm.SCHEMES)
def test_percentile_clip_matches_numpy(scheme, rng):
    for n in (9, 144, 999, 12345):
        x = torch.randn(4, n, generator=rng)
        lo, hi = qm.clip_range(x, "percentile", axis=0, scheme=scheme)
        xs = x.double().numpy()
        p = qm.PERCENTILE
        if scheme == "symmetric":
            top = np.percentile(np.abs(xs), p, axis=1, method="linear")
            np.testing.assert_allclose(hi.numpy(), top, rtol=1e-6)
            np.testing.assert_allclose(lo.numpy(), -top, rtol=1e-6)
        else:
            np.testing.assert_allclose(hi.numpy(), np.maximum(np.percentile(xs, p, axis=1, method="linear"), 0),
                                       rtol=1e-6)
            np.testing.assert_allclose(lo.numpy(), np.minimum(np.percentile(xs, 100 - p, axis=1, method="linear"), 0),
                                       rtol=1e-6)


@pytest.mark.parametrize("scheme", qm.SCHEMES)
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_mse_clip_has_the_smallest_error_of_every_candidate_range(scheme, bits, rng):
    x = torch.randn(6, 300, generator=rng) ** 3  # heavy tails: clipping pays
    mse = qm.quantize(x, bits, scheme, "per-channel", clip="mse")
    err = (mse.dequantized - x).square().mean(1)
    lo, hi = x.amin(1).clamp(max=0), x.amax(1).clamp(min=0)
    for ratio in np.linspace(0.05, 1.0, 20):
        scale, zero = qm.qparams(lo * ratio, hi * ratio, bits, scheme)
        approx = qm.dequantize(qm.codes(x, scale, zero, *qm.code_range(bits), 0), scale, zero, 0)
        assert (err <= (approx - x).square().mean(1) * (1 + 1e-5) + 1e-12).all()


def test_binarize_matches_xnor_net(rng):
    for shape in SHAPES:
        w = torch.randn(shape, generator=rng)
        b = qm.binarize(w)
        wn = w.double().numpy()
        alpha = np.abs(wn.reshape(shape[0], -1)).mean(1)
        ref = np.where(wn >= 0, 1.0, -1.0) * alpha.reshape(-1, *[1] * (len(shape) - 1))
        np.testing.assert_allclose(b.dequantized.numpy(), ref, rtol=1e-5)
        assert set(b.q.unique().tolist()) <= {-1, 1}


def test_ternarize_matches_bitnet_b158(rng):
    for shape in SHAPES:
        w = torch.randn(shape, generator=rng)
        t = qm.ternarize(w)
        wn = w.double().numpy()
        gamma = np.abs(wn).mean()
        np.testing.assert_allclose(t.dequantized.numpy(), np.clip(np.round(wn / gamma), -1, 1) * gamma, rtol=1e-5)
        assert set(t.q.unique().tolist()) <= {-1, 0, 1}


def test_clipped_marks_values_outside_the_range(rng):
    x = torch.randn(500, generator=rng)
    qt = qm.quantize(x, 4, "affine", clip="percentile")
    np.testing.assert_array_equal(qm.clipped(x, qt).numpy(), ((x < qt.lo) | (x > qt.hi)).numpy())


def small_cnn(rng: torch.Generator) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=rng))
    return model.eval()


@pytest.mark.parametrize("setting", [qm.Setting(weight_bits=3, granularity="per-tensor"),
                                     qm.Setting(scheme="affine", clip="mse"), qm.Setting(format="binary"),
                                     qm.Setting(format="ternary"), qm.Setting(weight_bits=4, act_bits=4)])
def test_fake_quant_model_quantizes_a_copy_and_leaves_the_model_alone(setting, rng):
    model = small_cnn(rng)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calibration = torch.randn(16, 1, 8, 8, generator=rng)
    quantized = qm.fake_quant_model(model, setting, calibration)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    for name in ("0", "4"):
        expected = qm.quantize_weight(before[f"{name}.weight"], setting).dequantized
        assert torch.equal(quantized.get_submodule(name).weight, expected)
    assert not model._forward_pre_hooks and not model[0]._forward_pre_hooks


@pytest.mark.parametrize("scheme", qm.SCHEMES)
def test_quantized_activations_lie_on_the_calibrated_grid(scheme, rng):
    model = small_cnn(rng)
    calibration = torch.randn(32, 1, 8, 8, generator=rng)
    setting = qm.Setting(act_bits=4, scheme=scheme)
    quantized = qm.fake_quant_model(model, setting, calibration)
    quantizer = qm.activation_quantizers(model, calibration, 4, scheme, "min-max")["4"]
    seen = {}
    quantized[4].register_forward_hook(lambda _m, args, _out: seen.setdefault("x", args[0]))
    quantized(torch.randn(5, 1, 8, 8, generator=rng))
    steps = seen["x"] / quantizer.scale + quantizer.zero_point
    assert torch.allclose(steps, steps.round(), atol=1e-3)  # every value is (q - z) · s for an integer q
    assert steps.round().min() >= -8 and steps.round().max() <= 7
    float_input = torch.relu(model[1](model[0](calibration))).flatten(1)
    lo, hi = qm.clip_range(float_input, "min-max", None, 4, scheme)
    assert torch.allclose(quantizer.scale, qm.qparams(lo, hi, 4, scheme)[0])


def test_size_bytes_counts_bits_scales_and_float_rest():
    model = zoo.load("mnist-cnn").module
    conv_linear = sum(model.get_submodule(n).weight.numel() for n in qm.quantizable_layers(model))
    floats = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for b in model.buffers() if b.is_floating_point())
    assert qm.size_bytes(model) == 4 * floats
    channels = sum(model.get_submodule(n).weight.shape[0] for n in qm.quantizable_layers(model))
    rest_bits = 32 * (floats - conv_linear)
    assert qm.size_bytes(model, qm.Setting(weight_bits=4)) == math.ceil((rest_bits + 4 * conv_linear + 32 * channels)
                                                                        / 8)
    affine = qm.Setting(weight_bits=8, scheme="affine", granularity="per-tensor")
    assert qm.size_bytes(model, affine) == math.ceil((rest_bits + 8 * conv_linear + 40 * 4) / 8)
    assert qm.size_bytes(model, qm.Setting(format="binary")) == math.ceil((rest_bits + conv_linear + 32 * channels) / 8)


def test_layer_sqnr_compares_layers_by_name(rng):

    model = small_cnn(rng)
    x = torch.randn(2, 1, 8, 8, generator=rng)
    quantized = qm.fake_quant_model(model, qm.Setting(weight_bits=3))
    ref, approx = trace.run(model, x), trace.run(quantized, x)
    result = qm.layer_sqnr(ref, approx)
    assert list(result) == list(ref.names)
    for r in ref.records:
        assert result[r.name] == pytest.approx(qm.sqnr(r.output, approx[r.name].output))


def test_agreement_set_is_labelled_with_the_float_predictions(rng):
    model = small_cnn(rng)
    x = torch.randn(20, 1, 8, 8, generator=rng)
    ds = agreement.labelled(model, x, "random")
    assert torch.equal(ds.labels, model(x).argmax(-1))
    assert qm.accuracy(model, "random-cnn", ds, None).top1 == 1.0


def test_sweep_covers_every_curve_and_binary_and_ternary():
    settings = qm.sweep_settings(qm.Setting(clip="mse", act_bits=8))
    assert len(settings) == 2 * 2 * 7 + 2
    assert {(s.scheme, s.granularity) for s in settings if s.format == "integer"} == {
        (s, g) for s in qm.SCHEMES for g in qm.GRANULARITIES}
    assert all(s.clip == "mse" and s.act_bits == 8 for s in settings)


def test_accuracy_of_a_quantized_copy_matches_counting_by_hand(rng):
    model = small_cnn(rng)
    x = torch.randn(40, 1, 8, 8, generator=rng)
    labels = torch.randint(0, 3, (40,), generator=rng)
    setting = qm.Setting(weight_bits=2, granularity="per-tensor")
    result = qm.accuracy(model, f"random-{rng.initial_seed()}", EvalSet("random", x, labels), setting)
    expected = (qm.fake_quant_model(model, setting)(x).argmax(-1) == labels).float().mean()
    assert result.top1 == pytest.approx(float(expected))


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(weight_bits=1), "uniform quantization needs 2 to 16 bits, got 1; use binarize() for 1 bit."),
    (dict(act_bits=1), "activations take 2 to 8 bits (or None for float), got 1."),
    (dict(scheme="asymmetric"), "no scheme named 'asymmetric'; choose one of: 'symmetric', 'affine'"),
    (dict(clip="max"), "no clipping rule named 'max'; choose one of: 'min-max', 'percentile', 'mse'"),
])
def test_bad_settings_say_what_to_choose(kwargs, message):
    with pytest.raises(InputError) as e:
        qm.Setting(**kwargs)
    assert str(e.value) == message


def test_activation_bits_without_calibration_images_is_an_error(rng):
    with pytest.raises(InputError, match="calibration images"):
        qm.fake_quant_model(small_cnn(rng), qm.Setting(act_bits=8))


@pytest.mark.parametrize("scheme", qm.SCHEMES)
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_spelled_out_steps_agree_with_quantize(scheme, bits, rng):
    x = torch.randn(200, generator=rng) * 2
    qt = qm.quantize(x, bits, scheme, clip="percentile")  # some values clip: the clamp step shows
    for i in torch.randint(0, 200, (20,), generator=rng).tolist():
        steps = qm.spell_out(float(x[i]), float(qt.scale), int(qt.zero_point), qt.qmin, qt.qmax)
        assert steps.code == int(qt.q[i])
        assert steps.dequantized == pytest.approx(float(qt.dequantized[i]), abs=1e-7)
        assert steps.error == pytest.approx(float(qt.dequantized[i] - x[i]), abs=1e-6)
        assert steps.rounded == round(float(x[i]) / float(qt.scale)) or abs(steps.ratio % 1 - 0.5) < 1e-4


@pytest.mark.parametrize("name", ["mnist-cnn", "mobilenet_v2"])
def test_folding_batchnorm_keeps_the_outputs_of_a_quantized_copy(name, rng):
    if not zoo.is_available(name):
        pytest.skip(f"{name} is not on this machine")
    model = zoo.load(name).module
    x = torch.randn(3, *zoo.card(name).input_shape, generator=rng).to(next(model.parameters()).device)
    quantized = qm.fake_quant_model(model, qm.Setting(weight_bits=4, granularity="per-tensor"))
    folded = qm.fold_batchnorm(qm.fake_quant_model(model, qm.Setting(weight_bits=4, granularity="per-tensor")))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        ref, ours = quantized(x), folded(x)
    # W·a then conv, instead of conv then ·a: float32 rounding differences only, ~1e-6 of the logits' size
    assert (ours - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_a_quantized_copy_requantized_equals_a_fresh_one_and_keeps_one_hook_per_layer(rng):
    model = small_cnn(rng)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calibration = torch.randn(16, 1, 8, 8, generator=rng)
    x = torch.randn(6, 1, 8, 8, generator=rng)
    copy_ = qm.QuantizedCopy(model)
    for setting in (qm.Setting(weight_bits=3, act_bits=4), qm.Setting(format="ternary", act_bits=2),
                    qm.Setting(weight_bits=5, scheme="affine", clip="percentile"),
                    qm.Setting(weight_bits=5, scheme="affine", clip="percentile", act_bits=3),  # the same weights
                    qm.Setting(weight_bits=5, scheme="affine", clip="percentile", granularity="per-tensor")):
        ours = copy_.quantize(setting, calibration)
        fresh = qm.fake_quant_model(model, setting, calibration)
        for k, v in fresh.state_dict().items():
            assert torch.equal(ours.state_dict()[k], v), f"{setting}: {k}"
        with torch.no_grad():
            assert torch.equal(ours(x), fresh(x)), setting  # the same activation quantizers, not stacked ones
        expected_hooks = 1 if setting.act_bits is not None else 0
        assert all(len(ours.get_submodule(n)._forward_pre_hooks) == expected_hooks for n in ("0", "4"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"the shared model's {k} changed"
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_a_private_copy_waits_while_the_shared_model_is_being_traced(rng):
    """A trace adds hooks to the shared model while it holds the model's lock; a deep copy taken meanwhile could
    fail on (or carry) them, so the copy waits for the lock."""
    import threading


    model = small_cnn(rng)
    copies: list[nn.Module] = []
    worker = threading.Thread(target=lambda: copies.append(trace.private_copy(model)))
    with trace.model_lock(model):
        worker.start()
        worker.join(timeout=0.3)
        assert worker.is_alive() and copies == []  # it cannot finish while the lock is held
    worker.join(timeout=30)
    assert not worker.is_alive() and len(copies) == 1
    for k, v in model.state_dict().items():
        assert torch.equal(copies[0].state_dict()[k], v)


# --- what the lesson shows: math.explain and the numbers behind its figures -----------------------------------------


def test_explained_layer_is_the_layer_itself_or_the_quantizable_one_before_it():
    layers = ["0", "4"]
    order = ["0", "1", "2", "4", "5"]
    assert qm.explained_layer(layers, order, "4") == "4"
    assert qm.explained_layer(layers, order, "2") == "0"  # its input came from layer 0's weights
    assert qm.explained_layer(layers, order, "5") == "4"
    assert qm.explained_layer(layers, ["x", *order], "x") == "0"  # nothing before it: the first
    assert qm.explained_layer(layers, order, "") == "0"  # not a layer of this model: the first


@pytest.mark.parametrize("setting", [qm.Setting(weight_bits=3, granularity="per-tensor"),
                                     qm.Setting(weight_bits=4, scheme="affine", act_bits=4),
                                     qm.Setting(format="binary")])
def test_explain_matches_quantizing_the_layer_and_running_a_fresh_copy(setting, rng):

    model = small_cnn(rng)
    x, calibration = torch.randn(1, 1, 8, 8, generator=rng), torch.randn(16, 1, 8, 8, generator=rng)
    reference = trace.run(model, x)
    e = qm.explain(qm.QuantizedCopy(model), reference, x, "4", setting, 99, calibration)
    weight = model.get_submodule("4").weight.detach()
    assert torch.equal(e.weight, weight) and e.channel == weight.shape[0] - 1  # the last channel there is
    assert torch.equal(e.quantized.dequantized, qm.quantize_weight(weight, setting).dequantized)
    fresh = qm.fake_quant_model(model, setting, calibration)
    with torch.no_grad():
        expected = fresh(x)[0].softmax(-1)
    assert torch.allclose(e.probs, expected, atol=1e-6)  # the same model: only float summation order may differ
    assert e.layer_sqnr == pytest.approx(qm.layer_sqnr(reference, trace.run(fresh, x)))
    assert e.weight_sqnr == qm.sqnr(weight, e.quantized.dequantized)
    assert (e.act is None) == (setting.act_bits is None)
    assert (e.size_float, e.size_quant) == (qm.size_bytes(model), qm.size_bytes(model, setting))


def test_histogram_counts_match_numpy(rng):
    w = torch.randn(32, 8, 3, 3, generator=rng)
    deq = qm.quantize(w, 3).dequantized
    edges, counts, deq_counts = qm.histogram(w, deq, 40)
    span = max(w.abs().max(), deq.abs().max()).item() * 1.02
    np.testing.assert_allclose(edges.numpy(), np.linspace(-span, span, 41), rtol=1e-6, atol=1e-12 * span)
    assert counts.tolist() == np.histogram(w.numpy().astype(np.float64), edges.numpy())[0].tolist()
    assert deq_counts.tolist() == np.histogram(deq.numpy().astype(np.float64), edges.numpy())[0].tolist()
    assert counts.sum() == deq_counts.sum() == w.numel()  # no value falls outside the range


@pytest.mark.parametrize("granularity", qm.GRANULARITIES)
def test_grid_levels_are_every_code_dequantized(granularity, rng):
    w = torch.randn(6, 10, generator=rng)
    qt = qm.quantize(w, 3, "affine", granularity)
    levels = qm.grid_levels(qt, 2)
    scale, zero = (qt.scale, qt.zero_point) if granularity == "per-tensor" else (qt.scale[2], qt.zero_point[2])
    assert torch.allclose(levels, (torch.arange(-4, 4) - zero) * scale)
    gaps = (qt.dequantized[2][:, None] - levels[None, :]).abs().amin(1)  # (10,): to the nearest level
    assert (gaps <= 1e-6 * levels.abs().max()).all()  # every weight became one of the levels
    assert torch.equal(qm.grid_levels(qm.binarize(w), 0), qm.binarize(w).scale[0] * torch.tensor([-1.0, 1.0]))


def test_largest_typical_and_top_classes_against_sorting_by_hand(rng):
    x = torch.randn(50, generator=rng)
    by_hand = sorted(range(50), key=lambda i: -abs(float(x[i])))
    assert qm.largest(x, 6) == by_hand[:6]
    relu = torch.relu(x)
    nonzero = relu[relu > 0]
    median = float(nonzero.median())
    assert qm.typical_value(relu) == min(relu.tolist(), key=lambda v: abs(abs(v) - median))
    assert qm.typical_value(torch.zeros(5)) == 0.0
    p, q = torch.rand(10, generator=rng), torch.rand(10, generator=rng)
    assert qm.top_classes(p, q, 3) == sorted(range(10), key=lambda i: -max(float(p[i]), float(q[i])))[:3]

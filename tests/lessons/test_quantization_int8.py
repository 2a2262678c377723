"""Real int8 through onnxruntime: the file holds int8 weights, agrees with the float model, and is measured."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch

from explorer.core import data, evaluate, zoo
from explorer.core.data import EvalSet
from explorer.lessons.quantization import int8, view_text


@pytest.fixture(scope="module")
def cnn_files(tmp_path_factory) -> int8.Int8Files:
    model = zoo.load("mnist-cnn")
    folder = tmp_path_factory.mktemp("int8")
    files = int8.Int8Files(folder / "cnn-float32.onnx", folder / "cnn-int8.onnx")
    calibration = data.normalize_digits(data.mnist("train").images[:256], model.card.mean, model.card.std)
    int8.export_float(model.module, files, calibration)
    int8.quantize_int8(files, calibration)
    return files


def test_the_int8_file_is_rebuilt_only_when_its_calibration_images_change(cnn_files, tmp_path):
    files = int8.Int8Files(cnn_files.float_path, tmp_path / "cnn-int8.onnx")
    model = zoo.load("mnist-cnn")
    digits = data.normalize_digits(data.mnist("train").images[:64], model.card.mean, model.card.std)
    int8.quantize_int8(files, digits)
    built = files.int8_path.stat().st_mtime_ns
    int8.quantize_int8(files, digits.clone())  # the same images: the cached file
    assert files.int8_path.stat().st_mtime_ns == built
    int8.quantize_int8(files, digits[:32])  # other images (say, a changed agreement set): calibrated again
    assert files.int8_path.stat().st_mtime_ns != built
    assert int8.calibration_stamp(files).read_text() == hashlib.sha256(digits[:32].numpy().tobytes()).hexdigest()


def test_the_int8_file_stores_int8_weights_per_channel(cnn_files):
    graph = onnx.load(str(cnn_files.int8_path)).graph
    weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
    assert sorted(tuple(t.dims) for t in weights) == sorted([(16, 1, 3, 3), (32, 16, 3, 3), (64, 32, 3, 3), (10, 576)])
    assert not [t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 2]
    dequantize = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    scales = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    per_channel = [n for n in dequantize if scales.get(n.input[1], np.zeros(())).ndim == 1]
    assert len(per_channel) >= 4  # one scale per output channel for each conv and the linear layer


def test_int8_is_at_least_3_5_times_smaller_and_keeps_its_accuracy(cnn_files):
    assert cnn_files.float_bytes / cnn_files.int8_bytes >= 3.5
    model = zoo.load("mnist-cnn")
    test = data.eval_set("test", model.card.mean, model.card.std)
    sample = EvalSet("first 2,000 test digits", test.inputs[:2000], test.labels[:2000])
    measured = int8.measure(cnn_files, sample)
    assert measured.float_top1 - measured.int8_top1 <= 0.005  # the target: within 0.5 point
    assert measured.batch == int8.LATENCY_BATCH and measured.n == len(sample) == 2000
    for timing in (measured.float_time, measured.int8_time):  # each file run alternately, repeated
        assert len(timing.times_ms) == evaluate.LATENCY_REPEATS and min(timing.times_ms) > 0
    assert measured.speedup == measured.float_time.median / measured.int8_time.median


def test_the_int8_table_gives_medians_spreads_and_intervals_and_no_difference_where_timings_overlap(rng):
    from scipy.stats import binomtest

    base = (torch.rand(15, generator=rng) * 4 + 20).tolist()  # 20-24 ms
    n = int(torch.randint(100, 3000, (1,), generator=rng))
    k_float, k_int8 = sorted(torch.randint(0, n + 1, (2,), generator=rng).tolist(), reverse=True)
    close = int8.Int8Measurement(evaluate.Timing(tuple(base)), evaluate.Timing(tuple(t + 0.5 for t in base)), 100,
                                 k_float / n, k_int8 / n, "some digits", n)
    table = view_text.int8_table(4000, 1000, close, "accuracy")
    q1, q3 = np.percentile(base, [25, 75])
    assert f"| latency, 100 images (median of 15) | {np.median(base):.1f} ms (middle half {q1:.1f}–{q3:.1f}) |" in table
    assert "| no measurable difference |" in table
    for name, k in (("float32", k_float), ("int8", k_int8)):
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert f"{name} 95 % CI {100 * ci.low:.1f}–{100 * ci.high:.1f} %, n = {n:,}" in table
    slower = dataclasses.replace(close, int8_time=evaluate.Timing(tuple(3 * t for t in base)))
    assert f"| {np.median(base) / np.median([3 * t for t in base]):.2f}× slower |" in \
        view_text.int8_table(4000, 1000, slower, "accuracy")


def test_the_float_onnx_file_matches_the_torch_model(cnn_files, rng):
    model = zoo.load("mnist-cnn").module
    x = torch.randn(5, 1, 28, 28, generator=rng)
    with torch.no_grad():
        expected = model(x.to(next(model.parameters()).device)).cpu().numpy()
    logits = int8.session(cnn_files.float_path).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(logits, expected, atol=1e-4)  # BatchNorm folded by the exporter: float rounding


def test_int8_predictions_agree_with_float_on_test_digits(cnn_files):
    model = zoo.load("mnist-cnn")
    inputs = data.eval_set("test", model.card.mean, model.card.std).inputs[:500]
    agree = int8.predictions(int8.session(cnn_files.int8_path), inputs) == int8.predictions(
        int8.session(cnn_files.float_path), inputs)
    assert agree.mean() >= 0.99


def test_compact_keeps_the_computation(tmp_path, rng):
    model = zoo.load("mnist-cnn").module
    path = tmp_path / "plain.onnx"
    from explorer.core.export import to_onnx

    x = torch.randn(2, 1, 28, 28, generator=rng)
    to_onnx(model, path, x)
    before = int8.session(path).run(None, {"input": x.numpy()})[0]
    size = path.stat().st_size
    int8.compact(path)
    assert path.stat().st_size < size
    np.testing.assert_array_equal(int8.session(path).run(None, {"input": x.numpy()})[0], before)

"""Real int8: the float model exported to ONNX and quantized by onnxruntime, then measured.

The simulation in math.py stores rounded values as floats; here the weights really become int8.
Export: `explorer.core.export.to_onnx` (the legacy exporter folds BatchNorm into the convolutions).
Quantization: `onnxruntime.quantization.quantize_static`, QDQ format, int8 weights per output
channel, int8 activations per tensor with min-max ranges calibrated on images given by a
CalibrationDataReader. Measured: both files' sizes, the latency of one batch in each onnxruntime
session (same thread count), run alternately and repeated (core/evaluate.interleaved_ms: the median and
the interquartile range of each), and top-1 on the held-out set with its size (the n of its interval).

Both files are compacted the same way before they are measured (`compact`): tensor and node names
become short ids and the shape annotations are dropped, so that for a model as small as the MNIST CNN
the file size is the weights, not their names.

Files are cached under `cache_dir()/int8/`, keyed by the model's name and weights hash; the int8 file
is rebuilt when its calibration images change (`calibration_stamp`). Measurements are cached in memory
per process.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from torch import Tensor, nn

from explorer.core import evaluate, trace
from explorer.core.data import EvalSet
from explorer.core.export import INPUT_NAME, to_onnx
from explorer.core.paths import cache_dir

CALIBRATION_BATCH = 64
LATENCY_BATCH = 100   # images per timed run
EVAL_BATCH = 500


@dataclass(frozen=True)
class Int8Files:
    float_path: Path
    int8_path: Path

    @property
    def float_bytes(self) -> int:
        return self.float_path.stat().st_size

    @property
    def int8_bytes(self) -> int:
        return self.int8_path.stat().st_size


@dataclass(frozen=True)
class Int8Measurement:
    float_time: evaluate.Timing   # one batch of `batch` images, float32 ONNX, repeated
    int8_time: evaluate.Timing    # the same for the int8 ONNX, alternating with it
    batch: int
    float_top1: float    # on `dataset`
    int8_top1: float
    dataset: str
    n: int               # images in `dataset`

    @property
    def speedup(self) -> float:
        """Median float32 time over median int8 time."""
        return self.float_time.median / self.int8_time.median


class _Batches(CalibrationDataReader):
    """Hands onnxruntime's calibrator the calibration images, one batch per call."""

    def __init__(self, images: Tensor):
        self._batches = iter([b.numpy() for b in images.detach().cpu().float().split(CALIBRATION_BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch)}


def files_for(name: str, weights_sha256: str) -> Int8Files:
    """Where the float and int8 ONNX files of a model live (they may not exist yet)."""
    folder = cache_dir() / "int8"
    stem = f"{name}-{weights_sha256[:12]}"
    return Int8Files(folder / f"{stem}-float32.onnx", folder / f"{stem}-int8.onnx")


def compact(path: Path) -> None:
    """Rewrite an ONNX file with short tensor names ("t0", "t1", ...; the input and output keep theirs), no node
    names, no doc strings, no intermediate shape annotations, and no all-zero zero points of DequantizeLinear
    (an optional input that defaults to 0). The computation is unchanged."""
    model = onnx.load(str(path))
    graph = model.graph
    zeros = {t.name for t in graph.initializer if not onnx.numpy_helper.to_array(t).any()}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) == 3 and node.input[2] in zeros:
            del node.input[2]
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    keep = {v.name for v in [*graph.input, *graph.output]}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
        tensor.doc_string = ""
    for node in graph.node:
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
        node.name, node.doc_string = "", ""
    del graph.value_info[:]
    graph.doc_string = ""
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_float(model: nn.Module, files: Int8Files, example: Tensor) -> None:
    """Step 1: the float32 ONNX file (skipped when cached)."""
    if not files.float_path.exists():
        partial = files.float_path.with_suffix(".partial.onnx")
        to_onnx(trace.private_copy(model), partial, example[:1])
        compact(partial)
        partial.replace(files.float_path)


def calibration_stamp(files: Int8Files) -> Path:
    """Beside the int8 file: the SHA-256 of the images that calibrated it (other images, another file)."""
    return files.int8_path.with_suffix(".calibration")


def quantize_int8(files: Int8Files, calibration: Tensor) -> None:
    """Step 2: calibrate activation ranges and write the int8 file (skipped when cached for these same images)."""
    digest = hashlib.sha256(calibration.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()
    stamp = calibration_stamp(files)
    if files.int8_path.exists() and stamp.exists() and stamp.read_text() == digest:
        return
    partial = files.int8_path.with_suffix(".partial.onnx")
    quantize_static(str(files.float_path), str(partial), _Batches(calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    compact(partial)
    partial.replace(files.int8_path)
    stamp.write_text(digest)


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same budget as PyTorch, for both files
    options.log_severity_level = 3  # errors only: not a warning per initializer that BatchNorm folding left unused
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def predictions(sess: ort.InferenceSession, inputs: Tensor) -> np.ndarray:
    """Predicted class per image, (N,)."""
    x = inputs.detach().cpu().float().numpy()
    return np.concatenate([sess.run(None, {INPUT_NAME: np.ascontiguousarray(x[i:i + EVAL_BATCH])})[0].argmax(-1)
                           for i in range(0, len(x), EVAL_BATCH)])


def run(sess: ort.InferenceSession, batch: np.ndarray) -> functools.partial:
    """One timed run of `sess` on `batch`."""
    return functools.partial(sess.run, None, {INPUT_NAME: batch})


@functools.lru_cache(maxsize=8)
def measure(files: Int8Files, dataset: EvalSet) -> Int8Measurement:
    """Step 3: accuracy of both files on `dataset` and their latency on its first LATENCY_BATCH images."""
    float_sess, int8_sess = session(files.float_path), session(files.int8_path)
    labels = dataset.labels.numpy()
    float_top1 = float((predictions(float_sess, dataset.inputs) == labels).mean())
    int8_top1 = float((predictions(int8_sess, dataset.inputs) == labels).mean())
    batch = np.ascontiguousarray(dataset.inputs[:LATENCY_BATCH].detach().cpu().float().numpy())
    times = evaluate.interleaved_ms({"float32": run(float_sess, batch), "int8": run(int8_sess, batch)})
    return Int8Measurement(times["float32"], times["int8"], len(batch), float_top1, int8_top1, dataset.name,
                           len(dataset))

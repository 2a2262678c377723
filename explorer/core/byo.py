"""Bring your own model from files: weights plus an architecture name, or an ONNX file.

Weights are read without running any code from the file. A safetensors file holds only tensors; a
PyTorch checkpoint is read with `torch.load(weights_only=True)`, whose unpickler refuses every
Python object other than tensors and plain containers, so a malicious pickle is refused before it
can run. A file of the wrong kind is named as what it looks like (an image, text, a zip archive).

A Hugging Face ViT model folder (config.json and model.safetensors) is read by explorer.core.hf;

An ONNX model (inference and activations only) runs in onnxruntime on the CPU, wrapped as an
`OnnxModule`: its children are the graph's nodes, so `trace.run` records one LayerRecord per node
in graph order. Its floating-point initializers are the module's parameters (BatchNorm statistics
its buffers, as in torch), in torch's layout, and every run feeds them to onnxruntime. So the
card's n_params counts them, a Conv record carries the weight it was computed with, and a private
copy whose weights are changed computes with the changed weights.
"""

from __future__ import annotations

import functools
import io
import itertools
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import Tensor, nn

from explorer.core import zoo
from explorer.core.architectures import ARCHITECTURES
from explorer.core.data import MNIST_MEAN, MNIST_STD
from explorer.core.pretrained import IMAGENET_MEAN, IMAGENET_STD
from explorer.errors import InputError, choice

Source = bytes | bytearray | memoryview | str | os.PathLike

WEIGHTS_EXPECTED = ("expected a safetensors file (.safetensors) or a PyTorch checkpoint saved with "
                    "torch.save(model.state_dict(), path) (.pt, .pth)")
ONNX_EXPECTED = "expected an ONNX model (.onnx), e.g. one written by torch.onnx.export"
REFUSED = ("{filename} was refused for safety: it holds Python objects other than tensors (or pickle data that "
           "cannot be read as tensors), and unpickling them could run code. Save the weights with "
           "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors') or "
           "torch.save(model.state_dict(), 'weights.pt').")
SAFETENSORS_MAX_HEADER = 100_000_000  # bytes; the safetensors format refuses larger headers
MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
)
ORT_ERRORS = (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.InvalidGraph, ort_errors.InvalidProtobuf,
              ort_errors.NotImplemented, ort_errors.RuntimeException, ort_errors.NoSuchFile, ort_errors.NotFound,
              ort_errors.EPFail)


# --- weights: safetensors or a PyTorch checkpoint -------------------------------------------------------------

def load_weights_file(source: Source, filename: str | None = None) -> dict[str, Tensor]:
    """A state dict (name -> tensor) read from a safetensors file or a weights-only PyTorch checkpoint.

    `source` is a path or the file's bytes; `filename` names it in messages. A checkpoint may be a
    plain state dict or a dict holding one under "state_dict" or "model"; a "module." prefix on
    every key (nn.DataParallel) is removed.
    """
    data, filename = _read(source, filename)
    if _safetensors_header(data) is not None:
        state = read_safetensors(data, filename)
    elif data.startswith(b"\x80") or is_torch_archive(data):  # a pickle, or torch.save's zip of pickles
        state = _torch_load(data, filename)
    elif filename.lower().endswith(".onnx") and _looks_like(data) is None:
        raise InputError(f"{filename} is an ONNX model (load it with explorer.core.byo.from_onnx); "
                         f"{WEIGHTS_EXPECTED}.")
    else:
        raise InputError(f"{filename} is {_looks_like(data) or _unrecognised(data)}; {WEIGHTS_EXPECTED}.")
    return _state_dict(state, filename)


def read_safetensors(data: bytes, filename: str) -> dict[str, Tensor]:
    """The tensors of a safetensors file's bytes; nothing else can be in one, so nothing runs.

    Bytes of another kind (a pickle renamed .safetensors, say) are refused without being opened.
    """
    if _safetensors_header(data) is None:
        raise InputError(f"{filename} is {_looks_like(data) or _unrecognised(data)}, not a safetensors file; it "
                         "was not opened. Save the weights with safetensors.torch.save_file.")
    try:
        return load_safetensors(data)
    except SafetensorError as error:
        raise InputError(f"{filename} is a damaged or truncated safetensors file ({error}); "
                         "save the weights again with safetensors.torch.save_file.") from None


def _read(source: Source, filename: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), filename or "the uploaded file"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"there is no file at {path}; check the path.")
        return path.read_bytes(), filename or path.name
    raise InputError(f"expected a file path or the file's bytes, got {type(source).__name__}.")


def _safetensors_header(data: bytes) -> int | None:
    """The header length, if the file starts like safetensors: a little-endian u64, then a JSON object."""
    if len(data) < 9 or data[8:9] != b"{":
        return None
    length = int.from_bytes(data[:8], "little")
    return length if 0 < length <= SAFETENSORS_MAX_HEADER else None


def is_torch_archive(data: bytes) -> bool:
    """torch.save writes a zip whose pickle is `<archive>/data.pkl`."""
    return any(name.endswith("/data.pkl") or name == "data.pkl" for name in zip_names(data) or ())


def zip_names(data: bytes) -> list[str] | None:
    """The names in a zip archive; None when `data` is not a readable one."""
    if not data.startswith(b"PK\x03\x04"):
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError, EOFError):  # damaged central directory
        return None


def _torch_load(data: bytes, filename: str) -> object:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # the weights-only unpickler met something it will not build
        raise InputError(REFUSED.format(filename=filename)) from None
    except Exception as error:  # noqa: BLE001
        # Damaged bytes fail in many ways (KeyError, IndexError, ...), all inside torch's reader or its
        # restricted unpickler: no code from the file has run.
        raise InputError(f"{filename} is a damaged PyTorch checkpoint ({type(error).__name__}: "
                         f"{first_line(error)}); {WEIGHTS_EXPECTED}.") from None


def _state_dict(obj: object, filename: str) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)), None)
        obj = obj if inner is None else inner
    if not isinstance(obj, Mapping) or not obj:
        found = "an empty dict" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise InputError(f"{filename} holds {found}, not a state dict (names -> tensors); "
                         "save it with torch.save(model.state_dict(), path).")
    odd = [repr(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if odd:
        raise InputError(f"{filename} holds entries that are not tensors: {few(odd)}; "
                         "save only the weights, with torch.save(model.state_dict(), path).")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):  # saved from nn.DataParallel / DistributedDataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _looks_like(data: bytes) -> str | None:
    """What a file that is not the expected kind seems to be, for the message; None if unknown."""
    if not data:
        return "empty (0 bytes)"
    if _safetensors_header(data) is not None:
        return "a safetensors weights file"
    if is_torch_archive(data) or data.startswith(b"\x80"):
        return "a PyTorch checkpoint or pickle"
    if data.startswith(b"PK\x03\x04"):
        if zip_names(data) is None:
            return "a damaged or truncated zip archive (a PyTorch checkpoint is a zip archive)"
        return "a zip archive without a PyTorch checkpoint inside"
    for magic, what in MAGIC:
        if data.startswith(magic):
            return what
    if _is_text(data):
        return "a text file"
    return None


def _unrecognised(data: bytes) -> str:
    return f"not a file of a kind this reads (it starts with the bytes {data[:8].hex(' ')})"


def _is_text(data: bytes) -> bool:
    head = data[:4096]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # a multi-byte character cut at the end of `head` is still text
            return False
    return b"\x00" not in head


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def few(items: list[str], n: int = 4) -> str:
    more = f", and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


# --- weights into one of our architectures ------------------------------------------------------------------

@dataclass(frozen=True)
class CardDefaults:
    """What a card says about an architecture when the weights are someone else's."""

    family: str
    task: str
    input_shape: tuple[int, int, int]
    preprocess: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: Callable[[], tuple[str, ...]]  # called only when needed: the ImageNet names are read from assets/


DIGITS = tuple(str(d) for d in range(10))
# Used only when the architecture's own card is not on this machine; a shipped or fetched card wins.
CARD_DEFAULTS: dict[str, CardDefaults] = {
    "mnist-cnn": CardDefaults("cnn", "MNIST digits, 10 classes", (1, 28, 28), "mnist", MNIST_MEAN, MNIST_STD,
                              lambda: DIGITS),
    "mnist-vit": CardDefaults("vit", "MNIST digits, 10 classes", (1, 28, 28), "mnist", MNIST_MEAN, MNIST_STD,
                              lambda: DIGITS),
    "mobilenet_v2": CardDefaults("cnn", "ImageNet-1k photos, 1,000 classes", (3, 224, 224), "imagenet",
                                 IMAGENET_MEAN, IMAGENET_STD, zoo.imagenet_labels),
}


def card_defaults(architecture: str) -> CardDefaults:
    """Input shape, normalization and labels of an architecture: from its card if present, else built in."""
    choice(architecture, ARCHITECTURES, "architecture")
    try:
        shipped = zoo.card(architecture)
    except InputError:  # not trained or fetched on this machine
        return CARD_DEFAULTS[choice(architecture, CARD_DEFAULTS, "architecture with built-in card defaults")]
    return CardDefaults(shipped.family, shipped.task, shipped.input_shape, shipped.preprocess, shipped.mean,
                        shipped.std, lambda: shipped.labels)


def from_weights(architecture: str, weights: Source | Mapping[str, Tensor], name: str = "my-model",
                 labels: list[str] | tuple[str, ...] | None = None, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None, filename: str | None = None) -> zoo.ZooModel:
    """Register one of our architectures with your weights (a file, its bytes, or a state dict).

    The keys and shapes must match the architecture exactly. Labels, mean and std default to the
    architecture's card (see card_defaults).
    """
    choice(architecture, ARCHITECTURES, "architecture")
    if isinstance(weights, Mapping):
        filename = filename or "the state dict"
        state = _state_dict(weights, filename)
    else:
        state = load_weights_file(weights, filename)
        filename = filename or _read_name(weights)
    module = ARCHITECTURES[architecture]()
    _load_exactly(module, state, architecture, filename)
    defaults = card_defaults(architecture)
    return zoo.from_module(
        module, defaults.input_shape, defaults.labels() if labels is None else labels,
        defaults.mean if mean is None else mean, defaults.std if std is None else std, name=name,
        family=defaults.family, task=f"{defaults.task}; your weights", preprocess=defaults.preprocess,
        architecture=architecture, source=f"{filename}, loaded into the explorer's {architecture} architecture")


def _read_name(source: Source) -> str:
    return Path(source).name if isinstance(source, (str, os.PathLike)) else "the uploaded file"


def _load_exactly(module: nn.Module, state: dict[str, Tensor], architecture: str, filename: str) -> None:
    """load_state_dict(strict=True), with a message that lists what does not fit instead of torch's."""
    expected = module.state_dict()
    # BatchNorm's step counter is absent from older checkpoints and never changes an output.
    state = {**{k: v for k, v in expected.items() if k.endswith("num_batches_tracked")}, **state}
    missing = [k for k in expected if k not in state]
    unexpected = sorted(k for k in state if k not in expected)  # safetensors does not keep the saved order
    mismatched = [f"{k} is {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [f"{len(keys)} {what}: {few(keys)}" for keys, what in
                ((missing, "missing keys"), (unexpected, "unexpected keys"), (mismatched, "shape mismatches"))
                if keys]
    if problems:
        raise InputError(f"{filename} does not fit the {architecture} architecture ({'; '.join(problems)}). "
                         f"Load weights saved from a {architecture} model, or pick the architecture they were "
                         f"trained with: one of {', '.join(ARCHITECTURES)}.")
    check_finite(state, filename)
    module.load_state_dict(state)


def check_finite(state: Mapping[str, Tensor], filename: str) -> None:
    """Refuse weights with NaN or infinite values: every output computed from them would be meaningless."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InputError(f"{filename} has NaN or infinite values in {few(bad)}; the training that wrote it "
                         "diverged. Use weights from an earlier checkpoint.")


# --- ONNX ---------------------------------------------------------------------------------------------------

ONNX_KINDS: dict[str, str] = {
    **dict.fromkeys(("Conv", "ConvTranspose"), "conv"),
    **dict.fromkeys(("Gemm", "MatMul"), "linear"),
    **dict.fromkeys(("BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
                     "RMSNormalization", "LpNormalization", "LRN"), "norm"),
    **dict.fromkeys(("Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "HardSigmoid",
                     "HardSwish", "Tanh", "Softmax", "LogSoftmax", "Softplus", "Softsign", "Mish",
                     "ThresholdedRelu", "Clip"), "activation"),  # torch exports ReLU6 as Clip
    **dict.fromkeys(("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"),
                    "pool"),
}
# A node's initializer inputs by position, named as torch names them; other positions become "input<k>".
ONNX_ROLES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("Conv", "ConvTranspose", "Gemm", "LayerNormalization", "InstanceNormalization",
                     "GroupNormalization"), ("input", "weight", "bias")),
    "MatMul": ("input", "weight"),
    "PRelu": ("input", "weight"),
    "BatchNormalization": ("input", "weight", "bias", "running_mean", "running_var"),
}
BUFFER_ROLES = frozenset({"running_mean", "running_var"})  # buffers in torch, so not counted as parameters
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE})


class OnnxNode(nn.Module):
    """One ONNX node as a child that trace can hook; its forward returns what onnxruntime computed.

    It holds the node's initializers (weight, bias, ...) in torch's layout: a Gemm or MatMul
    weight as (out_features, in_features), like nn.Linear's.
    """

    def __init__(self, node: onnx.NodeProto, kind: str, input_name: str):
        super().__init__()
        self.explorer_kind = kind  # read by trace.kind_of
        self.op_type, self.onnx_name = node.op_type, node.name
        self.input_name, self.output_name = input_name, node.output[0]

    def forward(self, input: Tensor, output: Tensor) -> Tensor:  # noqa: A002  (trace records the first argument)
        return output

    def extra_repr(self) -> str:
        return f"{self.op_type}, {self.onnx_name or self.output_name!r}"


@functools.cache
def _node_class(op_type: str) -> type[OnnxNode]:
    """OnnxConv, OnnxRelu, ...: so that a record's module_type names the ONNX operator."""
    return type(f"Onnx{op_type}", (OnnxNode,), {"__doc__": f"An ONNX {op_type} node."})


class OnnxModule(nn.Module):
    """An ONNX image classifier run by onnxruntime (CPU), with one child per node for trace.

    Not differentiable: inference and activations only. Its input is (N, *input_shape); a graph
    exported with a fixed batch of one is run image by image.
    """

    def __init__(self, model: onnx.ModelProto, input_shape: tuple[int, int, int] | None = None,
                 filename: str = "the ONNX model"):
        super().__init__()
        # Set first, so that no node or initializer name can take these attributes' names.
        self._feeds: list[tuple[str, str, str, bool]] = []  # (initializer, owner module path, attribute, transposed)
        self._graph, self._fetch, self._session = b"", [], None
        model = _weights_as_initializers(model)
        graph = model.graph
        initializers = {t.name: t for t in graph.initializer}
        self.input_name, self.batch, self.input_shape = _graph_input(graph, initializers, input_shape, filename)
        types = _value_types(model)
        self.output_name = graph.output[0].name
        if types.get(self.output_name) not in FLOAT_TYPES:
            raise InputError(f"{filename}'s first output {self.output_name!r} is not floating-point; the explorer "
                             "needs the class scores (logits) as the first output.")
        weights = {name: t for name, t in initializers.items() if t.data_type in FLOAT_TYPES}
        # torch's exporter stores equal weights once and passes the copies through Identity nodes
        aliases = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in weights}
        activations = {self.input_name}  # values computed from the input, in floating point
        owned: dict[str, tuple[Tensor, bool]] = {}  # initializer -> (the tensor that holds it, transposed?)
        for index, node in enumerate(graph.node):
            inputs = [i for i in node.input if i in activations]
            if not node.output or types.get(node.output[0]) not in FLOAT_TYPES or not inputs:
                continue  # shape arithmetic and constants, not layers
            computed = [o for o in node.output if types.get(o) in FLOAT_TYPES]  # a Split has several
            activations.update(computed)
            self._fetch.extend(computed)
            child = _node_class(node.op_type)(node, ONNX_KINDS.get(node.op_type, "other"), inputs[0])
            key = _free_name(self, (node.name or f"{node.op_type}_{index}").strip("/").replace(".", "_"))
            self.add_module(key, child)
            roles = ONNX_ROLES.get(node.op_type, ())
            for k, value in enumerate(aliases.get(i, i) for i in node.input):
                if value not in weights:
                    continue
                role = roles[k] if k < len(roles) else f"input{k}"
                transposed = _transposed(node, role, weights[value])
                if value not in owned:
                    owned[value] = _register(child, role, _torch_tensor(weights[value], transposed)), transposed
                    self._feeds.append((value, key, role, transposed))
                elif owned[value][1] == transposed and isinstance(owned[value][0], nn.Parameter) != (
                        role in BUFFER_ROLES):  # a shared weight: one tensor, counted and fed once
                    _register(child, role, owned[value][0])
            if child.explorer_kind in ("conv", "linear") and not isinstance(getattr(child, "weight", None), Tensor):
                child.explorer_kind = "other"  # weights computed from the input: q·kᵀ is a MatMul, not a layer
        for value, tensor in weights.items():  # used only outside the layers (a class token, say)
            if value not in owned:
                attribute = _free_name(self, value.replace(".", "_"))
                _register(self, attribute, _torch_tensor(tensor, transposed=False))
                self._feeds.append((value, "", attribute, False))
        self._fetch = list(dict.fromkeys([self.output_name, *self._fetch]))
        self._graph = _runnable(model, set(weights), self._fetch, types)
        self._session = _session(self._graph)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise InputError(f"this ONNX model takes inputs of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}.")
        feeds = {}
        for value, path, attribute, transposed in self._feeds:
            tensor = getattr(self.get_submodule(path), attribute).detach().cpu()
            feeds[value] = np.ascontiguousarray((tensor.T if transposed else tensor).numpy())
        images = x.detach().to("cpu", torch.float32).numpy()
        if self.batch == 1:  # exported with a fixed batch of one
            runs = [self._session.run(self._fetch, {**feeds, self.input_name: images[i:i + 1]})
                    for i in range(len(images))]
            arrays = [np.concatenate(parts) for parts in zip(*runs, strict=True)]
        else:
            arrays = self._session.run(self._fetch, {**feeds, self.input_name: images})
        values = {name: torch.from_numpy(a).to(x.device) for name, a in zip(self._fetch, arrays, strict=True)}
        values[self.input_name] = x
        for node in self.children():  # graph order: trace's hooks fire once per node, with its input and output
            node(values[node.input_name], values[node.output_name])
        return values[self.output_name]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_session"] = None  # an onnxruntime session cannot be copied; __setstate__ makes a new one
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._session = _session(self._graph)


def from_onnx(source: Source, labels: list[str] | tuple[str, ...] | None = None,
              mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
              name: str = "my-onnx-model", input_shape: tuple[int, int, int] | None = None,
              filename: str | None = None, preprocess: str | None = None,
              task: str = "your own ONNX model") -> zoo.ZooModel:
    """Register an ONNX image classifier (a path or the file's bytes): inference and activations only.

    The input must be one float32 (N, C, H, W) tensor; `input_shape` gives (C, H, W) where the
    file leaves them free. The first output must be the class scores. Labels, mean and std left
    out are guessed from the shapes (see onnx_defaults) and say so in the card's task.
    """
    data, filename = _read(source, filename)
    model = _parse_onnx(data, filename)
    try:
        module = OnnxModule(model, input_shape, filename)
        classes = module(torch.zeros(1, *module.input_shape)).shape[-1]
    except ORT_ERRORS as error:
        raise InputError(f"onnxruntime {ort.__version__} cannot run {filename}: {first_line(error)}") from None
    guessed = onnx_defaults(module.input_shape, classes)
    if labels is None or mean is None or std is None:
        task = f"{task}; labels and normalization guessed: {guessed.task}"
    return zoo.from_module(module, module.input_shape, guessed.labels() if labels is None else labels,
                           guessed.mean if mean is None else mean, guessed.std if std is None else std, name=name,
                           family="onnx", task=task, source=f"{filename}, run by onnxruntime {ort.__version__}",
                           preprocess=preprocess or guessed.preprocess)


def onnx_defaults(input_shape: tuple[int, int, int], classes: int) -> CardDefaults:
    """A 1x28x28 input with 10 outputs is taken for MNIST, 3 channels with 1000 for ImageNet; else generic."""
    if input_shape == (1, 28, 28) and classes == 10:
        return CARD_DEFAULTS["mnist-cnn"]
    if input_shape[0] == 3 and classes == 1000:
        return CARD_DEFAULTS["mobilenet_v2"]
    channels = input_shape[0]
    return CardDefaults("onnx", f"{classes} classes named by number, inputs scaled to [0, 1]", input_shape, "resize",
                        (0.0,) * channels, (1.0,) * channels, lambda: tuple(f"class {i}" for i in range(classes)))


def _parse_onnx(data: bytes, filename: str) -> onnx.ModelProto:
    if not data:
        raise InputError(f"{filename} is empty (0 bytes); {ONNX_EXPECTED}.")
    hint = _looks_like(data)
    seems = f"; it looks like {hint}" if hint else ""
    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
        if not _names_are_text(model.graph):  # protobuf hands out invalid UTF-8 strings as bytes
            raise UnicodeError("a name is not UTF-8 text")
    except DecodeError:
        raise InputError(f"{filename} is not an ONNX model{seems}; {ONNX_EXPECTED}.") from None
    except (onnx.checker.ValidationError, UnicodeError) as error:
        raise InputError(f"{filename} is not a valid ONNX model ({first_line(error)}){seems}; "
                         f"{ONNX_EXPECTED}.") from None
    if any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer):
        raise InputError(f"{filename} keeps its weights in separate files; save it as one file with "
                         "onnx.save_model(model, path, save_as_external_data=False).")
    return model


def _names_are_text(graph: onnx.GraphProto) -> bool:
    names = [v.name for v in itertools.chain(graph.input, graph.output, graph.initializer)]
    names += [name for n in graph.node for name in (n.name, n.op_type, *n.input, *n.output)]
    return all(isinstance(name, str) for name in names)


def _graph_input(graph: onnx.GraphProto, initializers: Mapping[str, object], given: tuple[int, ...] | None,
                 filename: str) -> tuple[str, int | None, tuple[int, int, int]]:
    """The input's name, its fixed batch size (None when free) and (C, H, W)."""
    inputs = [i for i in graph.input if i.name not in initializers]  # before IR 4, weights were listed as inputs
    if len(inputs) != 1:
        raise InputError(f"{filename} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); the explorer "
                         "runs image classifiers with one (N, C, H, W) input.")
    tensor_type = inputs[0].type.tensor_type
    if tensor_type.elem_type != TensorProto.FLOAT:
        found = TensorProto.DataType.Name(tensor_type.elem_type).lower() if tensor_type.elem_type else "no type"
        raise InputError(f"{filename}'s input {inputs[0].name!r} holds {found}; the explorer feeds float32 images.")
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim]
    shown = "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"
    if not tensor_type.HasField("shape") or len(dims) != 4:
        raise InputError(f"{filename}'s input {inputs[0].name!r} has shape {shown}; the explorer runs image "
                         "classifiers with an (N, C, H, W) input.")
    if dims[0] not in (None, 1):
        raise InputError(f"{filename}'s input has a fixed batch of {dims[0]}; export it with a free batch "
                         "dimension (torch.onnx.export(..., dynamic_axes={'x': {0: 'batch'}})) or a batch of 1.")
    if given is not None:
        given = tuple(int(s) for s in given)
        if len(given) != 3 or min(given) < 1 or any(d not in (None, g) for d, g in zip(dims[1:], given, strict=False)):
            raise InputError(f"input_shape={given} does not fit {filename}'s input {shown}; give (C, H, W) "
                             "with the file's fixed sizes.")
        return inputs[0].name, dims[0], given  # type: ignore[return-value]
    if None in dims[1:]:
        raise InputError(f"{filename}'s input {shown} leaves (C, H, W) free; pass input_shape=(C, H, W).")
    return inputs[0].name, dims[0], tuple(dims[1:])  # type: ignore[return-value]


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value that ONNX shape inference can type."""
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        pass  # untyped values are skipped as layers; the graph's own inputs and outputs are still typed
    graph = model.graph
    typed = [*graph.input, *graph.value_info, *graph.output]
    types = {v.name: v.type.tensor_type.elem_type for v in typed if v.type.HasField("tensor_type")}
    return {**types, **{t.name: t.data_type for t in graph.initializer}}


def _weights_as_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model, with Constant nodes that feed a layer's weight inputs turned into initializers."""
    weight_inputs = {v for n in model.graph.node for k, v in enumerate(n.input) if 0 < k < len(ONNX_ROLES.get(
        n.op_type, ()))}
    constants = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant" and n.output[0] in weight_inputs
                 and len(n.attribute) == 1 and n.attribute[0].name == "value"}
    if not constants:
        return model
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    nodes = [n for n in converted.graph.node if not (n.op_type == "Constant" and n.output[0] in constants)]
    del converted.graph.node[:]
    converted.graph.node.extend(nodes)
    for name, node in constants.items():
        tensor = converted.graph.initializer.add()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = name
    return converted


def _transposed(node: onnx.NodeProto, role: str, initializer: onnx.TensorProto) -> bool:
    """Whether torch's layout is the transpose: a MatMul or Gemm (transB=0) weight is (in, out) in ONNX."""
    return role == "weight" and len(initializer.dims) == 2 and (
        node.op_type == "MatMul" or (node.op_type == "Gemm" and not _attribute(node, "transB", 0)))


def _torch_tensor(initializer: onnx.TensorProto, transposed: bool) -> Tensor:
    array = numpy_helper.to_array(initializer)
    return torch.from_numpy(np.array(array.T if transposed else array, order="C"))  # a copy, writable


def _register(owner: nn.Module, role: str, tensor: Tensor) -> Tensor:
    """Make `tensor` a frozen parameter of `owner`, or a buffer for BatchNorm's statistics, as torch does."""
    if role in BUFFER_ROLES:
        owner.register_buffer(role, tensor)
        return tensor
    parameter = tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor, requires_grad=False)
    owner.register_parameter(role, parameter)
    return parameter


def _attribute(node: onnx.NodeProto, name: str, default: object) -> object:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _free_name(module: nn.Module, wanted: str) -> str:
    """`wanted`, or `wanted_1`, `wanted_2`, ... : a name not yet taken on `module`."""
    wanted = wanted or "node"
    name, n = wanted, 0
    while hasattr(module, name):
        n += 1
        name = f"{wanted}_{n}"
    return name


def _runnable(model: onnx.ModelProto, fed: set[str], outputs: list[str], types: Mapping[str, int]) -> bytes:
    """The graph with the fed initializers as inputs and every node output as a graph output."""
    runnable = onnx.ModelProto()
    runnable.CopyFrom(model)
    graph = runnable.graph
    fed_tensors = [t for t in graph.initializer if t.name in fed]
    kept = [t for t in graph.initializer if t.name not in fed]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    listed = {i.name for i in graph.input}
    graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims)
                       for t in fed_tensors if t.name not in listed)
    listed = {o.name for o in graph.output}
    graph.output.extend(helper.make_tensor_value_info(name, types[name], None)
                        for name in dict.fromkeys(outputs) if name not in listed)
    return runnable.SerializeToString()


def _session(graph: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

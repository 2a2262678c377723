"""Bring your own model: weights files, ONNX files, and a corpus of bad files refused with clear messages."""

from __future__ import annotations

import copy
import io
import itertools
import os
import pathlib
import pickle
import uuid
import warnings
import zipfile

import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from safetensors.torch import save as save_safetensors
from torch import nn

from explorer.core import byo, trace, uploads, zoo
from explorer.core.architectures import MnistCNN, MnistViT
from explorer.errors import InputError

MNIST = dict(labels=[str(d) for d in range(10)], mean=(0.1307,), std=(0.3081,))


# --- fixtures and helpers --------------------------------------------------------------------------------------

@pytest.fixture
def names():
    """Unique registry names; whatever got registered under them is unregistered afterwards."""
    made: list[str] = []

    def make(prefix: str = "byo-test") -> str:
        made.append(f"{prefix}-{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield make
    for name in made:
        if name in zoo.list():
            zoo.unregister(name)


def random_cnn(seed: int, widths: tuple[int, ...] = (16, 32, 64)) -> MnistCNN:
    """An MnistCNN in eval mode with every weight and BatchNorm statistic random (not the init's 0s and 1s)."""
    g = torch.Generator().manual_seed(seed)
    model = MnistCNN(widths)
    with torch.no_grad():
        for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=g) * 1.5 + 0.5)
            elif tensor.dim() > 1:  # conv and linear weights, scaled by 1/√fan_in to keep activations O(1)
                tensor.copy_(torch.randn(tensor.shape, generator=g) / tensor[0].numel() ** 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.1 + (1.0 if name.endswith(".weight") else 0))
    return model.eval()


def state_bytes(model: nn.Module, fmt: str) -> bytes:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        return save_safetensors(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def export_onnx(model: nn.Module, example: torch.Tensor, dynamic: dict | None = None) -> bytes:
    """The legacy TorchScript exporter (the dynamo one needs onnxscript), BatchNorm kept as its own node."""
    buffer = io.BytesIO()
    dynamic = {"x": {0: "batch"}, "logits": {0: "batch"}} if dynamic is None else dynamic
    with warnings.catch_warnings():  # the exporter's deprecation and constant-folding advice
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, buffer, dynamo=False, input_names=["x"], output_names=["logits"],
                          dynamic_axes=dynamic, training=torch.onnx.TrainingMode.PRESERVE)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cnn() -> MnistCNN:
    return random_cnn(seed=0)


@pytest.fixture(scope="module")
def cnn_onnx(cnn) -> bytes:
    return export_onnx(cnn, torch.zeros(1, 1, 28, 28))


@pytest.fixture(scope="module")
def good_weights(cnn) -> bytes:
    return state_bytes(cnn, "safetensors")


class Touch:
    """A pickle payload: unpickling it calls Path.touch(marker), so the marker file proves code ran."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, "PNG")
    return buffer.getvalue()


def zip_of_text() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes/readme.txt", "not weights\n")
    return buffer.getvalue()


def torch_save(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# --- weights files ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
@pytest.mark.parametrize("as_path", [False, True])
def test_from_weights_outputs_match_the_source_model(fmt, as_path, cnn, names, rng, tmp_path):
    data = state_bytes(cnn, fmt)
    source = data
    if as_path:
        source = tmp_path / ("weights.safetensors" if fmt == "safetensors" else "weights.pt")
        source.write_bytes(data)
    model = byo.from_weights("mnist-cnn", source, name=names())
    x = torch.randn(4, 1, 28, 28, generator=rng)
    # Same weights, same architecture, same ops: only the device's kernels could round differently.
    torch.testing.assert_close(model.trace(x).logits, cnn(x), rtol=1e-5, atol=1e-5)
    assert model.card.labels == tuple(MNIST["labels"]) and model.card.preprocess == "mnist"
    assert (model.card.mean, model.card.std, model.card.input_shape) == (MNIST["mean"], MNIST["std"], (1, 28, 28))


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module."])
def test_checkpoint_wrappers_are_unwrapped(wrap, cnn):
    state = cnn.state_dict()
    if wrap == "module.":  # saved from nn.DataParallel
        saved: dict = {f"module.{k}": v for k, v in state.items()}
    else:
        saved = {wrap: state, "epoch": 7, "optimizer": {"lr": 0.1}}
    loaded = byo.load_weights_file(torch_save(saved), "checkpoint.pt")
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_from_weights_accepts_a_state_dict_and_given_labels(cnn, names):
    labels = [f"digit {d}" for d in range(10)]
    model = byo.from_weights("mnist-cnn", cnn.state_dict(), name=names(), labels=labels)
    assert model.card.labels == tuple(labels)


def test_card_defaults_of_mobilenet_are_imagenets():
    defaults = byo.card_defaults("mobilenet_v2")  # from the fetched card, or the built-in row
    assert (defaults.input_shape, defaults.preprocess) == ((3, 224, 224), "imagenet")
    assert (defaults.mean, defaults.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert len(defaults.labels()) == 1000


def test_from_upload_reads_one_weights_file_or_one_onnx_file(cnn, cnn_onnx, names, rng):
    x = torch.randn(3, 1, 28, 28, generator=rng)
    weights = uploads.from_upload([("net.pt", state_bytes(cnn, "torch"))], "mnist-cnn", names())
    exported = uploads.from_upload([("net.onnx", cnn_onnx)], "mnist-cnn", names())
    assert weights.card.architecture == "mnist-cnn" and exported.card.family == "onnx"
    # the same weights in torch and in onnxruntime: float32 kernels that sum in different orders
    for model in (weights, exported):
        torch.testing.assert_close(model.module(x), cnn(x), rtol=1e-4, atol=1e-4)


def test_from_upload_takes_a_zip_that_is_not_a_checkpoint_for_a_hugging_face_folder():
    with pytest.raises(InputError) as caught:
        uploads.from_upload([("notes.zip", zip_of_text())], "mnist-cnn", "never-registered")
    assert str(caught.value).startswith("no config.json in notes.zip; a Hugging Face model folder has config.json")
    with pytest.raises(InputError, match="^no file was given; choose a weights file, an ONNX model or a Hugging Face"):
        uploads.from_upload([], "mnist-cnn", "never-registered")


# --- malicious pickles -----------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on protocols other than 2
@pytest.mark.parametrize("how", ["torch.save", "torch.save inside a state dict", "pickle protocol 2",
                                 "pickle protocol 5"])
def test_malicious_pickle_is_refused_and_runs_no_code(how, tmp_path, good_weights):
    marker = tmp_path / "code-ran"
    payload = {
        "torch.save": lambda: torch_save(Touch(marker)),
        "torch.save inside a state dict": lambda: torch_save({"features.0.weight": torch.zeros(1), "x": Touch(marker)}),
        "pickle protocol 2": lambda: pickle.dumps(Touch(marker), protocol=2),
        "pickle protocol 5": lambda: pickle.dumps(Touch(marker), protocol=5),
    }[how]()
    with pytest.raises(InputError) as caught:
        byo.load_weights_file(payload, "evil.pt")
    assert not marker.exists(), "unpickling ran the payload"
    assert str(caught.value).startswith("evil.pt was refused for safety: it holds Python objects other than tensors")
    assert "torch.save(model.state_dict(), 'weights.pt')" in str(caught.value)
    # The control: an unrestricted unpickle of the same bytes does run the payload.
    if how.startswith("torch.save"):
        torch.load(io.BytesIO(payload), weights_only=False)
    else:
        pickle.loads(payload)
    assert marker.exists()
    assert byo.load_weights_file(good_weights).keys()  # the process still loads good files


# --- a corpus of bad weights files -----------------------------------------------------------------------------

BAD_WEIGHTS = {
    "empty": (lambda: b"", "x.pt is empty (0 bytes); expected a safetensors file (.safetensors) or a PyTorch "
                           "checkpoint saved with torch.save(model.state_dict(), path) (.pt, .pth)."),
    "random bytes": (lambda: b"\x13" + os.urandom(999), "x.pt is not a file of a kind this reads (it starts with "
                                                        "the bytes 13 "),
    "png": (png_bytes, "x.pt is a PNG image; expected a safetensors file"),
    "text": (lambda: b"weights = [0.1, 0.2]\n", "x.pt is a text file; expected a safetensors file"),
    "zip of text": (zip_of_text, "x.pt is a zip archive without a PyTorch checkpoint inside; expected"),
    "truncated safetensors": (lambda: save_safetensors({"w": torch.zeros(100)})[:-40],
                              "x.pt is a damaged or truncated safetensors file ("),
    "truncated checkpoint": (lambda: torch_save({"w": torch.zeros(100)})[:300],
                             "x.pt is a damaged or truncated zip archive (a PyTorch checkpoint is a zip archive)"),
    "not a dict": (lambda: torch_save([torch.zeros(2)]), "x.pt holds a list, not a state dict"),
    "a whole module": (lambda: torch_save(MnistCNN()), "x.pt was refused for safety: it holds Python objects"),
    "non-tensor entries": (lambda: torch_save({"w": torch.zeros(2), "epoch": 3}),
                           "x.pt holds entries that are not tensors: 'epoch'; save only the weights"),
}


@pytest.mark.parametrize("case", BAD_WEIGHTS)
def test_bad_weights_files_are_refused_with_a_clear_message(case, good_weights):
    make, message = BAD_WEIGHTS[case]
    with pytest.raises(InputError) as caught:
        byo.load_weights_file(make(), "x.pt")
    assert str(caught.value).startswith(message)
    assert byo.load_weights_file(good_weights).keys() == MnistCNN().state_dict().keys()


def test_an_onnx_file_given_as_weights_is_named(cnn_onnx):
    with pytest.raises(InputError, match=r"^model.onnx is an ONNX model \(load it with explorer.core.byo.from_onnx\)"):
        byo.load_weights_file(cnn_onnx, "model.onnx")


def test_a_missing_path_is_named(tmp_path):
    with pytest.raises(InputError, match="^there is no file at .*nothing.pt; check the path."):
        byo.load_weights_file(tmp_path / "nothing.pt")


def vit_weights() -> dict:
    return MnistViT().state_dict()


def narrow_weights() -> dict:
    return random_cnn(1, widths=(8, 32, 64)).state_dict()


def nan_weights() -> dict:
    state = random_cnn(2).state_dict()
    state["classifier.bias"][3] = float("nan")
    return state


BAD_FITS = {
    "keys of another architecture": (
        "mnist-cnn", vit_weights, r"^w.safetensors does not fit the mnist-cnn architecture \(17 missing keys: "
        r"features.0.weight, features.1.weight, features.1.bias, features.1.running_mean, and 13 more; "
        r"56 unexpected keys: blocks.0.attn.proj.bias, blocks.0.attn.proj.weight, blocks.0.attn.qkv.bias, "
        r"blocks.0.attn.qkv.weight, and 52 more\)\. "
        r"Load weights saved from a mnist-cnn model, or pick the architecture they were trained with: one of "
        r"mnist-cnn, mnist-vit, mobilenet_v2\.$"),
    "shapes": (
        "mnist-cnn", narrow_weights, r"^w.safetensors does not fit the mnist-cnn architecture \(6 shape mismatches: "
        r"features.0.weight is \(8, 1, 3, 3\) in the file, \(16, 1, 3, 3\) in the model, features.1.weight is "
        r"\(8,\) in the file, \(16,\) in the model, .*, and 2 more\)"),
    "NaN": ("mnist-cnn", nan_weights, r"^w.safetensors has NaN or infinite values in classifier.bias; "),
    "unknown architecture": ("resnet50", vit_weights, r"^no architecture named 'resnet50'; choose one of: "
                                                      r"'mnist-cnn', 'mnist-vit', 'mobilenet_v2'$"),
}


@pytest.mark.parametrize("case", BAD_FITS)
def test_weights_that_do_not_fit_are_refused_with_what_does_not_fit(case, names, good_weights, rng):
    architecture, make, message = BAD_FITS[case]
    name = names()
    with pytest.raises(InputError, match=message):
        byo.from_weights(architecture, save_safetensors(make()), name=name, filename="w.safetensors")
    assert name not in zoo.list()  # nothing half-registered
    model = byo.from_weights("mnist-cnn", good_weights, name=name)
    assert model.probabilities(torch.randn(2, 1, 28, 28, generator=rng)).shape == (2, 10)


def test_bn_step_counter_may_be_missing(cnn, names):
    state = {k: v for k, v in cnn.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert byo.from_weights("mnist-cnn", state, name=names()).card.n_params == 29178


# --- ONNX ------------------------------------------------------------------------------------------------------

def test_onnx_records_match_the_torch_records_layer_by_layer(cnn, cnn_onnx, names, rng):
    model = byo.from_onnx(cnn_onnx, **MNIST, name=names())
    x = torch.randn(5, 1, 28, 28, generator=rng)
    ours, reference = model.trace(x), trace.run(cnn, x)
    # onnxruntime and torch sum in different orders: float32 rounding, far below the 1e-4 target (C15).
    torch.testing.assert_close(ours.logits, reference.logits, rtol=1e-4, atol=1e-4)
    assert [r.kind for r in ours] == [r.kind for r in reference]  # conv, norm, activation, pool, ..., linear
    assert [r.module_type for r in ours][:4] == ["OnnxConv", "OnnxBatchNormalization", "OnnxRelu", "OnnxMaxPool"]
    for record, expected in zip(ours, reference, strict=True):
        torch.testing.assert_close(record.output, expected.output, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(record.input, expected.input, rtol=1e-4, atol=1e-4)
    for record, expected in zip(ours.of_kind("conv") + ours.of_kind("linear"),
                                reference.of_kind("conv") + reference.of_kind("linear"), strict=True):
        assert torch.equal(record.params["weight"], expected.params["weight"])  # nn.Linear's (out, in) layout


def test_onnx_card_counts_the_initializers_like_torch_counts_parameters(cnn, cnn_onnx, names):
    model = byo.from_onnx(cnn_onnx, **MNIST, name=names())
    reference = zoo.from_module(cnn, (1, 28, 28), **MNIST, name=names())
    assert model.card.n_params == reference.card.n_params == 29178  # BatchNorm statistics are buffers in both
    assert model.card.macs == reference.card.macs
    assert (model.card.family, model.card.input_shape, model.card.preprocess) == ("onnx", (1, 28, 28), "mnist")


def test_a_private_copy_with_changed_weights_computes_with_them(cnn, cnn_onnx, names, rng):
    shared = byo.from_onnx(cnn_onnx, **MNIST, name=names()).module
    before = {k: v.clone() for k, v in shared.state_dict().items()}
    private, changed = copy.deepcopy(shared), copy.deepcopy(cnn)
    with torch.no_grad():
        private.get_submodule("classifier/Gemm").weight.mul_(-2)
        changed.classifier.weight.mul_(-2)
    x = torch.randn(3, 1, 28, 28, generator=rng)
    torch.testing.assert_close(private(x), changed(x), rtol=1e-4, atol=1e-4)  # float32 rounding, as above
    assert all(torch.equal(v, before[k]) for k, v in shared.state_dict().items())  # C8: the shared one is not
    torch.testing.assert_close(shared(x), cnn(x), rtol=1e-4, atol=1e-4)


def hand_built_onnx(w1: torch.Tensor, w2: torch.Tensor, fc: torch.Tensor) -> bytes:
    """Weights written three ways other exporters use: a Constant node, an Identity of an initializer, and
    a Gemm weight stored (in, out) with transB=0."""
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["w1"], value=numpy_helper.from_array(w1.numpy(), "w1")),
         helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
         helper.make_node("Identity", ["w2_stored"], ["w2"]),
         helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
         helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="pool"),
         helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
         helper.make_node("Gemm", ["f", "fc"], ["logits"], name="fc")],
        "hand-built",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w2.numpy(), "w2_stored"), numpy_helper.from_array(fc.numpy(), "fc")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_onnx_weights_from_constants_identities_and_gemm_match_torch_functional(names, rng):
    w1, w2, fc = (torch.randn(*shape, generator=rng) for shape in [(4, 1, 3, 3), (4, 4, 3, 3), (4, 3)])
    model = byo.from_onnx(hand_built_onnx(w1, w2, fc), list("abc"), (0.5,), (0.5,), name=names())
    x = torch.randn(2, 1, 8, 8, generator=rng)
    t = model.trace(x)
    c1 = F.conv2d(x, w1, padding=1)
    c2 = F.conv2d(c1.relu(), w2)
    expected = {"conv1": c1, "relu1": c1.relu(), "conv2": c2, "pool": c2.mean((2, 3), keepdim=True),
                "flatten": c2.mean((2, 3)), "fc": c2.mean((2, 3)) @ fc}
    assert t.names == tuple(expected)
    for name, value in expected.items():  # float32 rounding in onnxruntime's kernels, as above
        torch.testing.assert_close(t[name].output, value, rtol=1e-4, atol=1e-4)
    assert [r.kind for r in t] == ["conv", "activation", "conv", "pool", "other", "linear"]
    assert torch.equal(t["conv1"].params["weight"], w1) and torch.equal(t["conv2"].params["weight"], w2)
    assert torch.equal(t["fc"].params["weight"], fc.T)  # nn.Linear's (out, in)
    assert model.card.n_params == w1.numel() + w2.numel() + fc.numel()
    assert model.card.macs == 8 * 8 * 4 * 9 + 6 * 6 * 4 * 36 + 3 * 4


def test_onnx_exported_with_a_batch_of_one_runs_batches(cnn, names, rng):
    data = export_onnx(cnn, torch.zeros(1, 1, 28, 28), dynamic={})
    model = byo.from_onnx(data, **MNIST, name=names())
    x = torch.randn(3, 1, 28, 28, generator=rng)
    torch.testing.assert_close(model.trace(x).logits, cnn(x), rtol=1e-4, atol=1e-4)


def test_onnx_input_shape_fills_free_dimensions(names, rng):
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    data = export_onnx(net, torch.zeros(1, 1, 20, 20), {"x": {0: "b", 2: "h", 3: "w"}})
    model = byo.from_onnx(data, list("abcd"), (0.5,), (0.5,), name=names(), input_shape=(1, 12, 16))
    x = torch.randn(2, 1, 12, 16, generator=rng)
    torch.testing.assert_close(model.trace(x).logits, net(x), rtol=1e-4, atol=1e-4)
    assert [r.kind for r in model.trace(x)] == ["conv", "activation", "pool", "other"]


def test_onnx_model_refuses_bad_inputs_and_keeps_working(cnn, cnn_onnx, names, rng):
    model = byo.from_onnx(cnn_onnx, **MNIST, name=names())
    nan = torch.randn(2, 1, 28, 28, generator=rng)
    nan[1, 0, 3, 3] = float("nan")
    with pytest.raises(InputError, match="^the model input contains NaN or infinite values.$"):
        model.trace(nan)
    with pytest.raises(InputError, match=r"takes inputs of shape \(N, 1, 28, 28\), got \(2, 3, 28, 28\)"):
        model.probabilities(torch.zeros(2, 3, 28, 28))
    with pytest.raises(InputError, match=r"^this ONNX model takes inputs of shape \(N, 1, 28, 28\), got \(1, 28, 28\)"):
        model.module(torch.zeros(1, 28, 28))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.module.modules())
    x = torch.randn(2, 1, 28, 28, generator=rng)
    torch.testing.assert_close(model.probabilities(x), cnn(x).softmax(-1), rtol=1e-4, atol=1e-4)


def onnx_of(net: nn.Module, shape: tuple[int, ...], dynamic: dict | None = None) -> bytes:
    return export_onnx(net.eval(), torch.zeros(*shape), dynamic)


BAD_ONNX = {
    "empty": (lambda: b"", {}, r"^m.onnx is empty \(0 bytes\); expected an ONNX model \(.onnx\), e.g. one "
                               r"written by torch.onnx.export.$"),
    "garbage": (lambda: b"\x13" + os.urandom(500), {}, r"^m.onnx is not (a valid|an) ONNX model"),
    "png": (png_bytes, {}, r"^m.onnx is not an ONNX model; it looks like a PNG image; expected an ONNX model"),
    "weights": (lambda: save_safetensors({"w": torch.zeros(3)}), {},
                r"^m.onnx is not an ONNX model; it looks like a safetensors weights file; expected an ONNX model"),
    "truncated": (lambda: onnx_of(random_cnn(3), (1, 1, 28, 28))[:5000], {}, r"^m.onnx is not (a valid|an) ONNX model"),
    "flat input": (lambda: onnx_of(nn.Linear(784, 10), (1, 784)), {},
                   r"^m.onnx's input 'x' has shape \(\?, 784\); the explorer runs image classifiers with an "
                   r"\(N, C, H, W\) input.$"),
    "fixed batch of 4": (lambda: onnx_of(random_cnn(3), (4, 1, 28, 28), {}), {},
                         r"^m.onnx's input has a fixed batch of 4; export it with a free batch dimension"),
    "free height and width": (
        lambda: onnx_of(nn.Sequential(nn.Conv2d(1, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), (1, 1, 9, 9),
                        {"x": {0: "b", 2: "h", 3: "w"}}), {},
        r"^m.onnx's input \(\?, 1, \?, \?\) leaves \(C, H, W\) free; pass input_shape=\(C, H, W\).$"),
    "input_shape that does not fit": (
        lambda: onnx_of(random_cnn(3), (1, 1, 28, 28)), {"input_shape": (3, 28, 28)},
        r"^input_shape=\(3, 28, 28\) does not fit m.onnx's input \(\?, 1, 28, 28\); give \(C, H, W\) with the "
        r"file's fixed sizes.$"),
    "labels that do not fit": (lambda: onnx_of(random_cnn(3), (1, 1, 28, 28)), {"labels": ["a", "b"]},
                               "^the model gives 10 outputs but 2 labels were given.$"),
}


@pytest.mark.parametrize("case", BAD_ONNX)
def test_bad_onnx_files_are_refused_with_a_clear_message(case, cnn, cnn_onnx, names, rng):
    make, options, message = BAD_ONNX[case]
    name = names()
    with pytest.raises(InputError, match=message):
        byo.from_onnx(make(), **{**MNIST, **options}, name=name, filename="m.onnx")
    assert name not in zoo.list()
    x = torch.randn(1, 1, 28, 28, generator=rng)
    torch.testing.assert_close(byo.from_onnx(cnn_onnx, **MNIST, name=name).probabilities(x), cnn(x).softmax(-1),
                               rtol=1e-4, atol=1e-4)


def test_onnx_vit_logits_match_torch(names, rng):
    vit = MnistViT().eval()
    model = byo.from_onnx(onnx_of(vit, (1, 1, 28, 28)), **MNIST, name=names())
    x = torch.randn(2, 1, 28, 28, generator=rng)
    t = model.trace(x)
    torch.testing.assert_close(t.logits, vit(x), rtol=1e-4, atol=1e-4)
    assert t.of_kind("conv")[0].output_shape == (2, 64, 4, 4)
    assert len(t.of_kind("linear")) == 4 * 4 + 1  # qkv, proj and two MLP layers per block, then the head

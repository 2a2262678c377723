"""A Hugging Face ViT model folder as your own model: logits, labels and normalization against transformers itself,
and the exact message of each refusal. Small random configs: nothing is downloaded."""

from __future__ import annotations

import io
import json
import pickle
import socket
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from explorer.core import hf, images, trace, uploads, zoo
from explorer.errors import InputError
from tests.core.test_byo import Touch

transformers = pytest.importorskip("transformers")

SMALL = dict(image_size=28, patch_size=7, num_channels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64)
# The supported classes, each with its config class: every one is built, saved and loaded in the logits test.
CLASSES = [(transformers.ViTForImageClassification, transformers.ViTConfig),
           (transformers.DeiTForImageClassification, transformers.DeiTConfig),
           (transformers.DeiTForImageClassificationWithTeacher, transformers.DeiTConfig)]


@pytest.fixture(autouse=True)
def forget_registered_models():
    """Whatever a test registers is unregistered afterwards."""
    before = set(zoo.list())
    yield
    for name in set(zoo.list()) - before:
        zoo.unregister(name)


def random_labels(rng: torch.Generator, n: int = 10) -> dict[int, str]:
    return {i: f"class-{int(k)}" for i, k in enumerate(torch.randperm(1000, generator=rng)[:n])}


def small_model(rng: torch.Generator, model_class=transformers.ViTForImageClassification,
                config_class=transformers.ViTConfig, **overrides):
    """A small classifier with every weight random and O(1) (the init's 0.02 scale would make all logits ~0)."""
    config = config_class(**{**SMALL, "id2label": random_labels(rng), **overrides})
    model = model_class(config).eval()
    with torch.no_grad():
        for tensor in model.parameters():
            fan_in = tensor[0].numel() if tensor.dim() > 1 else 1
            tensor.copy_(torch.randn(tensor.shape, generator=rng) / fan_in ** 0.5)
    return model


def folder_files(model, tmp_path: Path, processor=None) -> dict[str, bytes]:
    """The files save_pretrained writes, as the panel gives them: {file name: bytes}."""
    folder = tmp_path / "saved"
    model.save_pretrained(folder, safe_serialization=True)
    if processor is not None:
        processor.save_pretrained(folder)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def zipped(files: dict[str, bytes], folder: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for filename, data in files.items():
            archive.writestr(folder + filename, data)
    return buffer.getvalue()


def image_processor(family: str = "ViT", **options):
    """transformers' image processor of a family; its PIL backend where torchvision (the default one) is missing."""
    return getattr(transformers, f"{family}ImageProcessorPil", getattr(transformers, f"{family}ImageProcessor"))(
        **options)


# --- what is loaded --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("given", ["files", "zip", "zip of the folder"])
@pytest.mark.parametrize(("model_class", "config_class"), CLASSES, ids=lambda c: c.__name__)
def test_logits_match_the_transformers_model_on_random_inputs(model_class, config_class, given, rng,
                                                              tmp_path):
    reference = small_model(rng, model_class, config_class)
    files = folder_files(reference, tmp_path)
    if given == "files":
        model = uploads.from_upload(list(files.items()), "mnist-cnn", "hf-test")
    else:
        model = uploads.from_upload([("vit.zip", zipped(files, "vit/" if given == "zip of the folder" else ""))],
                                "mnist-cnn", "hf-test")
    x = torch.randn(5, 1, 28, 28, generator=rng)
    with torch.no_grad():
        expected = reference(pixel_values=x).logits  # transformers' default attention kernel, not the eager one
    # The same float32 weights and ops; only the attention kernels' summation order differs.
    torch.testing.assert_close(model.module(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(trace.run(model.module, x).logits, expected, rtol=1e-5, atol=1e-5)
    assert model.card.input_shape == (1, 28, 28) and model.card.family == "vit"
    assert not model.module.training and model.module.model.config._attn_implementation == "eager"


def test_a_folder_loads_without_the_network(rng, tmp_path, monkeypatch):
    """`from_pretrained(None, state_dict=...)` builds from the folder's bytes alone: no connection is tried (the app
    works offline)."""
    files = folder_files(small_model(rng), tmp_path)
    tried: list[object] = []

    def no_network(_socket, address):
        tried.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    model = uploads.from_upload(list(files.items()), "mnist-cnn", "hf-offline")
    assert tried == []
    assert model.module(torch.randn(1, 1, 28, 28, generator=rng)).shape == (1, 10)


def test_a_float16_checkpoint_computes_in_float32_with_its_rounded_weights(rng, tmp_path):
    reference = small_model(rng)
    model = hf.from_files(folder_files(reference.half(), tmp_path), name="hf-test")
    x = torch.randn(4, 1, 28, 28, generator=rng)
    assert all(p.dtype == torch.float32 for p in model.module.parameters())
    with torch.no_grad():
        expected = reference.float()(pixel_values=x).logits  # the float16 weights, widened: nothing lost twice
    torch.testing.assert_close(model.module(x), expected, rtol=1e-5, atol=1e-5)


def test_labels_come_from_id2label(rng, tmp_path):
    reference = small_model(rng, id2label=random_labels(rng, 7))
    model = hf.from_files(folder_files(reference, tmp_path), name="hf-test")
    assert model.labels == tuple(reference.config.id2label[i] for i in range(7))


def test_normalization_from_preprocessor_config_matches_the_image_processor(rng, tmp_path):
    mean, std = torch.rand(2, generator=rng).tolist()
    rescale = 1 / (100 + 200 * torch.rand(1, generator=rng).item())  # not 1/255: the factor is folded in
    processor = image_processor(do_resize=False, image_mean=[mean], image_std=[std + 0.1], rescale_factor=rescale)
    model = hf.from_files(folder_files(small_model(rng), tmp_path, processor), name="hf-test")
    pixels = torch.randint(0, 256, (28, 28), generator=rng, dtype=torch.uint8).numpy()
    expected = processor(images=pixels[:, :, None], return_tensors="pt", input_data_format="channels_last")
    # (v/255 - m/(255r)) / (s/(255r)) against (v·r - m) / s: equal up to float32 rounding of values up to ~30
    torch.testing.assert_close(images.view_to_input(pixels, model.card), expected["pixel_values"], rtol=1e-5,
                               atol=1e-5)
    assert "normalization from preprocessor_config.json" in model.card.task


@pytest.mark.parametrize(("model_class", "config_class"), CLASSES, ids=lambda c: c.__name__)
def test_without_a_preprocessor_config_the_image_processors_default_is_assumed_and_said(model_class, config_class,
                                                                                         rng, tmp_path):
    model = hf.from_files(folder_files(small_model(rng, model_class, config_class), tmp_path), name="hf-test")
    processor = image_processor(model_class.__name__.removesuffix("ForImageClassificationWithTeacher")
                                .removesuffix("ForImageClassification"))
    assert len(set(processor.image_mean)) == 1 and len(set(processor.image_std)) == 1  # the same for any channel
    assert model.card.mean == (processor.image_mean[0],) and model.card.std == (processor.image_std[0],)
    assert ("normalization assumed: no preprocessor_config.json, so mean 0.5 and std 0.5 per channel"
            in model.card.task)


def test_a_folder_upload_with_relative_paths_is_read(rng, tmp_path):
    reference = small_model(rng)
    files = {f"my-vit/{filename}": data for filename, data in folder_files(reference, tmp_path).items()}
    model = hf.from_files(files, name="hf-test")
    x = torch.randn(2, 1, 28, 28, generator=rng)
    torch.testing.assert_close(model.module(x), reference(pixel_values=x).logits, rtol=1e-5, atol=1e-5)


# --- refusals --------------------------------------------------------------------------------------------------

@pytest.fixture
def saved(rng, tmp_path) -> dict[str, bytes]:
    return folder_files(small_model(rng), tmp_path)


def refusal(files: dict[str, bytes]) -> str:
    with pytest.raises(InputError) as error:
        hf.from_files(files, name="never-registered")
    return str(error.value)


def test_a_folder_without_config_json_is_refused(saved):
    assert refusal({"model.safetensors": saved["model.safetensors"]}) == (
        "no config.json in the uploaded files; a Hugging Face model folder has config.json (the architecture and "
        "labels) beside model.safetensors. Give both.")


def test_a_folder_without_model_safetensors_is_refused(saved):
    assert refusal({"config.json": saved["config.json"]}) == (
        "no model.safetensors in the uploaded files: save the model with model.save_pretrained(path, "
        "safe_serialization=True).")


def test_a_folder_with_only_a_pickled_checkpoint_is_refused_and_never_unpickled(saved, tmp_path, monkeypatch):
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(Touch(marker))

    def never(*args, **kwargs):
        raise AssertionError("a pickle was opened")

    monkeypatch.setattr(torch, "load", never)
    monkeypatch.setattr(pickle, "loads", never)
    files = {"config.json": saved["config.json"], "pytorch_model.bin": payload}
    expected = ("no model.safetensors in {where}: pytorch_model.bin is a pickle, which the explorer never opens "
                "(unpickling can run code); convert it with model.save_pretrained(path, safe_serialization=True).")
    assert refusal(files) == expected.format(where="the uploaded files")
    with pytest.raises(InputError) as error:
        uploads.from_upload([("vit.zip", zipped(files))], "mnist-cnn", "never-registered")
    assert str(error.value) == expected.format(where="vit.zip")
    assert not marker.exists()
    monkeypatch.undo()
    pickle.loads(payload)  # the control: unpickling these bytes does run code
    assert marker.exists()


def test_a_pickle_named_model_safetensors_is_refused_unopened(saved, tmp_path):
    marker = tmp_path / "code-ran"
    assert refusal({"config.json": saved["config.json"], "model.safetensors": pickle.dumps(Touch(marker))}) == (
        "model.safetensors is a PyTorch checkpoint or pickle, not a safetensors file; it was not opened. Save the "
        "weights with safetensors.torch.save_file.")
    assert not marker.exists()


def test_weights_for_another_config_name_the_first_mismatching_shape(rng, saved):
    config = json.loads(saved["config.json"])
    config["id2label"] = {str(i): f"c{i}" for i in range(12)}
    assert refusal({**saved, "config.json": json.dumps(config).encode()}) == (
        "model.safetensors in the uploaded files does not fit its config.json (2 shape mismatches: classifier.weight "
        "is (10, 32) in the file, (12, 32) for the config, classifier.bias is (10,) in the file, (12,) for the "
        "config). Give the config.json that was saved with these weights.")


def test_weights_missing_a_tensor_or_with_an_extra_one_are_refused(saved):
    state = load_safetensors(saved["model.safetensors"])
    del state["classifier.bias"]
    state["head.extra"] = torch.zeros(3)
    assert refusal({**saved, "model.safetensors": save_safetensors(state)}) == (
        "model.safetensors in the uploaded files does not fit its config.json (1 missing keys: classifier.bias; "
        "1 unexpected keys: head.extra). Give the config.json that was saved with these weights.")


def test_weights_with_nan_are_refused(saved):
    state = load_safetensors(saved["model.safetensors"])
    state["classifier.weight"][0, 0] = float("nan")
    assert refusal({**saved, "model.safetensors": save_safetensors(state)}) == (
        "model.safetensors has NaN or infinite values in classifier.weight; the training that wrote it diverged. "
        "Use weights from an earlier checkpoint.")


@pytest.mark.parametrize(("change", "expected"), [
    ({"model_type": "bert", "architectures": ["BertForSequenceClassification"]},
     "config.json is for model_type 'bert' (names BertForSequenceClassification); the explorer reads Hugging Face "
     "ViT image classifiers: ViTForImageClassification, DeiTForImageClassification, "
     "DeiTForImageClassificationWithTeacher."),
    ({"architectures": ["ViTForMaskedImageModeling"]},
     "config.json names ViTForMaskedImageModeling under \"architectures\"; for model_type 'vit' the explorer reads "
     "ViTForImageClassification. Save the classifier itself (not the base model) with save_pretrained."),
    ({"architectures": None},
     "config.json names no model class under \"architectures\"; for model_type 'vit' the explorer reads "
     "ViTForImageClassification. Save the classifier itself (not the base model) with save_pretrained."),
])
def test_an_unsupported_model_is_refused_naming_what_is_supported(saved, change, expected):
    config = {**json.loads(saved["config.json"]), **change}
    assert refusal({**saved, "config.json": json.dumps(config).encode()}) == expected


def test_a_config_that_is_not_json_is_refused(saved):
    assert refusal({**saved, "config.json": b"{not json"}).startswith(
        "config.json in the uploaded files is not JSON (Expecting property name enclosed in double quotes")


def test_without_transformers_a_folder_is_refused_naming_the_package(saved, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    assert refusal(saved) == (
        "reading a Hugging Face model folder needs the transformers package, which is not installed here: pip "
        "install transformers. Without it, upload weights for one of the explorer's architectures, or your model "
        "exported to ONNX.")


def test_a_zip_with_two_model_folders_is_refused(saved):
    data = zipped({"a/config.json": saved["config.json"], "b/config.json": saved["config.json"]})
    with pytest.raises(InputError, match=r"^two.zip holds 2 config.json files \(a/config.json, b/config.json\); "
                                         r"zip one model folder.$"):
        hf.from_zip(data, "two.zip")


def test_a_zip_member_larger_than_the_limit_is_refused_before_it_is_read(saved, monkeypatch):
    monkeypatch.setattr(hf, "MAX_JSON_BYTES", len(saved["config.json"]) - 1)
    with pytest.raises(InputError) as error:
        hf.from_zip(zipped(saved), "vit.zip")
    assert str(error.value) == (f"config.json in vit.zip is {len(saved['config.json']):,} bytes unpacked; the "
                                f"explorer reads up to {hf.MAX_JSON_BYTES:,} bytes for it. Use a smaller model.")


def test_a_damaged_zip_is_refused():
    with pytest.raises(InputError, match=r"^vit.zip is not a readable zip archive; zip the model folder again"):
        uploads.from_upload([("vit.zip", b"PK\x03\x04" + bytes(40))], "mnist-cnn", "never-registered")


def test_preprocessor_image_mean_with_the_wrong_channel_count_is_refused(saved):
    processor = json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5]}).encode()
    with pytest.raises(InputError) as error:
        hf.from_files({**saved, "preprocessor_config.json": processor}, name="hf-test")
    assert str(error.value) == ("preprocessor_config.json's image_mean in the uploaded files is [0.5, 0.5, 0.5]; the "
                                "model takes 1 channels, so give one number per channel.")


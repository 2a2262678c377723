"""Bring your own Hugging Face ViT: a model folder (config.json, model.safetensors, preprocessor_config.json).

The folder arrives as its files' bytes (several files chosen at once) or as one .zip of it. Only
safetensors weights are read: a pytorch_model.bin (a pickle) is named and refused, never opened.
transformers, an optional package imported only when a folder is given, builds the class that
config.json names and loads the safetensors tensors into it through `from_pretrained(None,
state_dict=...)`: no path is passed, so nothing else can be read, and transformers applies its own
key renames (transformers 5 names ViT's layers differently from the checkpoints it writes).
Attention is "eager", so the attention probabilities exist as a tensor that a hook can see.

What the card says comes from the folder: the classes from config.json's id2label, (C, H, W) from
num_channels and image_size, and the normalization from preprocessor_config.json's image_mean and
image_std, its rescale factor folded in, as (x / 255 - mean) / std. Without that file the card
assumes mean 0.5 and std 0.5 per channel (transformers' ViT and DeiT image processors' defaults)
and says so.

Tests (tests/core/test_hf_checkpoint.py) compare the logits with the transformers model's own on
random inputs, the labels with id2label, mean and std with the file, and each refusal's message.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from torch import Tensor, nn

from explorer.core import byo, zoo
from explorer.errors import InputError

CONFIG, WEIGHTS, PREPROCESSOR = "config.json", "model.safetensors", "preprocessor_config.json"
SHARD_INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")  # torch.save's formats: pickles, never opened here
# Largest member read out of a .zip, in bytes: a ViT-B/16 checkpoint is 346 MB, a config a few kB.
MAX_WEIGHTS_BYTES = 1 << 30
MAX_JSON_BYTES = 10 << 20
# model_type -> the image-classification classes of that family, and whether its image processor
# centre-crops by default (DeiT resizes to 256 and crops 224, ViT resizes straight to 224).
FAMILIES: dict[str, tuple[tuple[str, ...], bool]] = {
    "vit": (("ViTForImageClassification",), False),
    "deit": (("DeiTForImageClassification", "DeiTForImageClassificationWithTeacher"), True),
}
SUPPORTED = ", ".join(name for classes, _ in FAMILIES.values() for name in classes)
ASSUMED_MEAN = ASSUMED_STD = 0.5  # transformers' IMAGENET_STANDARD_MEAN/STD, the ViT and DeiT processors' defaults


@dataclass(frozen=True)
class Folder:
    """The files of a model folder that are read, and the names of the others (to name a pickle)."""

    files: dict[str, bytes]    # basename -> bytes, for CONFIG, WEIGHTS and PREPROCESSOR when present
    others: tuple[str, ...]    # basenames of everything else that was given
    where: str                 # "the uploaded files", "vit.zip": names the folder in messages


class HuggingFaceClassifier(nn.Module):
    """A transformers image classifier as the explorer runs models: (N, C, H, W) in, (N, classes) logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(pixel_values=x, return_dict=True).logits


def from_files(files: Mapping[str, bytes], name: str = "my-hf-model",
               where: str = "the uploaded files") -> zoo.ZooModel:
    """Register a Hugging Face ViT from its folder's files, given as {file name: bytes}."""
    names = [PurePosixPath(n).name for n in files]  # a folder upload gives relative paths
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"{', '.join(twice)} given more than once in {where}; give the files of one model folder.")
    by_name = {PurePosixPath(n).name: bytes(data) for n, data in files.items()}
    read = {n: by_name[n] for n in (CONFIG, WEIGHTS, PREPROCESSOR) if n in by_name}
    return from_folder(Folder(read, tuple(n for n in by_name if n not in read), where), name)


def from_zip(data: bytes, filename: str = "the uploaded zip", name: str = "my-hf-model") -> zoo.ZooModel:
    """Register a Hugging Face ViT from a .zip of its folder (the folder itself or its files at the top)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise InputError(f"{filename} is not a readable zip archive; zip the model folder again, or choose its "
                         f"{CONFIG} and {WEIGHTS} together.") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
        configs = [m for m in members if PurePosixPath(m.filename).name == CONFIG]
        if len(configs) > 1:
            raise InputError(f"{filename} holds {len(configs)} {CONFIG} files "
                             f"({', '.join(m.filename for m in configs)}); zip one model folder.")
        folder = PurePosixPath(configs[0].filename).parent if configs else PurePosixPath(".")
        inside = [m for m in members if PurePosixPath(m.filename).parent == folder]
        read = {}
        for member in inside:
            base = PurePosixPath(member.filename).name
            if base in (CONFIG, WEIGHTS, PREPROCESSOR):
                read[base] = _member(archive, member, filename)
        others = tuple(PurePosixPath(m.filename).name for m in inside if PurePosixPath(m.filename).name not in read)
    return from_folder(Folder(read, others, filename), name)


def _member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, filename: str) -> bytes:
    limit = MAX_WEIGHTS_BYTES if member.filename.endswith(WEIGHTS) else MAX_JSON_BYTES
    if member.file_size > limit:
        raise InputError(f"{member.filename} in {filename} is {member.file_size:,} bytes unpacked; the explorer "
                         f"reads up to {limit:,} bytes for it. Use a smaller model.")
    try:
        return archive.read(member)  # reads at most the header's size, and checks the CRC: a lying header fails
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, OSError) as error:
        raise InputError(f"{member.filename} in {filename} cannot be unpacked ({byo.first_line(error)}); zip the "
                         "folder again without encryption, with the usual compression (deflate).") from None


def from_folder(folder: Folder, name: str = "my-hf-model") -> zoo.ZooModel:
    """Register the Hugging Face image classifier that a model folder holds."""
    _check_files(folder)
    transformers = _transformers()
    raw = _json(folder, CONFIG)
    model_class = _model_class(raw, transformers)
    try:
        config = model_class.config_class.from_dict(raw)
    except (TypeError, ValueError, KeyError) as error:
        raise InputError(f"{CONFIG} in {folder.where} cannot configure a {model_class.__name__} "
                         f"({byo.first_line(error)}); use the {CONFIG} saved with the weights.") from None
    channels, height, width = _input_shape(config, folder.where)
    labels = _labels(config, folder.where)
    state = _weights(folder)
    module = _load(model_class, config, state, folder.where)
    mean, std, preprocess, normalization = _normalization(folder, raw["model_type"], channels)
    return zoo.from_module(
        HuggingFaceClassifier(module), (channels, height, width), labels, mean, std, name=name, family="vit",
        task=f"your Hugging Face {model_class.__name__}, {len(labels)} classes from {CONFIG}'s id2label; "
             f"{normalization}",
        source=f"{folder.where}: {model_class.__name__} built by transformers {transformers.__version__}, "
               f"weights read from {WEIGHTS} with safetensors",
        preprocess=preprocess)


def _check_files(folder: Folder) -> None:
    if CONFIG not in folder.files:
        raise InputError(f"no {CONFIG} in {folder.where}; a Hugging Face model folder has {CONFIG} (the "
                         f"architecture and labels) beside {WEIGHTS}. Give both.")
    if WEIGHTS in folder.files:
        return
    pickles = [n for n in folder.others if n.lower().endswith(PICKLE_SUFFIXES)]
    if SHARD_INDEX in folder.others:
        hint = (f"the weights are split into shards ({SHARD_INDEX}); save them as one file with "
                "model.save_pretrained(path, max_shard_size='2GB').")
    elif pickles:
        hint = (f"{', '.join(pickles)} is a pickle, which the explorer never opens (unpickling can run code); "
                "convert it with model.save_pretrained(path, safe_serialization=True).")
    else:
        hint = "save the model with model.save_pretrained(path, safe_serialization=True)."
    raise InputError(f"no {WEIGHTS} in {folder.where}: {hint}")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise InputError("reading a Hugging Face model folder needs the transformers package, which is not "
                         "installed here: pip install transformers. Without it, upload weights for one of the "
                         "explorer's architectures, or your model exported to ONNX.") from None
    return transformers


def _json(folder: Folder, filename: str) -> dict:
    try:
        value = json.loads(folder.files[filename])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{filename} in {folder.where} is not JSON ({byo.first_line(error)}); use the file "
                         "that save_pretrained wrote.") from None
    if not isinstance(value, dict):
        raise InputError(f"{filename} in {folder.where} holds a JSON {type(value).__name__}, not an object; use "
                         "the file that save_pretrained wrote.")
    return value


def _model_class(raw: dict, transformers) -> type[nn.Module]:
    """The transformers class config.json names, if it is a supported ViT-family image classifier."""
    architectures, model_type = raw.get("architectures"), raw.get("model_type")
    architectures = architectures if isinstance(architectures, list) else []
    named = f"names {', '.join(map(str, architectures))}" if architectures else "names no model class"
    if model_type not in FAMILIES:
        raise InputError(f"{CONFIG} is for model_type {model_type!r} ({named}); the explorer reads Hugging Face "
                         f"ViT image classifiers: {SUPPORTED}.")
    classes = FAMILIES[model_type][0]
    if not architectures or architectures[0] not in classes:
        raise InputError(f"{CONFIG} {named} under \"architectures\"; for model_type {model_type!r} the explorer "
                         f"reads {', '.join(classes)}. Save the classifier itself (not the base model) with "
                         "save_pretrained.")
    return getattr(transformers, architectures[0])


def _input_shape(config, where: str) -> tuple[int, int, int]:
    size = config.image_size
    shape = (config.num_channels, *((size, size) if isinstance(size, int) else size))
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise InputError(f"{CONFIG} in {where} gives num_channels={config.num_channels} and image_size={size}; "
                         "they must be a positive whole number and one (or a [height, width] pair).")
    return shape


def _labels(config, where: str) -> tuple[str, ...]:
    id2label = {int(k): str(v) for k, v in config.id2label.items()}
    if sorted(id2label) != list(range(len(id2label))):
        raise InputError(f"{CONFIG}'s id2label in {where} numbers its classes {sorted(id2label)[:8]}; it must "
                         "number them 0, 1, 2, ... without gaps.")
    return tuple(id2label[i] for i in range(len(id2label)))


def _weights(folder: Folder) -> dict[str, Tensor]:
    state = byo.read_safetensors(folder.files[WEIGHTS], WEIGHTS)
    byo.check_finite(state, WEIGHTS)
    return state


def _load(model_class, config, state: dict[str, Tensor], where: str) -> nn.Module:
    """The model with exactly these weights; any key or shape that does not fit the config is an InputError."""
    model, info = model_class.from_pretrained(
        None, config=config, state_dict=state, attn_implementation="eager", local_files_only=True,
        output_loading_info=True, ignore_mismatched_sizes=True)
    order = {key: i for i, key in enumerate(model.state_dict())}

    def first_layer_first(keys) -> list[str]:
        return sorted(keys, key=lambda k: (order.get(k, len(order)), k))

    mismatched = {key: (tuple(saved), tuple(wanted)) for key, saved, wanted in info["mismatched_keys"]}
    problems = [f"{len(keys)} {what}: {byo.few(keys)}" for keys, what in (
        ([f"{k} is {mismatched[k][0]} in the file, {mismatched[k][1]} for the config"
          for k in first_layer_first(mismatched)], "shape mismatches"),
        (first_layer_first(info["missing_keys"]), "missing keys"),
        (first_layer_first(info["unexpected_keys"]), "unexpected keys")) if keys]
    if problems:
        raise InputError(f"{WEIGHTS} in {where} does not fit its {CONFIG} ({'; '.join(problems)}). Give the "
                         f"{CONFIG} that was saved with these weights.")
    return model.float().eval()  # float16 or bfloat16 checkpoints too: the explorer computes in float32


def _normalization(folder: Folder, model_type: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...],
                                                                             str | None, str]:
    """(mean, std) for inputs scaled to [0, 1], the card's preprocess (None: zoo's default), and what was done."""
    if PREPROCESSOR not in folder.files:
        said = (f"normalization assumed: no {PREPROCESSOR}, so mean {ASSUMED_MEAN} and std {ASSUMED_STD} per "
                "channel, the defaults of transformers' ViT image processors")
        crop = FAMILIES[model_type][1]
        return (ASSUMED_MEAN,) * channels, (ASSUMED_STD,) * channels, "imagenet" if crop else None, said
    raw = _json(folder, PREPROCESSOR)
    mean = _per_channel(raw.get("image_mean", ASSUMED_MEAN), channels, "image_mean", folder.where)
    std = _per_channel(raw.get("image_std", ASSUMED_STD), channels, "image_std", folder.where)
    if not raw.get("do_normalize", True):
        mean, std = (0.0,) * channels, (1.0,) * channels
    # The processor computes (v · r - mean) / std from pixel values v in 0..255; the explorer's input is
    # v / 255, so the same numbers come out with mean and std divided by 255 · r.
    rescale = float(raw.get("rescale_factor", 1 / 255)) if raw.get("do_rescale", True) else 1.0
    if not rescale > 0 or min(std) <= 0:
        raise InputError(f"{PREPROCESSOR} in {folder.where} gives rescale_factor {rescale} and image_std {std}; "
                         "both must be positive.")
    scale = 255 * rescale
    crop = bool(raw.get("do_center_crop", FAMILIES[model_type][1]))
    return (tuple(m / scale for m in mean), tuple(s / scale for s in std), "imagenet" if crop else None,
            f"normalization from {PREPROCESSOR}")


def _per_channel(value: object, channels: int, key: str, where: str) -> tuple[float, ...]:
    values = [value] * channels if isinstance(value, (int, float)) else value
    if not isinstance(values, list) or len(values) != channels or not all(
            isinstance(v, (int, float)) for v in values):
        raise InputError(f"{PREPROCESSOR}'s {key} in {where} is {value!r}; the model takes {channels} channels, "
                         f"so give one number per channel.")
    return tuple(float(v) for v in values)

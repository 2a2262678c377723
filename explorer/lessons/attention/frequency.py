"""What attention filters: the relative log amplitude of Fourier-transformed feature maps, layer by layer.

Park & Kim, "How Do Vision Transformers Work?" (ICLR 2022), §3 and Fig. 2 and 8; the authors' code is
fourier_analysis.ipynb in github.com/xxxnell/how-do-vits-work. For one feature map z (C channels, H × W, H = W = n):

    F_c(u, v) = Σ_{y,x} z_c(y, x) e^{-2πi (u y + v x) / n}                       2-D DFT of each channel
    L(u, v)   = (1/C) Σ_c log(|F_c(u, v)| + ε),   ε = 1e-6                      mean over channels of the log amplitude
    Δ log A(ω_k) = L(k, k) - L(0, 0),   ω_k = 2πk / n,   k = 0 … ⌊n/2⌋           along the diagonal, relative to DC

Exactly the paper's code, which takes the log before averaging over channels (and over the batch; we have one
input), reads the diagonal of the centred (fftshifted) spectrum from its centre outwards and subtracts the centre,
with one difference: the paper's code stops at k = n/2 - 1 (ω = π - 2π/n), and plots that last point at "1.0π";
we go on to the corner of the shifted spectrum, k = n/2, which for even n is exactly ω = π (for a real map,
F(-k, -k) = conj F(k, k), so the diagonal from the centre to either corner holds the same amplitudes). For odd n
the highest diagonal frequency is π (n - 1) / n. A layer's summary is Δ log A at the highest frequency.

Which feature maps, and which layer changed them:
- a vision transformer (a model with attention layers): the residual stream, as the paper does for ViTs. The
  stream entering the first block (patches + positions), then in each pre-norm block the stream after its
  attention (the input of the block's second norm) and after its MLP (the block's output). Tokens (T, D) become
  (D, rows, cols) on the patch grid, without the class token (explorer/lessons/attention/math.py's patch_grid).
  Each attention or MLP layer is judged by its output stream against its input stream.
- any other network: every layer whose output is a square (C, H, W) map with H ≥ 2, judged by its output against
  its own input (both recorded by the trace). Every layer, not the paper's residual blocks of a ResNet: a
  convolution, its norm, its activation and its pooling each get their own say.
Maps that are not square, or 1 × 1, have no diagonal frequency axis and are left out (and named).

A layer "lowers the high frequencies" when the Δ log amplitude at the highest frequency of its output is below
that of its input: the paper finds attention layers do (low-pass), and MLPs and convolutions do the opposite
(high-pass).

Tests (tests/lessons/test_attention_frequency.py) check the spectrum against numpy.fft on maps whose spectrum is
known (a constant, a cosine on the diagonal, a checkerboard at π, white noise), against an independent NumPy
transcription of the paper's recipe on random maps, and the layer-by-layer spectra of the shipped models against
the maps read from forward hooks of their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, partial

import torch
from torch import Tensor, nn

from explorer.core import trace, zoo
from explorer.core.shared_results import RESULTS, input_digest, model_token
from explorer.core.trace import kind_of
from explorer.errors import InputError
from explorer.lessons.attention.math import PatchGrid, patch_grid

EPS = 1e-6  # added to |F| before the log, as in the paper's code: a zero amplitude stays finite
POST_ATTENTION_NORMS = ("norm2", "ln_2", "layernorm_after")  # timm and ours, OpenAI CLIP, HF ViT
COMPARED = ("mnist-vit", "mnist-cnn", "mobilenet_v2")  # the shipped ViT and CNN, and the ImageNet CNN once fetched


def diagonal_frequencies(side: int) -> Tensor:
    """(⌊side/2⌋ + 1,) the frequencies ω_k = 2πk / side along the diagonal, in units of π."""
    return torch.arange(side // 2 + 1, dtype=torch.float64) * 2 / side


def relative_log_amplitude(fmap: Tensor) -> Tensor:
    """(⌊n/2⌋ + 1,) Δ log A(ω_k) = L(k, k) - L(0, 0) of a (C, n, n) map, at diagonal_frequencies(n).

    Only the diagonal of the spectrum is needed, and it is a 1-D DFT: F_c(k, k) = Σ_s w_c(s) e^{-2πiks/n}, where
    w_c(s) sums z_c(y, x) over the wrapped anti-diagonal y + x ≡ s (mod n): one pass over the map and a 1-D FFT
    per channel, instead of a 2-D FFT per channel.
    """
    if fmap.dim() != 3 or fmap.shape[-1] != fmap.shape[-2] or fmap.shape[-1] < 2:
        raise InputError(f"the spectrum along the diagonal needs a (channels, n, n) map with n ≥ 2, got shape "
                         f"{tuple(fmap.shape)}.")
    c, n = fmap.shape[0], fmap.shape[-1]
    y, x = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    wrapped = ((y + x) % n).flatten()  # (n²,) the anti-diagonal of each pixel
    # float64: the high frequencies of a smooth map can be 1e-4 of its mean, too near float32's rounding of the sums
    z = fmap.detach().cpu().double().reshape(c, -1)  # (C, n²)
    folded = torch.zeros(c, n, dtype=torch.float64).index_add_(1, wrapped, z)  # (C, n) w_c(s)
    amplitude = torch.fft.rfft(folded, dim=-1).abs()  # (C, ⌊n/2⌋ + 1): |F_c(k, k)|, k = 0 … ⌊n/2⌋
    log_amplitude = (amplitude + EPS).log().mean(dim=0)  # L(k, k): the log first, then the mean over channels
    return log_amplitude - log_amplitude[0]


def token_map(tokens: Tensor, grid: PatchGrid) -> Tensor:
    """(D, rows, cols): the patch tokens of a (T, D) sequence on their grid, the tokens in front (class) left out."""
    patches = tokens[grid.first:grid.first + grid.n]  # (n, D), row by row
    return patches.T.reshape(tokens.shape[-1], grid.rows, grid.cols)


@dataclass(frozen=True)
class LayerSpectrum:
    """Δ log amplitude of one layer's output, and its highest-frequency value before and after the layer."""

    name: str                # trace record; in a ViT's stream "input of" the first block, "output of" each block
    kind: str                # "attention", "mlp", "embedding" (ViT stream); trace kinds ("conv", "norm", ...) otherwise
    side: int                # n of the (C, n, n) output map
    frequencies_pi: Tensor   # (K,) ω / π
    delta: Tensor            # (K,) Δ log A of the output
    high_before: float       # Δ log A at the highest frequency of the layer's input; NaN where there is none

    @cached_property  # read for every layer of every compared model on each input: a tensor element is slow to read
    def high(self) -> float:
        """Δ log A at the highest frequency of the output."""
        return float(self.delta[-1])

    @cached_property
    def change(self) -> float:
        """high - high_before: below 0, the layer lowered the high frequencies (relative to DC)."""
        return self.high - self.high_before


@dataclass(frozen=True)
class NetworkSpectra:
    """Every layer's LayerSpectrum, in the order the layers ran."""

    layers: tuple[LayerSpectrum, ...]
    left_out: tuple[str, ...]  # layers whose maps are not square or are 1 × 1

    @property
    def depth(self) -> Tensor:
        """(L,) each layer's place in the network, from 0 (first) to 1 (last)."""
        return torch.linspace(0, 1, len(self.layers), dtype=torch.float64)  # one layer: [0]

    def lowering(self, kind: str) -> tuple[int, int]:
        """(how many layers of `kind` lower the highest frequency, how many of them have an input to compare with)."""
        changes = [s.change for s in self.layers if s.kind == kind and not math.isnan(s.change)]
        return sum(c < 0 for c in changes), len(changes)


def network_spectra(model: nn.Module, x: Tensor) -> NetworkSpectra:
    """The relative log amplitude of every layer of `model` on x ((1, C, H, W)); see the module's docstring."""
    attention = [name for name, m in model.named_modules() if kind_of(m) == "attention"]
    if attention:
        return _stream_spectra(model, x, attention)
    layers, left_out = [], []
    highs: dict[tuple, float] = {}  # a layer's input is mostly the previous layer's output, the same memory
    for record in trace.run(model, x):
        if record.output.dim() != 4:
            continue  # not a map (a flattened vector, logits)
        if not _square(record.output) or record.input is None or record.input.dim() != 4:
            left_out.append(record.name)
            continue
        before = highs.get(_identity(record.input))
        if before is None:
            before = float(relative_log_amplitude(record.input[0])[-1]) if _square(record.input) else math.nan
        layers.append(_spectrum(record.name, record.kind, record.output[0], before))
        highs[_identity(record.output)] = layers[-1].high
    return NetworkSpectra(tuple(layers), tuple(left_out))


def _stream_spectra(model: nn.Module, x: Tensor, attention: list[str]) -> NetworkSpectra:
    """The residual stream of a ViT: entering the first block, after each attention, after each block."""
    blocks: dict[str, tuple[str, str]] = {}  # block name -> (its attention, the norm after it); one per block
    for name in attention:
        block, norm = _block_of(model, name)
        blocks.setdefault(block, (name, norm))
    t = trace.run(model, x, names=[n for block, (_, norm) in blocks.items() for n in (block, norm)])
    first = next(iter(blocks))
    # Tokens are (B, T, D), or (T, B, D) around a sequence-first nn.MultiheadAttention (torch's default layout)
    attn = model.get_submodule(attention[0])
    tokens_axis = 0 if isinstance(attn, nn.MultiheadAttention) and not attn.batch_first else 1
    grid = patch_grid(t[first].input.shape[tokens_axis], tuple(x.shape[-2:]))
    stream = [("embedding", f"input of {first}", t[first].input)]
    for block, (attn_name, norm) in blocks.items():
        stream += [("attention", attn_name, t[norm].input), ("mlp", f"output of {block}", t[block].output)]
    maps = [(kind, name, token_map(tokens.select(1 - tokens_axis, 0), grid))  # (D, rows, cols): batch item 0
            for kind, name, tokens in stream]
    if not _square(maps[0][2]):
        return NetworkSpectra((), tuple(name for _, name, _ in maps))
    layers, before = [], math.nan
    for kind, name, fmap in maps:
        layers.append(_spectrum(name, kind, fmap, before))
        before = layers[-1].high  # the stream is each layer's input and the next one's output
    return NetworkSpectra(tuple(layers), ())


def _block_of(model: nn.Module, attention: str) -> tuple[str, str]:
    """(the block holding the attention module `attention`, the norm after its attention): its nearest ancestor with
    one of POST_ATTENTION_NORMS as a child."""
    parts = attention.split(".")
    for end in range(len(parts) - 1, 0, -1):
        path = ".".join(parts[:end])
        block = model.get_submodule(path)
        norm = next((n for n in POST_ATTENTION_NORMS if isinstance(getattr(block, n, None), nn.Module)), None)
        if norm is not None:
            return path, f"{path}.{norm}"
    raise InputError(f"{attention} lies in no pre-norm block with a norm named {', '.join(POST_ATTENTION_NORMS)} "
                     "after its attention, so the residual stream between attention and MLP cannot be read.")


def _identity(t: Tensor) -> tuple:
    """Where a tensor's values live: equal for two views of the same memory (valid while both are alive)."""
    return t.data_ptr(), t.shape, t.stride(), t.dtype


def _square(t: Tensor) -> bool:
    return t.shape[-1] == t.shape[-2] >= 2


def _spectrum(name: str, kind: str, fmap: Tensor, high_before: float) -> LayerSpectrum:
    delta = relative_log_amplitude(fmap)
    return LayerSpectrum(name, kind, fmap.shape[-1], diagonal_frequencies(fmap.shape[-1]), delta, high_before)


@dataclass(frozen=True)
class Comparison:
    """network_spectra of several models on one input: the session's model first."""

    spectra: tuple[tuple[str, NetworkSpectra], ...]  # (model name, its spectra)
    refused: tuple[tuple[str, str], ...]             # (model name, why it could not be measured)


def compared_models(current: str) -> tuple[str, ...]:
    """The session's model, then each model of COMPARED that is on this machine."""
    return (current,) + tuple(n for n in COMPARED if n != current and zoo.is_available(n))


def comparison(current: zoo.ZooModel, x: Tensor, source: object) -> Comparison:
    """network_spectra of `current` on its input x, and of the other compared models on the same `source` (the
    user's image, preprocessed for each model). Each is kept for every session of the process (shared_results)."""
    spectra, refused = [], []
    for name in compared_models(current.name):
        try:
            model = current if name == current.name else zoo.load(name)
            model_input = x if model is current else model.preprocess(source)
            # a class asks for the same gallery digits: one computation per (model, input) for every session
            spectra.append((name, RESULTS.get(("network spectra", model_token(model), input_digest(model_input)),
                                              partial(network_spectra, model.module, model_input))))
        except InputError as e:
            refused.append((name, str(e)))
    return Comparison(tuple(spectra), tuple(refused))

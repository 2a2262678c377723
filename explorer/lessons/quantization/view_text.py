"""The quantization lesson's words: numbers as the lesson writes them, the arithmetic of one layer, the real-int8
table and the guided tour. Text only: the numbers come from math.py (math.Explained), int8.py and core/evaluate.py
(the 95 % Wilson interval of an accuracy or agreement on n images, the spread of repeated timings)."""

from __future__ import annotations

import torch

from explorer.core import evaluate
from explorer.lessons import plots
from explorer.lessons.quantization import int8
from explorer.lessons.quantization import math as qm
from explorer.session.narrative import Step

EXAMPLES = 6  # weights written out in the arithmetic table


def num(x: float) -> str:
    """4 significant digits (integers exactly), with a real minus sign."""
    return (f"{x:,}" if isinstance(x, int) else f"{x:.4g}").replace("-", "−")


def db(v: float) -> str:
    return "∞ dB (unchanged)" if v == float("inf") else f"{v:.1f} dB"


def short(label: str) -> str:
    return label if len(label) <= 14 else label[:13] + "…"


def acts(act_bits: int | None) -> str:
    return "float activations" if act_bits is None else f"{act_bits}-bit activations"


def grid_name(setting: qm.Setting) -> str:
    if setting.format == "binary":
        return "two binary levels ±α"
    return f"{2 ** setting.weight_bits}-mark {setting.scheme} grid ({setting.granularity})"


def _range_text(setting: qm.Setting, lo: float, hi: float) -> str:
    rule = {"min-max": "the smallest and largest weight",
            "percentile": f"the {100 - qm.PERCENTILE:.1f} and {qm.PERCENTILE} percentiles (the rest is clipped)",
            "mse": "the range with the smallest mean squared error (searched)"}[setting.clip]
    return f"**Range** [lo, hi] = [{num(lo)}, {num(hi)}]: {rule}, widened to contain 0 so that 0 stays exact."


def _scale_text(setting: qm.Setting, lo: float, hi: float, scale: float, zero: int, qmin: int, qmax: int) -> str:
    codes = (f"{setting.weight_bits}-bit codes run from qmin = {num(qmin)} to qmax = {num(qmax)} "
             f"({qmax - qmin + 1} marks).")
    if setting.scheme == "symmetric":
        return (f"{codes} **Scale** s = max(|lo|, |hi|) / qmax = {num(max(-lo, hi))} / {qmax} = **{num(scale)}**; "
                f"**zero point** z = **0**.")
    return (f"{codes} **Scale** s = (hi − lo) / (qmax − qmin) = {num(hi - lo)} / {qmax - qmin} = **{num(scale)}**; "
            f"**zero point** z = qmin − round(lo / s) = {num(qmin)} − round({num(lo / scale)}) = **{num(zero)}**.")


def _end_to_end(s: qm.SpelledOut, zero: int, qmin: int, qmax: int) -> str:
    clamp = f", clamped to [{num(qmin)}, {num(qmax)}]" if s.code != s.rounded + zero else ""
    return (f"x = {num(s.value)} → x / s = {num(s.ratio)} → round = {num(s.rounded)} → + z ({num(zero)}){clamp} → "
            f"code **{num(s.code)}** → (q − z) · s = **{num(s.dequantized)}**; error {num(s.error)}.")


MEASURING = "◔ measuring …"
INT8_INTRO = ("Everything above is simulated: rounded values kept as float32. The button exports this model to "
              "ONNX and lets onnxruntime quantize it for real: int8 weights per output channel, int8 activations "
              "with ranges calibrated on example images (static, QDQ format). Then both files are measured.")


def arithmetic(e: qm.Explained, layer_input: torch.Tensor) -> str:
    """The arithmetic of e.layer, output channel e.channel: range, scale and zero point, the largest weights through
    the quantizer, one weight and one activation (of `layer_input`, the layer's float input) end to end."""
    setting, weight, qt, c = e.setting, e.weight, e.quantized, e.channel
    channel_weights = weight[c].ravel()
    rows = qm.largest(channel_weights, EXAMPLES)  # the largest: clipping shows
    per_channel = qt.axis is not None
    scale = float(qt.scale[c] if per_channel else qt.scale)
    zero = int(qt.zero_point[c] if per_channel else qt.zero_point)
    lo = float(qt.lo[c] if per_channel else qt.lo)
    hi = float(qt.hi[c] if per_channel else qt.hi)
    lines = [f"### The arithmetic of `{e.layer}` (output channel {c} of {weight.shape[0]})"]
    if setting.format == "binary":
        lines.append(f"**Binary (XNOR-Net):** every weight becomes its sign times one scale per output channel, "
                     f"α = mean |w| = **{num(scale)}**. Codes are −1 and +1: one bit each.")
    else:
        outside = int(qm.clipped(weight, qt).sum())
        lines.append(_range_text(setting, lo, hi) + f" **{outside:,}** of the layer's {weight.numel():,} weights "
                     f"({outside / weight.numel():.1%}) lie outside their range and are clamped to the end codes.")
        lines.append(_scale_text(setting, lo, hi, scale, zero, qt.qmin, qt.qmax))
    table = [f"The {EXAMPLES} largest weights of this channel (the first to be clipped):",
             "| weight w | w / s | code q | ŵ = (q − z) · s | error ŵ − w |", "|---:|---:|---:|---:|---:|"]
    for i in rows:
        w = float(channel_weights[i])
        deq = float(qt.dequantized[c].ravel()[i])
        table.append(f"| {num(w)} | {num(w / scale)} | {num(int(qt.q[c].ravel()[i]))} | {num(deq)} | {num(deq - w)} |")
    lines.append("\n".join(table))
    if setting.format != "binary":
        example = qm.spell_out(float(channel_weights[rows[-1]]), scale, zero, qt.qmin, qt.qmax)
        lines.append("**One weight, end to end:** " + _end_to_end(example, zero, qt.qmin, qt.qmax))
    lines.append(_activation(e, layer_input))
    lines.append(f"Weight SQNR of this layer: **{db(e.weight_sqnr)}** "
                 f"(signal power over error power; each extra bit adds about 6 dB).")
    return "\n\n".join(lines)


def _activation(e: qm.Explained, layer_input: torch.Tensor) -> str:
    act = e.act
    if act is None:
        return ("**One activation:** activations stay float32. Choose activation bits to see the input of this "
                "layer quantized too.")
    steps_ = qm.spell_out(qm.typical_value(layer_input), float(act.scale), int(act.zero_point), act.qmin, act.qmax)
    return (f"**One activation, end to end** (a typical input value of this layer on your input; the range "
            f"was calibrated on {len(e.calibration):,} images, s = {num(float(act.scale))}, "
            f"z = {num(int(act.zero_point))}): " + _end_to_end(steps_, int(act.zero_point), act.qmin, act.qmax))


def summary(e: qm.Explained, description: str, labels: tuple[str, ...], float_probs: torch.Tensor) -> str:
    """The setting, both models' answers on the input, and the model's size."""
    fp, qp = float_probs, e.probs
    f_label, q_label = labels[int(fp.argmax())], labels[int(qp.argmax())]
    same = "the same answer" if f_label == q_label else "**a different answer**"
    ratio = e.size_float / e.size_quant
    return (f"**{e.setting.describe()}.** On {description}: float32 says **{f_label}** ({float(fp.max()):.1%}), "
            f"quantized says **{q_label}** ({float(qp.max()):.1%}), {same}. Model size: "
            f"{plots.format_bytes(e.size_float)} as float32 → **{plots.format_bytes(e.size_quant)}** "
            f"({ratio:.1f}× smaller).")


def accuracy(what: str, dataset: str, n: int, base: float | None, quant: float | None) -> str:
    """Float32 and quantized accuracy (or agreement) on n images as far as measured, each with its 95 % interval; a
    placeholder for the rest."""
    shown = [f"**{what.capitalize()}** on {dataset}:",
             f"float32 **{base:.2%}** ({evaluate.interval_text(base, n)})," if base is not None
             else "float32 " + MEASURING,
             f"quantized **{quant:.2%}** ({evaluate.interval_text(quant, n)})" if quant is not None
             else "quantized " + MEASURING]
    if base is not None and quant is not None:
        drop = 100 * (base - quant)
        shown.append(f"({drop:.2f} points lost)." if drop >= 0 else
                     f"({-drop:.2f} points gained, by luck of rounding).")
    if what == "agreement":
        shown.append("Agreement: how often the quantized model's top class is the float32 model's.")
    return " ".join(shown)


def progress(done: int, total: int, dataset: str, base: qm.Setting) -> str:
    """Where the measuring of the curves stands."""
    if done == total:
        return f"{total} settings, each measured on {dataset}; clipping {base.clip}, {acts(base.act_bits)}."
    return (f"◔ Measuring the curves on {dataset}: {done} of {total} settings done (clipping {base.clip}, "
            f"{acts(base.act_bits)}) …")


def timing(t: evaluate.Timing) -> str:
    """A median with its interquartile range."""
    q1, q3 = t.quartiles
    return f"{t.median:.1f} ms (middle half {q1:.1f}–{q3:.1f})"


def int8_table(float_bytes: int, int8_bytes: int, measured: int8.Int8Measurement, meaning: str) -> str:
    """The real int8 model against the float32 one: file sizes, latency and accuracy (or agreement), each measured
    number with its spread: latencies with their interquartile range, accuracies with their 95 % interval."""
    size_ratio = float_bytes / int8_bytes
    drop = 100 * (measured.float_top1 - measured.int8_top1)
    if measured.float_time.overlaps(measured.int8_time):
        speed = "no measurable difference"
    else:
        speed = f"{measured.speedup:.2f}× {'faster' if measured.speedup >= 1 else 'slower'}"
    runs = len(measured.float_time.times_ms)
    return (f"| | float32 ONNX | int8 ONNX | |\n|---|---:|---:|---|\n"
            f"| file size | {plots.format_bytes(float_bytes)} | {plots.format_bytes(int8_bytes)} | "
            f"{size_ratio:.2f}× smaller |\n"
            f"| latency, {measured.batch} images (median of {runs}) | {timing(measured.float_time)} | "
            f"{timing(measured.int8_time)} | {speed} |\n"
            f"| {meaning} on {measured.dataset} | {measured.float_top1:.2%} | {measured.int8_top1:.2%} | "
            f"{drop:.2f} points {'lost' if drop >= 0 else 'gained'} |\n\n"
            f"95 % intervals of the {meaning}: float32 {evaluate.interval_text(measured.float_top1, measured.n)}; "
            f"int8 {evaluate.interval_text(measured.int8_top1, measured.n)}.\n\n"
            "Both files are ONNX graphs written the same way (short tensor names, no shape annotations), so their "
            "sizes are mostly the weights: four bytes per float32 weight, one per int8 weight (plus their scales). "
            "Latency is measured on this server's CPU with onnxruntime, the same number of threads for both, the two "
            f"files run alternately {runs} times each after a warm-up; where the middle halves of their timings "
            "overlap, the difference is within the machine's noise.")


def steps() -> tuple[Step, ...]:
    """The guided tour: each step sets the lesson's controls."""
    return (
        Step("A ruler with 256 marks",
             "8 bits give 256 integer codes, −128 to 127. One number, the **scale** s, says how far apart the marks "
             "are: every weight is rounded to the nearest mark. The histogram shows the weights in grey, the marks "
             "as thin lines and what the weights became in blue. At 8 bits the blue sits right on the grey, and the "
             "prediction does not move.",
             {"bits": 8, "granularity": "per-tensor", "scheme": "symmetric", "clip": "min-max", "act_bits": 0},
             section="quantization-summary"),
        Step("Where to put the ends",
             "With only 16 marks (4 bits), where the ruler ends matters. **min-max** covers every weight but spaces "
             "the marks widely; **percentile** ignores the most extreme 0.1 % and clips them (red dashed lines); "
             "**mse** searches for the range with the smallest error. Compare the weight SQNR under the table.",
             {"bits": 4, "granularity": "per-tensor", "clip": "percentile"}, section="quantization-summary"),
        Step("One scale per channel",
             "Output channels can have very different ranges. One scale for the whole tensor must fit the widest, "
             "so small channels get only a few marks. **Per-channel** gives each output channel its own scale, at "
             "little cost in size. With the **symmetric** grid set here, compare its two curves below, orange "
             "(per-tensor) and blue (per-channel): on the digit models per-tensor falls behind at 4 bits and by "
             "more than a point at 3. The **affine** pair (pink and green) stays closer together at 3 bits: how "
             "much per-channel buys depends on the scheme.",
             {"bits": 4, "granularity": "per-channel", "scheme": "symmetric", "clip": "min-max"},
             section="quantization-curves"),
        Step("The cliff below 4 bits",
             "Down to 4 bits the accuracy barely moves; at 3 and 2 it falls off a cliff, on the digit models most "
             "steeply per-tensor with either scheme, and symmetric per-tensor (orange) most of all. Each bit less "
             "doubles the step and costs about 6 dB of SQNR (the bars per layer).",
             {"bits": 2, "granularity": "per-tensor", "clip": "min-max"}, section="quantization-curves"),
        Step("Binary and ternary",
             "One bit: only the sign survives, times one scale per output channel, the mean |w| (XNOR-Net). The "
             "black dots on the curve are binary (1 bit) and ternary {−1, 0, +1} (1.58 bits, BitNet b1.58). "
             "Without retraining, the network does not survive: those papers train with the rounding in place.",
             {"bits": 1}, section="quantization-curves"),
        Step("Activations too",
             "Real integer arithmetic needs integer inputs as well. Activations after ReLU are never negative, so a "
             "**symmetric** grid wastes half its codes; **affine** shifts the grid with the zero point z. Ranges "
             "come from calibration images. Try 4 activation bits.",
             {"bits": 8, "granularity": "per-channel", "scheme": "affine", "act_bits": 8, "clip": "min-max"},
             section="quantization-arithmetic"),
        Step("Real integers",
             "Everything above is simulated: rounded values stored as floats. Press **Build real int8** at the "
             "bottom: the same network is exported to ONNX and quantized by onnxruntime to real int8 (per-channel "
             "weights, calibrated activations): a file about 4× smaller, with its measured speed and accuracy.",
             {"bits": 8, "granularity": "per-channel", "scheme": "symmetric", "act_bits": 8},
             section="quantization-int8"),
    )

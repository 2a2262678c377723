"""The normalization lesson: which values share one mean and variance, and what a norm layer does to yours.

Parts, top to bottom: the N × C × (H·W) picture of the activation (tokens × features for a ViT) with the
values that share the selected value's statistics highlighted; the live statistics of one norm layer of
the model on the student's input (per channel or token, before / normalized / after γ, β, histograms,
running versus batch statistics); the batch-size experiment (BatchNorm with the statistics of a batch of
MNIST digits, the student's first, against eval mode and against LayerNorm/GroupNorm); what the other
kinds would make of the same activations; folding BatchNorm into the convolution before it; |γ| of every
norm layer with the switched-off channels.

Performance (a new Bokeh model costs far more to send and lay out than new data in one already on the
page; docs/performance.md): every figure and source is built once in __init__; a change updates
source data and model properties inside one one_update(), and only the parts whose inputs changed.
"""

from __future__ import annotations

import numpy as np
import panel as pn
import param
import torch
from bokeh.models import ColumnDataSource, HoverTool, Legend, LegendItem, Range1d
from bokeh.plotting import figure

from explorer.core import data
from explorer.core.trace import LayerRecord
from explorer.errors import InputError
from explorer.lessons import plots
from explorer.lessons.normalization import math as nm
from explorer.session.narrative import Narrative, Step
from explorer.session.state import Inference, SessionView, follows, one_update
from explorer.session.tags import tag_results

KIND_LABELS = {label: kind for kind, label in nm.KINDS.items()}  # "BatchNorm" -> "batch", for the buttons
SHOW_SAMPLES, SHOW_ROWS, SHOW_COLS, CELL = 4, 16, 16, 11  # axes picture: samples, channels, positions, px
TILE, TILE_GAP = 92, 16                                   # image tiles: side and gap (px)
FOLD_INPUTS = 4                                           # input channels of a kernel shown before/after folding
HIGHLIGHT, HIGHLIGHT_SELF, OTHER = "#E69F00", "#9a3412", "#e2e8f0"
SERIES = {"image": ("#0072B2", "your input alone"), "batch": ("#D55E00", "the batch (train mode)"),
          "running": ("#000000", "running statistics (eval mode)")}
CURVES = {"batch": "#D55E00", "layer": "#0072B2", "group": "#009E73"}
OFF_COLOUR, ON_COLOUR = "#D55E00", "#56B4E9"


def _source(*columns: str, name: str | None = None) -> ColumnDataSource:
    return ColumnDataSource(data={c: [] for c in columns}, name=name)


def _figure(title: str, width: int, height: int, **kwargs) -> figure:
    fig = figure(title=title, width=width, height=height, tools="", toolbar_location=None, **kwargs)
    fig.title.text_font_size = "13px"
    return fig


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def norm_layers(inference: Inference) -> list[LayerRecord]:
    """The trace records of the model's norm layers that normalize (N, C, ...) maps or (N, T, D) tokens."""
    return [r for r in inference.trace.records if r.kind == "norm" and r.input is not None and r.input.dim() >= 3]


class NormalizationLesson(SessionView):
    """Which values share a mean and variance, live statistics, batch size, train vs eval, folding, γ."""

    layer = param.Selector(default=None, objects=[], doc="Trace name of the norm layer looked at.")
    kind = param.Selector(default="batch", objects=list(nm.KINDS), doc="The normalization drawn and compared.")
    groups = param.Selector(default=4, objects=[1, 2, 4], doc="GroupNorm's number of groups (divides the channels).")
    batch = param.Selector(default=8, objects=list(nm.BATCH_SIZES), doc="Images per batch for BatchNorm's statistics.")

    def __init__(self, model: str | None = None, **params):
        super().__init__(model=model, **params)
        self._shown: dict[str, object] = {}
        self._cache: dict[tuple, object] = {}  # derived data of the current input, see _cached
        self._cache_for: Inference | None = None
        self._private: tuple[object, torch.nn.Module] | None = None  # (zoo model, its batch-statistics copy)
        self._pool: tuple[object, dict[str, nm.PoolSums]] | None = None  # (zoo model, running sums per layer)
        self._build_axes()
        self._build_stats()
        self._build_maps()
        self._build_hist()
        self._build_batch()
        self._build_whatif()
        self._build_fold()
        self._build_gamma()
        self._texts = {part: pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10),
                                              css_classes=[f"normalization-{part}"])
                       for part in ("axes", "stats", "batch", "prediction", "whatif", "fold", "gamma")}
        self._texts["axes"].object = "*Computing the statistics of your input…*"
        self._error = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self._layer_input = pn.widgets.Select.from_param(self.param.layer, name="Norm layer", width=200)
        self._kind_input = pn.widgets.RadioButtonGroup.from_param(self.param.kind, options=KIND_LABELS, name="Kind")
        self._groups_input = pn.widgets.Select.from_param(self.param.groups, name="Groups (GroupNorm)", width=140)
        self._batch_input = pn.widgets.RadioButtonGroup.from_param(self.param.batch, name="Batch size")
        self._channel_input = pn.widgets.IntInput.from_param(self.state.param.channel, name="Channel", width=100)
        self._narrative = Narrative(STEPS, self, title="Guided tour: normalization")
        self._layout = self._build_layout()
        # Served, the numbers are computed once the page has loaded, so that it opens quickly; elsewhere now.
        pn.state.onload(self._model_changed)

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    # --- what the controls drive ---

    @follows("state.inference")
    def _model_changed(self) -> None:
        records = norm_layers(self.state.inference)
        names = [r.name for r in records]
        with one_update():
            self.param.layer.objects = names
            if self.state.layer in names:
                wanted = self.state.layer
            else:
                wanted = self.layer if self.layer in names else (names[0] if names else None)
            if self.layer != wanted:
                self.layer = wanted  # its watcher redraws
            else:
                self._layer_changed()

    @follows("state.layer")
    def _follow_state_layer(self) -> None:
        if self.state.layer in self.param.layer.objects:
            self.layer = self.state.layer

    @param.depends("layer", watch=True)
    def _layer_changed(self) -> None:
        record = self._record()
        channels = 0 if record is None else record.input.shape[self._channel_dim(record)]
        with one_update():
            divisors = nm.divisors_of(channels) if channels else [1]
            self.param.groups.objects = divisors
            if self.groups not in divisors:
                self.groups = min(divisors, key=lambda g: abs(g - 4))  # 4 groups where possible: a clear picture
            if self.state.channel >= max(channels, 1):
                self.state.channel = 0
            tokens = record is not None and self._layout_of(record) == "tokens"
            self._channel_input.param.update(end=max(channels - 1, 0), name="Feature" if tokens else "Channel")
            self._update()

    @follows("kind", "groups", "batch", "state.channel")
    def _update(self) -> None:
        if not self.param.layer.objects and self.state.inference is not None and norm_layers(self.state.inference):
            return  # not started yet: _model_changed runs once the page has loaded
        with one_update():
            try:
                self._error.visible = False
                self._show_all()
            except InputError as e:
                self._error.param.update(object=str(e), visible=True, tags=plots.model_tag(self._model_name()))

    # --- the data behind the parts (cached by every input they depend on) ---

    def _model_name(self) -> str:
        return self.state.inference.model.name

    def _record(self) -> LayerRecord | None:
        t = self.state.inference.trace
        return t[self.layer] if self.layer in t.names else None

    @staticmethod
    def _layout_of(record: LayerRecord) -> str:
        return "tokens" if record.input.dim() == 3 else "channels"

    def _channel_dim(self, record: LayerRecord) -> int:
        return record.input.dim() - 1 if self._layout_of(record) == "tokens" else 1

    def _module(self) -> torch.nn.Module:
        return self.state.inference.model.module.get_submodule(self.layer)

    def _batchable(self) -> bool:
        """Batches are drawn from the MNIST sample: only for models that take MNIST digits."""
        return self.state.inference.model.card.preprocess == "mnist"

    def _size(self) -> int:
        return self.batch if self._batchable() else 1

    def _cached(self, key: tuple, compute, per_layer: bool = True):
        """compute(), kept until the input changes; keyed by the layer too unless per_layer is False."""
        if self._cache_for is not self.state.inference:  # a new input or model: nothing old is needed
            self._cache_for = self.state.inference
            self._cache.clear()
        key = ((self.layer,) if per_layer else ()) + key
        if key not in self._cache:
            if len(self._cache) > 256:  # bounded: the oldest layers and settings go first
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = compute()
        return self._cache[key]

    def _pool_sums(self) -> nm.PoolSums:
        """The running sums of the MNIST sample's activations at this layer's input (the batch after the student's
        image). They do not depend on the input: computed once per model and session, every norm layer in one
        forward, so a new input or batch size costs no pass over the batch."""
        inference = self.state.inference
        if self._pool is None or self._pool[0] is not inference.model:
            names = self.param.layer.objects
            if self._batchable():
                card = inference.model.card
                pool = data.eval_set("sample", card.mean, card.std).inputs[:max(nm.BATCH_SIZES) - 1]
                t = inference.model.trace(pool, names=names)
                sums = {name: nm.pool_sums(t[name].input, self._layout_of(t[name])) for name in names}
            else:  # batches of one: the student's image alone
                sums = {name: nm.pool_sums(inference.trace[name].input[:0], self._layout_of(inference.trace[name]))
                        for name in names}
            self._pool = (inference.model, sums)
        return self._pool[1][self.layer]

    def _batch_stats(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """BatchNorm's (mean, variance) for a batch of `size`: the student's image first."""
        return self._cached(("batch stats", size), lambda: nm.batch_statistics(self._record().input,
                                                                               self._pool_sums(), size))

    def _first_output(self, kind: str, size: int) -> torch.Tensor:
        record = self._record()
        gamma, beta = record.params.get("weight"), record.params.get("bias")
        groups = self.groups if kind == "group" else None
        if kind == "batch":  # the only kind whose output depends on the other samples
            return self._cached(("output", kind, size), lambda: nm.batch_first_output(
                record.input, self._pool_sums(), size, gamma, beta, self._module().eps))
        return self._cached(("output", kind, groups), lambda: nm.first_output(
            kind, record.input[:1], gamma, beta, groups, self._module().eps, self._layout_of(record)))

    def _difference(self, kind: str, size: int) -> float:
        """Mean |difference| between the student's output under `kind` and the model's own (eval mode)."""
        groups = self.groups if kind == "group" else None
        return self._cached(("difference", kind, groups, size if kind == "batch" else None),
                            lambda: nm.mean_abs_difference(self._first_output(kind, size), self._record().output[0]))

    def _batch_probabilities(self, size: int) -> torch.Tensor | None:
        """The student's class probabilities with every BatchNorm using the batch's statistics (None: no BN)."""
        model = self.state.inference.model
        if not self._batchable() or not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                                            for m in model.module.modules()):
            return None
        if self._private is None or self._private[0] is not model:
            self._private = (model, nm.batch_statistics_copy(model.module))  # once per model and session
        card, private = model.card, self._private[1]

        def compute() -> torch.Tensor:
            pool = data.eval_set("sample", card.mean, card.std).inputs
            return nm.first_probabilities(private, nm.make_batch(self.state.inference.x, pool, size))
        return self._cached(("probs", size), compute, per_layer=False)

    # --- drawing ---

    def _show_all(self) -> None:
        record = self._record()
        if record is None:  # nothing of the previous model's layers stays
            self._shown.clear()
            for part in self._texts.values():
                part.object = ""
            self._texts["axes"].object = "This model has no normalization layer that works on feature maps or tokens."
            sources = [self._axes_source, self._axes_label_source, self._stats_source, self._maps_source,
                       self._hist_source, self._batch_source, self._batch_now_source, self._whatif_source,
                       self._fold_source, self._bias_source, self._gamma_source]
            for source in sources:
                source.data = {k: [] for k in source.data}
            tag_results(self._model_name(), *sources, *self._texts.values(), self._axes_fig, *self._stats_figs,
                        self._maps_fig, self._hist_fig, self._batch_fig, self._whatif_fig, self._fold_fig,
                        self._bias_fig, self._gamma_fig)
            return
        is_bn = isinstance(self._module(), torch.nn.modules.batchnorm._BatchNorm)
        self._batch_input.disabled = not self._batchable()
        key = (self.state.inference, self.layer)
        if self._changed("axes", key + (self.kind, self.groups, self._size(), self.state.channel)):
            self._show_axes(record)
        if self._changed("stats", key + (self._size(), self.state.channel)):
            self._show_stats(record)
        if self._changed("hist", key):
            self._show_hist(record)
        if self._changed("batch", key + (self.groups, self._size())):
            self._show_batch(record, is_bn)
        if self._changed("whatif", key + (self.kind, self.groups, self._size(), self.state.channel)):
            self._show_whatif(record)
        if self._changed("fold", key + (self.state.channel,)):
            self._show_fold(record, is_bn)
        if self._changed("gamma", (self.state.inference.model,)):
            self._show_gamma()

    def _changed(self, part: str, key: tuple) -> bool:
        if self._shown.get(part) == key:
            return False
        self._shown[part] = key
        return True

    def _show_axes(self, record: LayerRecord) -> None:
        layout = self._layout_of(record)
        x = record.input
        size = self._size()
        channels = x.shape[self._channel_dim(record)]
        positions = x.shape[1] if layout == "tokens" else int(np.prod(x.shape[2:]))
        shape = (size, positions, channels) if layout == "tokens" else (size, channels, positions)
        c = self.state.channel
        index = (0, 0, c) if layout == "tokens" else (0, c, 0)
        box = nm.shared_with(self.kind, shape, index, self.groups, layout)
        chan_box, pos_box = (box[2], box[1]) if layout == "tokens" else (box[1], box[2])
        first_row = c // SHOW_ROWS * SHOW_ROWS  # the window of channels that holds the selected one
        rows = range(first_row, min(channels, first_row + SHOW_ROWS))
        cols = range(min(positions, SHOW_COLS))
        samples = range(min(size, SHOW_SAMPLES))
        block = (len(cols) + 2) * CELL
        cells: dict[str, list] = {k: [] for k in self._axes_source.data}
        for n in samples:
            for i, ch in enumerate(rows):
                for j in cols:
                    shared = n in box[0] and ch in chan_box and j in pos_box
                    mine = (n, ch, j) == (0, c, 0)
                    cells["x"].append(n * block + (j + 0.5) * CELL)
                    cells["y"].append((i + 0.5) * CELL)
                    cells["colour"].append(HIGHLIGHT_SELF if mine else HIGHLIGHT if shared else OTHER)
                    cells["sample"].append(n + 1)
                    cells["channel"].append(ch)
                    cells["position"].append(j)
        self._axes_source.data = cells
        noun, where = ("feature", "token") if layout == "tokens" else ("channel", "position")
        labels: dict[str, list] = {"x": [], "y": [], "text": []}
        for n in samples:
            labels["x"].append(n * block)
            labels["y"].append(len(rows) * CELL + 4)
            labels["text"].append("sample 1 (yours)" if n == 0 else f"sample {n + 1}")
        if size > len(samples):
            labels["x"].append(len(samples) * block - CELL)
            labels["y"].append(len(rows) * CELL / 2)
            labels["text"].append(f"… {size - len(samples)} more")
        self._axes_label_source.data = labels
        self._axes_fig.title.text = (f"{record.name}: {noun}s {rows.start}–{rows.stop - 1} of {channels} (rows) × "
                                     f"{where}s 0–{cols.stop - 1} of {positions} (columns)")
        shared_count = int(np.prod([len(r) for r in box]))
        stats = nm.count_statistics(self.kind, shape, self.groups, layout)
        per = {"batch": f"one per {noun}, shared by every sample of the batch and every {where}",
               "layer": (f"one per {where}, over its {channels} {noun}s" if layout == "tokens"
                         else "one per sample, over all its channels and positions"),
               "group": f"one per {'token' if layout == 'tokens' else 'sample'} and group of "
                        f"{channels // self.groups} {noun}s ({self.groups} groups)",
               "instance": f"one per sample and {noun}, over the {where}s",
               "rms": (f"like LayerNorm ({'per token' if layout == 'tokens' else 'per sample'}) but only rescaled: "
                       "the mean is not subtracted")}[self.kind]
        self._texts["axes"].object = (
            f"**{nm.KINDS[self.kind]}**: {per}. The dark cell is {noun} {c} at {where} 0 of your input; the "
            f"{shared_count:,} highlighted values (the picture shows only some of them) share its mean and variance. "
            f"For a batch of {size}, this layer's input ({plots.format_shape((size, *x.shape[1:]))}) gets {stats:,} "
            f"separate means and variances.")
        tag_results(self._model_name(), self._axes_source, self._axes_label_source, self._axes_fig, self._texts["axes"])

    def _model_normalization(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """What the model's layer computes on the student's input: normalized, after γ and β, and how far that
        is from the recorded output (a check that these are the layer's own numbers)."""
        def compute() -> tuple[torch.Tensor, torch.Tensor, float]:
            record, module = self._record(), self._module()
            layout, x = self._layout_of(record), record.input
            if "running_mean" in record.buffers:  # BatchNorm in eval mode
                normalized = nm.with_running_stats(x, record.buffers["running_mean"], record.buffers["running_var"],
                                                   module.eps)
            else:
                kind = {torch.nn.GroupNorm: "group", torch.nn.RMSNorm: "rms"}.get(type(module), "layer")
                if layout == "channels" and kind == "layer":
                    kind = "instance"  # a BatchNorm without running statistics or an InstanceNorm, on one image
                normalized = nm.normalize(kind, x, getattr(module, "num_groups", None), module.eps or nm.EPS,
                                          layout).normalized
            after = nm.affine(normalized, record.params.get("weight"), record.params.get("bias"), layout)
            return normalized, after, nm.max_abs_difference(after, record.output)
        return self._cached(("model normalization",), compute)

    def _show_stats(self, record: LayerRecord) -> None:
        layout, size = self._layout_of(record), self._size()
        x = record.input
        eps = self._module().eps or nm.EPS
        xs = np.arange(x.shape[1])
        nan = np.full(len(xs), np.nan)
        if layout == "tokens":  # LayerNorm: per token, over the features
            own = self._cached(("token stats",), lambda: nm.normalize("layer", x, eps=eps, layout="tokens"))
            image_mean, image_var = _numpy(own.mean[0, :, 0]), _numpy(own.var[0, :, 0])
            columns = dict(x=xs, image_mean=image_mean, image_var=image_var, batch_mean=nan, batch_var=nan,
                           running_mean=nan, running_var=nan)
            self._stats_figs[0].xaxis.axis_label = self._stats_figs[1].xaxis.axis_label = "token (0: class token)"
            text = (f"LayerNorm takes one mean and variance per token, over its {x.shape[2]} features, so your input "
                    f"alone decides them: there are no running statistics and the batch does not matter. Token 0: "
                    f"mean {plots.format_value(image_mean[0])}, variance {plots.format_value(image_var[0])}.")
        else:
            own = self._cached(("image stats",), lambda: nm.normalize("instance", x, eps=eps))  # per channel, H×W
            batch_mean, batch_var = self._batch_stats(size)
            columns = dict(x=xs, image_mean=_numpy(own.mean.flatten()), image_var=_numpy(own.var.flatten()),
                           batch_mean=_numpy(batch_mean.flatten()), batch_var=_numpy(batch_var.flatten()))
            running = "running_mean" in record.buffers
            columns["running_mean"] = _numpy(record.buffers["running_mean"]) if running else nan
            columns["running_var"] = _numpy(record.buffers["running_var"]) if running else nan
            self._stats_figs[0].xaxis.axis_label = self._stats_figs[1].xaxis.axis_label = "channel"
            c = self.state.channel
            text = (f"Channel {c}: your image alone has mean {plots.format_value(columns['image_mean'][c])} and "
                    f"variance {plots.format_value(columns['image_var'][c])}; the batch of {size} has "
                    f"{plots.format_value(columns['batch_mean'][c])} and {plots.format_value(columns['batch_var'][c])}")
            running_text = (f"{plots.format_value(columns['running_mean'][c])} and "
                            f"{plots.format_value(columns['running_var'][c])}")
            text += f"; the running statistics (what eval mode divides by) are {running_text}." if running else "."
        self._stats_source.data = columns
        for series, parts in self._series_renderers.items():  # hide what does not apply (a ViT: no batch, no running)
            for part in parts:
                part.visible = bool(np.isfinite(columns[f"{series}_mean"]).any())
        for fig in self._stats_figs:
            fig.x_range.end = len(xs) - 0.5
        normalized, after, check = self._model_normalization()
        self._texts["stats"].object = text + (
            f" Check: normalizing with these statistics and applying γ, β reproduces the layer's output within "
            f"{plots.format_value(check)}.")
        tag_results(self._model_name(), self._stats_source, *self._stats_figs, self._texts["stats"])
        self._show_maps(record, normalized, after)

    def _show_maps(self, record: LayerRecord, normalized: torch.Tensor, after: torch.Tensor) -> None:
        layout, c = self._layout_of(record), self.state.channel
        pick = (lambda t: t[0].T) if layout == "tokens" else (lambda t: t[0, c].reshape(t.shape[2], -1))
        tiles = {"before": pick(record.input), "normalized": pick(normalized), "after γ, β": pick(after)}
        self._write_tiles(self._maps_source, tiles, self._maps_fig)
        what = "features × tokens" if layout == "tokens" else f"channel {c}"
        self._maps_fig.title.text = f"Your input at {record.name}, {what}"
        tag_results(self._model_name(), self._maps_source, self._maps_fig)

    def _write_tiles(self, source: ColumnDataSource, tiles: dict[str, torch.Tensor], fig: figure) -> None:
        cols: dict[str, list] = {k: [] for k in source.data}
        for i, (label, values) in enumerate(tiles.items()):
            v = plots.downsample(_numpy(values), TILE)
            dw, dh = _fit(*v.shape, TILE)
            left = i * (TILE + TILE_GAP)
            cols["image"].append(plots.to_rgba(v, True))
            cols["x"].append(left + (TILE - dw) / 2)
            cols["y"].append(18 + (TILE - dh) / 2)
            cols["dw"].append(dw)
            cols["dh"].append(dh)
            cols["cx"].append(left + TILE / 2)
            cols["label"].append(label)
            low, high = plots.format_value(float(values.min())), plots.format_value(float(values.max()))
            cols["range"].append(f"{low} … {high}")
        source.data = cols

    def _show_hist(self, record: LayerRecord) -> None:
        before, after = record.input, record.output
        edges = nm.common_edges(before, after)
        e = _numpy(edges)
        self._hist_source.data = dict(left=e[:-1], right=e[1:], before=nm.histogram(before, edges).numpy(),
                                      after=nm.histogram(after, edges).numpy())
        self._hist_fig.title.text = f"All {before.numel():,} values of your input at {record.name}"
        tag_results(self._model_name(), self._hist_source, self._hist_fig)

    def _show_batch(self, record: LayerRecord, is_bn: bool) -> None:
        reference = record.output[0]  # the model in eval mode: what it computes at test time
        layout = self._layout_of(record)
        sizes = nm.BATCH_SIZES if self._batchable() else (1,)
        curves = {k: [self._difference(k, s) for s in sizes] for k in CURVES}
        self._batch_source.data = dict(size=list(sizes), **curves)
        size = self._size()
        now = {k: self._difference(k, size) for k in CURVES}
        self._batch_now_source.data = dict(size=[size] * 3, value=[now[k] for k in CURVES],
                                           colour=list(CURVES.values()))
        top = max(max(v) for v in curves.values())
        self._batch_fig.y_range.end = top * 1.1 if top > 0 else 1
        tag_results(self._model_name(), self._batch_source, self._batch_now_source, self._batch_fig,
                    self._texts["batch"], self._texts["prediction"])  # both texts are written below
        if not self._batchable():
            self._shown.pop("prediction", None)
            self._texts["prediction"].object = ""
            self._texts["batch"].object = ("Batches are drawn from the MNIST sample, so this part works with the MNIST "
                                           "models only; with one image, BatchNorm's batch statistics are this image's "
                                           f"own (per channel over its positions). Mean |difference| from eval mode: "
                                           f"{plots.format_value(now['batch'])}.")
            return
        biggest = nm.max_abs_difference(self._first_output("batch", size), reference)
        if is_bn:
            text = (f"**Train vs eval at batch size {size}:** BatchNorm with the batch's statistics changes your "
                    f"output at {record.name} by {plots.format_value(now['batch'])} on average (largest "
                    f"{plots.format_value(biggest)}) against the model's eval-mode output. LayerNorm and GroupNorm "
                    f"({self.groups} groups) differ from it by the same amount for every batch size: "
                    f"{plots.format_value(now['layer'])} and {plots.format_value(now['group'])}.")
        else:
            text = (f"**Batch size {size}:** this layer is a {record.module_type}, which never looks at the other "
                    f"samples: the model's output is the same for every batch size (LayerNorm's curve: "
                    f"{plots.format_value(now['layer'])}, float rounding). A BatchNorm here, over the batch "
                    f"{'and the tokens ' if layout == 'tokens' else ''}of each feature, would change your output by "
                    f"{plots.format_value(now['batch'])} on average (largest {plots.format_value(biggest)}).")
        self._texts["batch"].object = text
        if self._changed("prediction", (self.state.inference, size)):  # not for a change of groups
            if ("probs", size) in self._cache:  # computed before: no need to wait
                self._show_prediction((self.state.inference, size))
            else:
                self._texts["prediction"].object = "*Running the whole network in train mode…*"
                self._soon(self._show_prediction, (self.state.inference, size))

    def _soon(self, callback, key: tuple) -> None:
        """Run callback(key) after this change has gone to the page (in a served session), else now."""
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            doc.add_next_tick_callback(lambda: callback(key))
        else:
            callback(key)

    def _show_prediction(self, key: tuple) -> None:
        """The slow part of a batch-size change: a forward pass of the whole batch through the network."""
        if key != (self.state.inference, self._size()):
            return  # the student moved on: drop this stale answer
        size = key[1]
        probs = self._batch_probabilities(size)
        labels, eval_probs = self.state.inference.model.labels, self.state.inference.probs
        top = int(eval_probs.argmax())
        with one_update():
            tag_results(self.state.inference.model.name, self._texts["prediction"])
            self._texts["prediction"].object = (
                "No BatchNorm in this network: its prediction does not depend on the batch." if probs is None else
                f"**Whole network, every BatchNorm in train mode, batch of {size}:** the model gives "
                f"**{labels[top]}** {float(probs[top]):.1%} (eval mode: {float(eval_probs[top]):.1%}); its top class "
                f"is **{labels[int(probs.argmax())]}** ({float(probs.max()):.1%}).")

    def _show_whatif(self, record: LayerRecord) -> None:
        layout, c, size = self._layout_of(record), self.state.channel, self._size()
        reference = record.output[0]
        pick = (lambda t: t.T) if layout == "tokens" else (lambda t: t[c].reshape(t.shape[1], -1))
        tiles = {"model (eval)": pick(reference)}
        rows = []
        for kind, label in nm.KINDS.items():
            out = self._first_output(kind, size)
            tiles[label] = pick(out)
            diff = self._difference(kind, size)
            mark = "**" if kind == self.kind else ""
            count = nm.count_statistics(kind, (size,) + tuple(record.input.shape[1:]), self.groups, layout)
            rows.append(f"| {mark}{label}{mark} | {count:,} | {plots.format_value(diff)} |")
        self._write_tiles(self._whatif_source, tiles, self._whatif_fig)
        what = "features × tokens" if layout == "tokens" else f"channel {c}"
        self._whatif_fig.title.text = f"Your input at {record.name} ({what}) normalized five ways, same γ and β"
        tag_results(self._model_name(), self._whatif_source, self._whatif_fig, self._texts["whatif"])
        self._texts["whatif"].object = (
            f"Each kind applied to the same activations (a batch of {size}, yours first), then the layer's own γ and "
            f"β. Statistics only: putting another kind into the trained model would need retraining, because the "
            f"layers after it learned to expect this layer's output.\n\n"
            "| kind | means and variances | mean \\|difference\\| from the model |\n|---|---:|---:|\n"
            + "\n".join(rows))

    def _show_fold(self, record: LayerRecord, is_bn: bool) -> None:
        conv_record = self._conv_before(record) if is_bn else None
        self._fold_fig.visible = self._bias_fig.visible = conv_record is not None
        tag_results(self._model_name(), self._fold_source, self._bias_source, self._fold_fig, self._bias_fig,
                    self._texts["fold"])
        if conv_record is None:
            self._fold_source.data = {k: [] for k in self._fold_source.data}
            self._bias_source.data = {k: [] for k in self._bias_source.data}
            self._texts["fold"].object = ("Only a BatchNorm in eval mode that follows a convolution can be folded: its "
                                          "statistics are fixed numbers. This layer is not one; LayerNorm's "
                                          "statistics come from each input, so it never folds.")
            return
        model = self.state.inference.model.module
        conv, bn = model.get_submodule(conv_record.name), self._module()
        folded, difference = self._cached(("folded",), lambda: self._fold(conv, bn, conv_record, record))
        c = self.state.channel
        before, after = conv.weight[c].cpu(), folded.weight[c].cpu()  # (C_in / groups, kh, kw)
        shown = min(before.shape[0], FOLD_INPUTS)
        tiles = {f"W[{c}, {i}]": before[i] for i in range(shown)}
        tiles.update({f"W′[{c}, {i}]": after[i] for i in range(shown)})
        self._write_tiles(self._fold_source, tiles, self._fold_fig)
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self._bias_source.data = dict(channel=np.arange(conv.out_channels), before=_numpy(bias),
                                      after=_numpy(folded.bias))
        self._bias_fig.x_range.end = conv.out_channels - 0.5
        scale = float(folded.weight[c].flatten()[0] / conv.weight[c].flatten()[0]) if float(
            conv.weight[c].flatten()[0]) else float("nan")
        self._texts["fold"].object = (
            f"**{conv_record.name} + {record.name} → one convolution.** Output channel {c}: every weight is multiplied "
            f"by γ/σ = {plots.format_value(scale)}; the bias becomes β + (b − μ)·γ/σ = "
            f"{plots.format_value(float(folded.bias[c]))}. The folded convolution on your input equals conv + "
            f"BatchNorm (eval mode) within a largest |difference| of "
            f"**{difference:.2e}**, with one layer fewer to run.")

    @staticmethod
    def _fold(conv: torch.nn.Conv2d, bn: torch.nn.Module, conv_record: LayerRecord,
              bn_record: LayerRecord) -> tuple[torch.nn.Conv2d, float]:
        """The folded convolution, and its largest |difference| from conv + BatchNorm on the student's input."""
        folded = nm.fold_bn(conv, bn)
        with torch.no_grad():
            out = folded(conv_record.input.to(folded.weight.device)).cpu()
        return folded, nm.max_abs_difference(out, bn_record.output)

    def _conv_before(self, record: LayerRecord) -> LayerRecord | None:
        records = self.state.inference.trace.records
        i = records.index(record)
        previous = records[i - 1] if i > 0 else None
        if (previous is not None and previous.module_type == "Conv2d"
                and previous.output_shape == record.input_shape):
            return previous
        return None

    def _show_gamma(self) -> None:
        summaries = self._cached(("gamma",), lambda: nm.gamma_summaries(self.state.inference.model.module),
                                 per_layer=False)
        cols: dict[str, list] = {k: [] for k in self._gamma_source.data}
        rng = np.random.default_rng(0)  # a fixed sideways jitter, so that the points do not hide each other
        for i, s in enumerate(summaries):
            magnitude = _numpy(s.magnitude)
            cols["x"].extend(i + 0.5 + rng.uniform(-0.3, 0.3, len(magnitude)))  # factor i is centred on i + 0.5
            cols["gamma"].extend(magnitude)
            cols["colour"].extend(np.where(_numpy(s.near_zero) > 0, OFF_COLOUR, ON_COLOUR))
            cols["layer"].extend([s.name] * len(magnitude))
            cols["channel"].extend(range(len(magnitude)))
            cols["size"].extend(np.where(_numpy(s.near_zero) > 0, 7, 4))
        self._gamma_source.data = cols
        tag_results(self._model_name(), self._gamma_source, self._gamma_fig, self._texts["gamma"])
        names = [s.name for s in summaries]
        self._gamma_fig.x_range.factors = names
        self._gamma_fig.xaxis.major_label_orientation = 0.9 if len(names) > 6 else 0
        self._gamma_fig.width = max(360, min(1100, 30 * len(names) + 120))
        off = sum(int(s.near_zero.sum()) for s in summaries)
        total = sum(len(s.magnitude) for s in summaries)
        worst = max(summaries, key=lambda s: float(s.near_zero.float().mean()), default=None)
        self._texts["gamma"].object = (
            f"|γ| of every channel of every norm layer. Orange: |γ| below {nm.NEAR_ZERO:.0%} of its layer's largest, "
            f"so the channel's normalized values are multiplied by almost nothing and only β gets through: it is "
            f"effectively switched off. {off:,} of {total:,} channels ({off / max(total, 1):.1%}) here"
            + (f"; most in {worst.name} ({int(worst.near_zero.sum())} of {len(worst.magnitude)})." if off else ".")
            + " Training only BatchNorm's γ and β on random convolutions switches off about a third of the features "
              "(Frankle et al., \"Training BatchNorm and only BatchNorm\").") if summaries else (
            "This model has no norm layer with a learned scale γ.")

    # --- figures, built once ---

    def _build_axes(self) -> None:
        self._axes_source = _source("x", "y", "colour", "sample", "channel", "position", name="normalization-axes")
        self._axes_label_source = _source("x", "y", "text")
        # A fixed size, room for every sample block shown: a figure that changes size makes the browser lay out
        # the whole page again (100-250 ms, explorer/ui/overview.py)
        width, height = SHOW_SAMPLES * (SHOW_COLS + 2) * CELL + 90, SHOW_ROWS * CELL + 18
        fig = figure(title="", frame_width=width, frame_height=height, x_range=Range1d(0, width),
                     y_range=plots.pixel_range(height), tools="", toolbar_location=None, min_border=4)
        fig.title.text_font_size = "13px"
        fig.axis.visible = False
        fig.grid.visible = False
        fig.outline_line_color = None
        cells = fig.rect(x="x", y="y", width=CELL - 1, height=CELL - 1, fill_color="colour", line_color=None,
                         source=self._axes_source)
        fig.text(x="x", y="y", text="text", text_baseline="top", text_font_size="10px", text_color="#334155",
                 source=self._axes_label_source)
        fig.add_tools(HoverTool(renderers=[cells], tooltips=[("sample", "@sample"), ("channel or feature", "@channel"),
                                                             ("position or token", "@position")]))
        self._axes_fig = fig

    def _build_stats(self) -> None:
        self._stats_source = _source("x", "image_mean", "image_var", "batch_mean", "batch_var", "running_mean",
                                     "running_var", name="normalization-stats")
        figs = []
        self._series_renderers: dict[str, list] = {series: [] for series in SERIES}  # glyphs and legend items
        for quantity in ("mean", "var"):
            fig = _figure(f"{'Mean' if quantity == 'mean' else 'Variance'} before normalization", 380, 220,
                          x_range=Range1d(-0.5, 1), y_axis_label=quantity.replace("var", "variance"))
            items = []
            for series, (colour, label) in SERIES.items():
                line = fig.line(x="x", y=f"{series}_{quantity}", color=colour, line_width=1.5,
                                source=self._stats_source)
                dots = fig.scatter(x="x", y=f"{series}_{quantity}", color=colour, size=4, source=self._stats_source)
                items.append(LegendItem(label=label, renderers=[line, dots]))
                self._series_renderers[series] += [line, dots, items[-1]]
            legend = Legend(items=items, label_text_font_size="9px", orientation="horizontal", padding=2)
            fig.add_layout(legend, "below")
            fig.add_tools(HoverTool(tooltips=[("index", "@x"), ("your input", f"@image_{quantity}{{0.000}}"),
                                              ("batch", f"@batch_{quantity}{{0.000}}"),
                                              ("running", f"@running_{quantity}{{0.000}}")], mode="vline"))
            figs.append(fig)
        self._stats_figs = figs

    def _tile_figure(self, title: str, n: int, name: str) -> tuple[figure, ColumnDataSource]:
        source = _source("image", "x", "y", "dw", "dh", "cx", "label", "range", name=name)
        # one data unit per screen pixel, so that the tiles keep their shape
        fig = figure(title=title, frame_width=n * (TILE + TILE_GAP), frame_height=TILE + 34, tools="",
                     toolbar_location=None, x_range=Range1d(0, n * (TILE + TILE_GAP)),
                     y_range=plots.pixel_range(TILE + 34), min_border=4)
        fig.title.text_font_size = "13px"
        fig.axis.visible = False
        fig.grid.visible = False
        fig.text(x="cx", y=2, text="label", text_align="center", text_baseline="top", text_font_size="11px",
                 source=source)
        fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=source)
        fig.text(x="cx", y=TILE + 20, text="range", text_align="center", text_baseline="top", text_font_size="9px",
                 text_color="#475569", source=source)
        return fig, source

    def _build_maps(self) -> None:
        self._maps_fig, self._maps_source = self._tile_figure("", 3, "normalization-maps")

    def _build_hist(self) -> None:
        self._hist_source = _source("left", "right", "before", "after", name="normalization-hist")
        fig = _figure("", 380, 220, x_axis_label="value", y_axis_label="count")
        before = fig.quad(left="left", right="right", top="before", bottom=0, fill_color="#0072B2", fill_alpha=0.45,
                          line_color=None, source=self._hist_source)
        after = fig.quad(left="left", right="right", top="after", bottom=0, fill_color="#D55E00", fill_alpha=0.45,
                         line_color=None, source=self._hist_source)
        fig.add_layout(Legend(items=[LegendItem(label="before (layer input)", renderers=[before]),
                                     LegendItem(label="after (layer output)", renderers=[after])],
                              label_text_font_size="9px", orientation="horizontal", padding=2), "below")
        self._hist_fig = fig

    def _build_batch(self) -> None:
        self._batch_source = _source("size", *CURVES, name="normalization-batch")
        self._batch_now_source = _source("size", "value", "colour", name="normalization-batch-now")
        fig = _figure("Your output vs the model's eval-mode output", 420, 260, x_axis_type="log",
                      x_axis_label="batch size (images; yours is one of them)",
                      y_axis_label="mean |difference|", y_range=Range1d(0, 1))
        items = []
        for kind, colour in CURVES.items():
            line = fig.line(x="size", y=kind, color=colour, line_width=2, source=self._batch_source)
            dots = fig.scatter(x="size", y=kind, color=colour, size=5, source=self._batch_source)
            items.append(LegendItem(label=f"{nm.KINDS[kind]}{' (batch statistics)' if kind == 'batch' else ''}",
                                    renderers=[line, dots]))
        fig.scatter(x="size", y="value", color="colour", size=12, marker="circle", fill_alpha=0.3,
                    line_width=2, source=self._batch_now_source)
        fig.add_layout(Legend(items=items, label_text_font_size="9px", orientation="horizontal", padding=2), "below")
        fig.xaxis.ticker.base = 2
        fig.add_tools(HoverTool(tooltips=[("batch size", "@size"), ("BatchNorm", "@batch{0.0000}"),
                                          ("LayerNorm", "@layer{0.0000}"), ("GroupNorm", "@group{0.0000}")],
                                mode="vline"))
        self._batch_fig = fig

    def _build_whatif(self) -> None:
        self._whatif_fig, self._whatif_source = self._tile_figure("", 6, "normalization-whatif")

    def _build_fold(self) -> None:
        self._fold_fig, self._fold_source = self._tile_figure("Kernels of one output channel: before (W), folded (W′)",
                                                              2 * FOLD_INPUTS, "normalization-fold")
        self._bias_source = _source("channel", "before", "after", name="normalization-fold-bias")
        fig = _figure("Bias per output channel", 420, 220, x_range=Range1d(-0.5, 1), x_axis_label="output channel",
                      y_axis_label="bias")
        b = fig.scatter(x="channel", y="before", color="#0072B2", size=5, source=self._bias_source)
        a = fig.vbar(x="channel", top="after", width=0.7, color="#D55E00", alpha=0.7, source=self._bias_source)
        fig.add_layout(Legend(items=[LegendItem(label="conv bias b (0 where it has none)", renderers=[b]),
                                     LegendItem(label="folded bias b′", renderers=[a])],
                              label_text_font_size="9px", orientation="horizontal", padding=2), "below")
        self._bias_fig = fig

    def _build_gamma(self) -> None:
        self._gamma_source = _source("x", "gamma", "colour", "layer", "channel", "size", name="normalization-gamma")
        fig = _figure("|γ| per channel, one column per norm layer", 500, 300, x_range=[""],
                      y_axis_label="|γ| (scale after normalizing)")
        points = fig.scatter(x="x", y="gamma", color="colour", size="size", alpha=0.7, source=self._gamma_source)
        fig.add_tools(HoverTool(renderers=[points], tooltips=[("layer", "@layer"), ("channel", "@channel"),
                                                              ("|γ|", "@gamma{0.0000}")]))
        self._gamma_fig = fig

    def _build_layout(self) -> pn.viewable.Viewable:
        def section(title: str, *items) -> pn.Column:
            return pn.Column(pn.pane.Markdown(f"#### {title}", margin=(10, 10, 0, 10)), *items,
                             sizing_mode="stretch_width")

        bokeh = pn.pane.Bokeh
        return pn.Column(
            pn.pane.Markdown(INTRO, sizing_mode="stretch_width", margin=(0, 10)),
            self._narrative,
            pn.Row(self._layer_input, self._channel_input, self._groups_input),
            pn.Row(pn.pane.Markdown("Kind:", margin=(12, 5)), self._kind_input),
            pn.Row(pn.pane.Markdown("Batch size:", margin=(12, 5)), self._batch_input),
            self._error,
            section("1. Which values share one mean and variance", bokeh(self._axes_fig), self._texts["axes"]),
            section("2. Live statistics on your input", pn.Row(bokeh(self._stats_figs[0]), bokeh(self._stats_figs[1])),
                    self._texts["stats"], pn.Row(bokeh(self._maps_fig), bokeh(self._hist_fig))),
            section("3. Batch size: train mode vs eval mode", bokeh(self._batch_fig), self._texts["batch"],
                    self._texts["prediction"]),
            section("4. What if the layer were another kind?", bokeh(self._whatif_fig), self._texts["whatif"]),
            section("5. Folding BatchNorm into the convolution", bokeh(self._fold_fig), bokeh(self._bias_fig),
                    self._texts["fold"]),
            section("6. Switched-off channels: |γ| near zero", bokeh(self._gamma_fig), self._texts["gamma"]),
            sizing_mode="stretch_width")


def _fit(h: int, w: int, side: float) -> tuple[float, float]:
    """(dw, dh) of an h×w picture drawn with its longer side `side` px."""
    scale = side / max(h, w)
    return w * scale, h * scale


INTRO = ("### Normalization\n"
         "A norm layer subtracts a mean and divides by a standard deviation, then scales by a learned γ and shifts "
         "by a learned β: y = γ·(x − μ)/√(σ² + ε) + β. The kinds differ only in **which numbers share one μ and σ²**. "
         "Below, everything is computed live on your input at the chosen layer. " + plots.COLOUR_LEGEND)


def _some_groups(lesson: NormalizationLesson) -> int:
    """A group count between LayerNorm (1) and InstanceNorm (all channels): 4 where it divides the channels."""
    divisors = lesson.param.groups.objects
    middle = [g for g in divisors if 1 < g < divisors[-1]]
    return min(middle or divisors, key=lambda g: abs(g - 4))


def _first_batch_norm(lesson: NormalizationLesson) -> str | None:
    names = lesson.param.layer.objects
    modules = lesson.state.inference.model.module
    bn = [n for n in names if isinstance(modules.get_submodule(n), torch.nn.modules.batchnorm._BatchNorm)]
    return (bn or names or [None])[0]


STEPS = (
    Step("BatchNorm shares across the batch",
         "Section 1: with **BatchNorm**, one mean and variance per channel is taken over every image of the batch "
         "and every position. Your image's statistics depend on the other images in its batch.",
         {"layer": _first_batch_norm, "kind": "batch", "batch": 8}),
    Step("LayerNorm looks at one sample only",
         "Switch to **LayerNorm**: the highlighted values stay inside your sample (in a ViT, inside one token). "
         "Nothing from other images enters, so training and test time compute the same thing.",
         {"kind": "layer"}),
    Step("GroupNorm and InstanceNorm sit in between",
         "**GroupNorm** splits the channels into groups, each with its own statistics; with one group it is "
         "LayerNorm, with one channel per group it is InstanceNorm. Change *Groups* and watch the highlight.",
         {"kind": "group", "groups": _some_groups}),
    Step("One image is not a batch",
         "Section 3 with a batch of **1**: BatchNorm in train mode normalizes your image by its own statistics, "
         "far from the running statistics the model uses at test time. Read the train-vs-eval difference and the "
         "prediction.", {"kind": "batch", "batch": 1}),
    Step("Large batches approach eval mode",
         "With **256** images the batch statistics come closer to the running statistics, so the orange curve drops "
         "(not to zero: the running statistics average the training batches, and these are test digits). "
         "LayerNorm's and GroupNorm's curves stay flat: they never depend on the batch.", {"batch": 256}),
    Step("Folding: BatchNorm disappears at inference",
         "Section 5: in eval mode BatchNorm is a fixed scale and shift per channel, so it can be merged into the "
         "convolution before it. The folded layer gives the same output (differences near 1e-6: float rounding).",
         {"layer": _first_batch_norm}),
    Step("Channels that γ switches off",
         "Section 6: a channel whose |γ| is near zero contributes almost only its β: the network has learned to "
         "switch it off.", {}),
)

"""explorer: an interactive, visual explorer of what happens inside small vision networks.

Submodules and views load on first use (PEP 562), so `import explorer.core` never loads Panel:
`explorer.zoo.load("mnist-cnn")`, `explorer.trace.run(model, x)`; in a notebook,
`explorer.extension()` then `explorer.Overview(model="mnist-vit")`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Public name -> module, or "module:attribute" for a class or function.
_LAZY = {
    "zoo": "explorer.core.zoo",
    "trace": "explorer.core.trace",
    "images": "explorer.core.images",
    "evaluate": "explorer.core.evaluate",
    "data": "explorer.core.data",
    "device": "explorer.core.device",
    "export": "explorer.core.export",
    "extension": "explorer.ui.notebook:extension",
    "ExplorerState": "explorer.session.state:ExplorerState",
    "Overview": "explorer.ui.overview:Overview",
    "Predictions": "explorer.ui.predictions:Predictions",
    "InputPicker": "explorer.ui.inputs:InputPicker",
    "ModelPicker": "explorer.ui.models:ModelPicker",
    "app": "explorer.ui.shell:build_app",
    "AttentionLesson": "explorer.lessons.attention.view:AttentionLesson",
    "ConvolutionLesson": "explorer.lessons.convolution.view:ConvolutionLesson",
    "NormalizationLesson": "explorer.lessons.normalization.view:NormalizationLesson",
    "PruningLesson": "explorer.lessons.pruning.view:PruningLesson",
    "QuantizationLesson": "explorer.lessons.quantization.view:QuantizationLesson",
    "SaliencyLesson": "explorer.lessons.saliency.view:SaliencyLesson",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> ModuleType | object:
    if name in _LAZY:
        module, _, attribute = _LAZY[name].partition(":")
        loaded = importlib.import_module(module)
        return getattr(loaded, attribute) if attribute else loaded
    raise AttributeError(f"module 'explorer' has no attribute {name!r}")

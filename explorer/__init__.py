"""explorer: an interactive, visual explorer of what happens inside small vision networks.

Submodules load on first use (PEP 562), so `import explorer.core` never loads Panel:
`explorer.zoo.load("mnist-cnn")`, `explorer.trace.run(model, x)`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Public name -> module. The lesson issues add their lessons here.
_LAZY = {
    "zoo": "explorer.core.zoo",
    "trace": "explorer.core.trace",
    "images": "explorer.core.images",
    "evaluate": "explorer.core.evaluate",
    "data": "explorer.core.data",
    "device": "explorer.core.device",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> ModuleType:
    if name in _LAZY:
        return importlib.import_module(_LAZY[name])
    raise AttributeError(f"module 'explorer' has no attribute {name!r}")

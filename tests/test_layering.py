"""Compute code never imports the UI libraries, not even transitively (ARCHITECTURE.md, STYLE C1)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import explorer.core

ROOT = Path(__file__).resolve().parents[1]
COMPUTE_MODULES = sorted(
    [f"explorer.core.{m.name}" for m in pkgutil.iter_modules(explorer.core.__path__)]
    # Every lesson module except its views (view.py, view_*.py) is compute: math.py and its siblings.
    + [f"explorer.lessons.{p.parent.name}.{p.stem}" for p in (ROOT / "explorer" / "lessons").glob("*/*.py")
       if not p.stem.startswith(("view", "__"))]
    + ["explorer", "explorer.errors", "explorer.train"])


@pytest.mark.parametrize("module", COMPUTE_MODULES)
def test_compute_module_does_not_import_the_ui(module):
    code = f"import sys, {module}; print(sorted({{'panel', 'bokeh', 'holoviews'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"{module} pulls in {out.strip()}"


def test_the_core_modules_are_all_listed():
    assert {"explorer.core.trace", "explorer.core.zoo", "explorer.core.images", "explorer.core.device"} <= set(
        COMPUTE_MODULES)

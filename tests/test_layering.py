"""The layers of ARCHITECTURE.md, enforced: dependencies point down only (app → ui → lessons → session → core).

- Compute code (core, each lesson's math) never imports the UI libraries, not even transitively (STYLE C1):
  a fresh interpreter imports the module and must not have loaded panel, bokeh or holoviews.
- Between the explorer's own packages, a static scan of every `import` and `from ... import` statement (inside
  functions and `if TYPE_CHECKING:` blocks too: a lazy or typing-only import is still a dependency): a lesson never
  imports the shell (explorer.ui); the session imports no lesson and not the shell; explorer.serve imports no lesson;
  and the core's modules import each other without a cycle.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import explorer.core

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "explorer"
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
    assert {"explorer.core.trace", "explorer.core.zoo", "explorer.core.images", "explorer.core.device",
            "explorer.core.gallery"} <= set(COMPUTE_MODULES)


def module_name(path: Path) -> str:
    """explorer/core/zoo.py -> explorer.core.zoo; explorer/session/__init__.py -> explorer.session."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module that `source` (the text of `module`) imports, as absolute names, wherever the statement is.
    `from a.b import c` names both a.b and a.b.c: c may be a submodule (`from explorer.core import zoo`)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `from . import x` in a.b.c means a.b
                package = module.split(".")
                base = package[:len(package) - node.level + is_package]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            names.add(origin)
            names.update(f"{origin}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def explorer_imports(folder: str) -> dict[str, set[str]]:
    """{module: the explorer modules it imports} for every .py file under explorer/<folder> (all of them if '')."""
    found = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        module = module_name(path)
        imported = imports_of(path.read_text(), module, path.name == "__init__.py")
        found[module] = {name for name in imported if name == "explorer" or name.startswith("explorer.")}
    return found


def offenders(folder: str, *forbidden: str) -> list[str]:
    """'module imports name' for each import under explorer/<folder> of a package in `forbidden` (or inside it)."""
    found = []
    for module, names in explorer_imports(folder).items():
        bad = {name for name in names if any(name == f or name.startswith(f + ".") for f in forbidden)}
        # `from explorer.ui.shell import build_app` names explorer.ui.shell and ...shell.build_app: say it once
        found += [f"{module} imports {name}" for name in sorted(bad) if name.rpartition(".")[0] not in bad]
    return found


def test_the_import_scan_sees_lazy_typing_and_relative_imports():
    source = textwrap.dedent("""
        import explorer.core.zoo as zoo
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from explorer.ui.after_paint import AfterPaint
        def later():
            from explorer import ui
        from . import plots
        from .math import fake_quantize
    """)
    assert imports_of(source, "explorer.lessons.quantization.view") == {
        "explorer.core.zoo", "typing", "typing.TYPE_CHECKING", "explorer.ui.after_paint",
        "explorer.ui.after_paint.AfterPaint", "explorer", "explorer.ui", "explorer.lessons.quantization",
        "explorer.lessons.quantization.plots", "explorer.lessons.quantization.math",
        "explorer.lessons.quantization.math.fake_quantize"}
    assert imports_of("from . import state", "explorer.session", is_package=True) == {
        "explorer.session", "explorer.session.state"}


def test_a_lesson_never_imports_the_shell():
    assert explorer_imports("lessons"), "no lesson modules found"
    found = offenders("lessons", "explorer.ui")
    assert not found, "\n".join(found)


def test_the_session_imports_no_lesson_and_not_the_shell():
    assert (PACKAGE / "session" / "__init__.py").is_file(), "explorer/session/ is missing"
    found = offenders("session", "explorer.lessons", "explorer.ui")
    assert not found, "\n".join(found)


def test_serve_imports_no_lesson():
    # Every module explorer/serve/ holds: the runtime tuning of the server and the page.
    found = offenders("serve", "explorer.lessons")
    assert not found, "\n".join(found)


def test_the_core_modules_import_each_other_without_a_cycle():
    graph = {module: {name for name in names if name in imports}
             for imports in [explorer_imports("core")] for module, names in imports.items()}
    assert len(graph) > 10, "the core's modules were not found"
    cycles, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append(" -> ".join(path[path.index(module):] + [module]))
            return
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert not cycles, "import cycles among the core's modules: " + "; ".join(cycles)

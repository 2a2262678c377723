"""openmp_wait_briefly(): torch's OpenMP threads spin briefly before they sleep, set before torch loads."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from explorer.ui.server import OPENMP_ENV

ROOT = Path(__file__).resolve().parents[2]

# As app.py starts: Panel, then the server settings, then the call; prints what libgomp will read.
START = """
import os, sys, warnings
warnings.simplefilter("error")
import panel
from explorer.ui.server import openmp_wait_briefly
if sys.argv[1] == "torch first":
    import torch
try:
    openmp_wait_briefly()
except RuntimeWarning as w:
    print("warned:", w)
print({name: os.environ.get(name) for name in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}, "torch" in sys.modules)
"""


def start(mode: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    done = subprocess.run([sys.executable, "-c", START, mode], capture_output=True, text=True, check=True,
                          env={**clean, **env}, cwd=ROOT)
    return done.stdout.strip()


def test_the_spin_count_is_set_before_torch_loads():
    spins = OPENMP_ENV["GOMP_SPINCOUNT"]
    assert start("app") == f"{{'GOMP_SPINCOUNT': '{spins}', 'OMP_WAIT_POLICY': None}} False"


def test_a_wait_policy_given_by_the_environment_is_kept():
    assert start("app", OMP_WAIT_POLICY="PASSIVE") == "{'GOMP_SPINCOUNT': None, 'OMP_WAIT_POLICY': 'PASSIVE'} False"
    assert start("app", GOMP_SPINCOUNT="5") == "{'GOMP_SPINCOUNT': '5', 'OMP_WAIT_POLICY': None} False"


def test_a_call_after_torch_loaded_warns_that_it_is_too_late():
    assert start("torch first").startswith("warned: openmp_wait_briefly() after torch loaded")


def test_app_py_makes_the_call_before_it_imports_the_shell():
    body = ast.parse((ROOT / "app.py").read_text()).body
    call = next(i for i, node in enumerate(body) if isinstance(node, ast.Expr)
                and ast.unparse(node.value) == "openmp_wait_briefly()")
    shell = next(i for i, node in enumerate(body) if isinstance(node, ast.ImportFrom)
                 and node.module == "explorer.ui.shell")
    assert call < shell

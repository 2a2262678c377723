"""Freed memory kept for reuse: a second large allocation touches no new pages."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

# As a trace does: blocks of 1-8 MB (36 MB) alive together, then freed, three times; print the page faults
# of the last round (4 kB pages: 9216 if all were new; glibc's default here: 1,000-2,000; kept: none).
ROUNDS = """
import resource, sys
import numpy as np
from explorer.core import allocator
if sys.argv[1] == "kept":
    assert allocator.keep_freed_memory()
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [np.ones(mb * 2**18, np.float32) for mb in range(1, 9)]
    del blocks
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None,
                    reason="glibc's malloc only")
def test_kept_memory_is_reused_without_page_faults():
    assert faults("kept") < 100 < faults("default")  # by default glibc unmaps blocks or trims its heap on free

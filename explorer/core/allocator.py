"""Keep freed memory in the process for reuse, instead of handing it back to the system after each trace.

A trace keeps every layer's output alive (MobileNetV2: 27 MB in 143 tensors). glibc's malloc serves
blocks of that size with fresh `mmap`s and gives them back on free, or trims its heap when the top
is free: each trace then touches brand-new pages, and the kernel zero-fills every one of them on its
first write (a page fault per 4 kB). Measured here (benchmarks/trace.py), a MobileNetV2 trace took
37 ms; with freed memory kept, 19 ms. The price: the server keeps its peak memory mapped between
interactions, where the next one reuses it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, glibc's malloc.h
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts: smaller blocks come from the reused heap
TRIM_THRESHOLD = 2**30       # free memory at the heap's top is handed back only past 1 GiB


@functools.cache
def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed memory; False where the C library is not glibc (nothing changed)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False
    # mallopt returns 1 on success; the mmap threshold first: setting it also stops glibc adjusting it
    mmap_set = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mmap_set and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1

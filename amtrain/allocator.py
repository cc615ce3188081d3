"""Freed memory kept for the next step, on Linux (glibc's malloc): ``keep_freed_memory=true``.

By default glibc hands a freed block larger than its mmap threshold (128 KB at first, at most
32 MB as it adapts) straight back to the system, and trims free memory above 128 KB from the top
of its heap. A training step that allocates the same large arrays again then faults their pages
back in, 4 KB at a time, each zeroed by the kernel. The RNN at T = 784 makes several (T, d, B)
arrays of 48 MB a step (codes, their tanh, drives, residuals): on our 2-core CPU (2026-12-04,
batch 1024, K = 1, alternated processes) its AM-Adam step went from 331-347 to 192-200 ms with
the sequence read-out and from 267-280 to 155-168 ms with the last, at about 0.2 GB more peak
memory (1.04 -> 1.22 GB). Full-batch ADMM on MNIST trained 20 % faster; the MLPs' mini-batch
arrays stay below the thresholds and their steps did not change (``scripts/bench.py --seeds``).

:func:`keep_freed_memory` sets glibc's two thresholds with ``mallopt``: blocks up to 1 GB come
from the heap, and up to 256 MB of free memory may stay at its top. Values a user gave glibc
itself (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``) stand. With
another C library (macOS, musl) it does nothing. It changes how fast a run goes and how much
memory it holds, never what it computes.
"""
from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 1 << 28  # blocks up to 256 MB from the heap
TRIM_THRESHOLD = 1 << 28  # up to 256 MB of free memory kept at the heap's top
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Set glibc's thresholds (module docstring). True when they were set; False with another C
    library, or where the user's environment sets glibc's malloc itself."""
    if any(os.environ.get(name) for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # glibc's own: musl has a libc.so.6 name on some systems, not this
    except (OSError, AttributeError):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))

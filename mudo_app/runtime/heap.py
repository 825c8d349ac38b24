"""Keeping freed memory in the heap of a single-purpose process (glibc's ``mallopt``).

glibc's ``malloc`` serves a block above its mmap threshold (128 KiB, rising adaptively to at most
32 MiB) with a fresh ``mmap`` and unmaps it when it is freed, and it returns the top of the heap to
the kernel once more than 128 KiB lies free there. PyTorch's CPU allocator calls ``malloc`` for every
tensor, so a loop that runs a network on batches of the same shape gets the pages of its
activations (tens of MB each) from the kernel again, zero-filled, on every pass: ``muduo predict``
of a whole-body case (bf16, 2 cores, ``/usr/bin/time``) takes 1.0 million minor page faults and 4-5.5 s
of kernel time.

:func:`keep_freed_memory` raises both thresholds to their maximum (``M_MMAP_THRESHOLD`` and
``M_TRIM_THRESHOLD``, glibc's documented tunables; the environment variables
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` set the same): freed blocks stay in the heap
and the next allocation of that size reuses them (that case: 0.54 million faults, 2.6-3.7 s of kernel
time). The process keeps its memory until it exits, and its peak grows a little (one case 1.8 -> 1.9
GiB; the folder mode, which reads the next case meanwhile, 2.2 -> 2.9 GiB; README, "Benchmarks"), so
only a process that runs one command and exits does this (the ``muduo`` console script, for the
commands that declare it), not the server or a test session.
"""

from __future__ import annotations

import ctypes
import platform

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_INT_MAX = 2**31 - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Keep freed blocks in this process's heap for reuse instead of returning them to the kernel.

    Returns True when glibc accepted both settings, False where the C library is not glibc (macOS,
    musl, Windows): there nothing changes.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: glibc is loaded already
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # both: either one alone also stops glibc raising the mmap threshold, which then stays at 128 KiB
    # (the trim threshold alone: 5.4 million faults in a whole-body prediction, fp32)
    return bool(mallopt(M_TRIM_THRESHOLD, _INT_MAX)) and bool(mallopt(M_MMAP_THRESHOLD, _INT_MAX))

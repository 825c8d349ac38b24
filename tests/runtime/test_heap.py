"""keep_freed_memory: a block freed and allocated again is served from the heap, not the kernel.

Each case runs in its own interpreter: the setting is process-wide and this test session goes on.
Page faults are counted with ``getrusage``: 20 allocations of 64 MiB, each written in full, fault
every page in again by default (glibc unmaps a freed block that large) and only the first one's
pages with the setting."""

import platform
import subprocess
import sys

import pytest

from mudo_app.runtime.heap import keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

SCRIPT = """
import resource, sys
import numpy as np
from mudo_app.runtime.heap import keep_freed_memory

if sys.argv[1] == "keep":
    assert keep_freed_memory()

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def one_block():
    block = np.ones(8 * 2**20)  # 64 MiB of float64, every page written
    del block

start = faults()
one_block()
first = faults() - start
start = faults()
for _ in range(19):
    one_block()
print(first, faults() - start)
"""


def _faults(mode: str) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    first, rest = (int(v) for v in done.stdout.split())
    return first, rest


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    first, rest = _faults("default")
    assert first > 100  # 64 MiB of pages: about 540 faults here (the kernel maps several pages per fault)
    assert rest > 10 * first  # each of the 19 others faults in its pages again
    first, rest = _faults("keep")
    assert first > 100
    assert rest < first / 10  # the 19 others reuse the first one's pages


@pytest.mark.skipif(GLIBC, reason="only where the C library is not glibc")
def test_other_c_libraries_are_left_alone():
    assert keep_freed_memory() is False

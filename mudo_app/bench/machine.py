"""A one-line description of the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence

import torch


def describe(device: str = "cpu") -> str:
    threads = torch.get_num_threads()
    text = f"{platform.machine()}, {os.cpu_count()} CPU cores ({threads} torch threads), torch {torch.__version__}"
    if device.startswith("cuda") and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def measured_run(
    cmd: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None
) -> dict[str, float]:
    """Run ``cmd`` to its end: ``{"seconds": wall time, "peak_rss_gib": its peak resident memory}``,
    from the kernel's accounting of that one process (``wait4``; it starts from the forking parent's
    size, so keep the parent small or its peak far below the child's). Its stderr goes to a temporary file
    (a pipe left unread could fill and stall it), whose tail a failure's ``RuntimeError`` quotes."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({code}): {err.read().decode(errors='replace')[-2000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2)}


def checkout_commit(folder: str | os.PathLike[str]) -> str | None:
    """The short commit a git checkout is at (for results that compare with an older checkout)."""
    done = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None

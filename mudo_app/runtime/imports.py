"""Keeping a single-purpose process from importing what it never uses.

``import monai`` imports every MONAI module, and with them the optional packages they look for:
PyTorch-Ignite (0.8 s), matplotlib (0.4 s) and SciPy's signal module (0.6 s) on 2 cores, plus their
share of the interpreter's exit. A process that only predicts uses none of them. Python's documented
way to make a package unimportable is ``sys.modules[name] = None``; MONAI's ``optional_import`` then
records the package as absent, as on a machine without it.

Only a process that runs one command and exits may do this (the ``muduo`` console script): in a
process that goes on (a test session, the server) MONAI would stay without those packages.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable


def block_imports(names: Iterable[str]) -> list[str]:
    """Make ``import name`` fail (``ModuleNotFoundError``) in this process for each package not
    imported yet; returns the names blocked."""
    blocked = []
    for name in names:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # the documented import block
            blocked.append(name)
    return blocked

"""Where MuDuo finds its files, from a source checkout and from an installed wheel alike.

- **Stand-in teachers** (``standin_ct.pt``, ``standin_pet.pt`` and their reports): package data of
  :mod:`mudo_app.assets` (``mudo_app/assets/teachers/``), found with :mod:`importlib.resources`, so a
  wheel carries them.
- **The demo** that ``make demo`` prepares (``datastore/`` and the initial ``student/student.pt``):
  the folder named by the environment variable ``MUDUO_DEMO_DIR``, else ``sample-datasets/demo`` of
  the source checkout this package is imported from. An installed wheel has no checkout: set
  ``MUDUO_DEMO_DIR`` (or pass a model explicitly).
- **The 3D SAM conformance fixture** (benchmarks only): ``MUDUO_SAM3D_SPECS``, else
  ``../shared/specs/sam3d`` beside the checkout.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

DEMO_DIR_ENV = "MUDUO_DEMO_DIR"
SAM3D_SPECS_ENV = "MUDUO_SAM3D_SPECS"


def standin_teacher_dir() -> Path:
    """The folder of the shipped stand-in teachers (package data)."""
    folder = resources.files("mudo_app.assets") / "teachers"
    if not isinstance(folder, Path):  # pragma: no cover - a zipped install; the package is never zipped
        raise RuntimeError(f"mudo_app is installed in a form whose data are not files: {folder}")
    return folder


def source_checkout() -> Path | None:
    """The root of the source checkout this package runs from (it holds ``sample-datasets/``), or None."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "sample-datasets").is_dir() else None


def demo_dir() -> Path | None:
    """``$MUDUO_DEMO_DIR``, else the checkout's ``sample-datasets/demo``; None without either."""
    if os.environ.get(DEMO_DIR_ENV):
        return Path(os.environ[DEMO_DIR_ENV]).expanduser()
    root = source_checkout()
    return None if root is None else root / "sample-datasets" / "demo"


def demo_student() -> Path | None:
    """The initial student ``make demo`` trains (it may not exist yet), or None where no demo folder is known."""
    folder = demo_dir()
    return None if folder is None else folder / "student" / "student.pt"


def demo_datastore() -> Path | None:
    folder = demo_dir()
    return None if folder is None else folder / "datastore"


def sam3d_specs() -> Path | None:
    """``$MUDUO_SAM3D_SPECS``, else ``../shared/specs/sam3d`` beside the checkout; None without either."""
    if os.environ.get(SAM3D_SPECS_ENV):
        return Path(os.environ[SAM3D_SPECS_ENV]).expanduser()
    root = source_checkout()
    return None if root is None else root.parent / "shared" / "specs" / "sam3d"


def where_demo_is_looked_for() -> str:
    """One sentence for error messages: where the demo student was looked for, and how to change it."""
    student = demo_student()
    if student is None:
        return f"no demo folder known (not a source checkout): set {DEMO_DIR_ENV} or give a model explicitly"
    return f"looked for the demo student at {student} (run `make demo`, set {DEMO_DIR_ENV}, or give a model)"

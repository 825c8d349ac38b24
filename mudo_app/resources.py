"""Where MuDuo finds its files, from a source checkout and from an installed wheel alike.

- **Stand-in teachers** (``standin_ct.pt``, ``standin_pet.pt`` and their reports): package data of
  :mod:`mudo_app.assets` (``mudo_app/assets/teachers/``), found with :mod:`importlib.resources`, so a
  wheel carries them.
- **The shipped student** (``muduo_student.pt``, fp16, and its ``report.json``): package data
  (``mudo_app/assets/student/``), the default model of ``muduo predict`` and the student a new
  server publishes on its first start.
- **The demo** that ``make demo`` prepares (``datastore/``): the folder named by the environment
  variable ``MUDUO_DEMO_DIR``, else ``sample-datasets/demo`` of the source checkout this package is
  imported from. An installed wheel has no checkout: set ``MUDUO_DEMO_DIR``.
- **The 3D SAM conformance fixture** (benchmarks only): ``MUDUO_SAM3D_SPECS``, else
  ``../shared/specs/sam3d`` beside the checkout.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

DEMO_DIR_ENV = "MUDUO_DEMO_DIR"
SAM3D_SPECS_ENV = "MUDUO_SAM3D_SPECS"


def _asset_dir(name: str) -> Path:
    folder = resources.files("mudo_app.assets") / name
    if not isinstance(folder, Path):  # pragma: no cover - a zipped install; the package is never zipped
        raise RuntimeError(f"mudo_app is installed in a form whose data are not files: {folder}")
    return folder


def standin_teacher_dir() -> Path:
    """The folder of the shipped stand-in teachers (package data)."""
    return _asset_dir("teachers")


def shipped_student_dir() -> Path:
    """The folder of the shipped student (package data): ``muduo_student.pt`` and ``report.json``."""
    return _asset_dir("student")


def shipped_student() -> Path:
    """The student ``muduo predict`` uses by default and a new server serves first (package data)."""
    return shipped_student_dir() / "muduo_student.pt"


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


def demo_datastore() -> Path | None:
    folder = demo_dir()
    return None if folder is None else folder / "datastore"


def sam3d_specs() -> Path | None:
    """``$MUDUO_SAM3D_SPECS``, else ``../shared/specs/sam3d`` beside the checkout; None without either."""
    if os.environ.get(SAM3D_SPECS_ENV):
        return Path(os.environ[SAM3D_SPECS_ENV]).expanduser()
    root = source_checkout()
    return None if root is None else root.parent / "shared" / "specs" / "sam3d"

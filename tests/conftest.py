"""Shared fixtures. Real data lives beside the repository in ../shared/realdata (licences: NOTICE.md)."""

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REALDATA = SHARED / "realdata"
SAM3D_SPECS = SHARED / "specs" / "sam3d"


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder not found: {REALDATA}")
    return REALDATA


@pytest.fixture(scope="session")
def small_settings():
    """A coarse phantom grid (8 mm) so generator tests run in a fraction of a second."""
    from mudo_app.synth import PhantomSettings

    return PhantomSettings(spacing=(8.0, 8.0, 8.0))


def make_volume(shape=(6, 5, 4), affine=None, dtype=np.float32, fill=None, seed=0):
    from mudo_app.io.volume import Volume

    rng = np.random.default_rng(seed)
    arr = rng.normal(size=shape).astype(dtype) if fill is None else np.full(shape, fill, dtype)
    return Volume(arr, np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine)


@pytest.fixture(scope="module")
def student_path(tmp_path_factory):
    """An untrained ``unet_small`` student checkpoint (seed 0), for prediction tests."""
    import torch

    from mudo_app.models.checkpoint import save_student
    from mudo_app.models.student import build_student

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "student.pt"
    save_student(path, build_student("unet_small"), "unet_small", provenance={"note": "untrained, for tests"})
    return path

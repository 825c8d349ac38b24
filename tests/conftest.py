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

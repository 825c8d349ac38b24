"""Geometry helpers of the phantom generator: a voxel grid in world mm and smooth shape primitives.

World coordinates are RAS+ millimetres: +x towards the patient's right, +y anterior, +z superior
(so the liver has x > 0 and the left kidney x < 0). Arrays are indexed ``[i, j, k]`` with i along x,
j along y and k along z: the generator's affine is diagonal with positive spacings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Slices = tuple[slice, slice, slice]


@dataclass
class Deformation:
    """A smooth random displacement field: a sum of sinusoids, amplitude in mm."""

    amplitude: np.ndarray  # (n, 3) mm, displacement along x, y, z of each term
    wavevector: np.ndarray  # (n, 3) rad / mm
    phase: np.ndarray  # (n,)

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        n: int = 4,
        amplitude_mm: float = 7.0,
        wavelength_mm: tuple[float, float] = (120.0, 400.0),
    ) -> Deformation:
        wavelength = rng.uniform(*wavelength_mm, size=n)
        direction = rng.normal(size=(n, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        return cls(
            amplitude=rng.normal(scale=amplitude_mm / np.sqrt(n), size=(n, 3)),
            wavevector=direction * (2 * np.pi / wavelength)[:, None],
            phase=rng.uniform(0, 2 * np.pi, size=n),
        )

    def apply(self, x: np.ndarray, y: np.ndarray, z: np.ndarray):
        dx = np.zeros(np.broadcast(x, y, z).shape, np.float32)
        dy, dz = dx.copy(), dx.copy()
        for a, kv, ph in zip(self.amplitude, self.wavevector, self.phase):
            s = np.sin(kv[0] * x + kv[1] * y + kv[2] * z + ph).astype(np.float32)
            dx += a[0] * s
            dy += a[1] * s
            dz += a[2] * s
        return x + dx, y + dy, z + dz


class Canvas:
    """World coordinates of a diagonal RAS grid, evaluated lazily inside bounding boxes."""

    def __init__(
        self,
        shape: Sequence[int],
        spacing: Sequence[float],
        origin: Sequence[float],
        deformation: Deformation,
        pose: np.ndarray | None = None,
        pivot: Sequence[float] = (0.0, 0.0, 0.0),
    ):
        self.shape = tuple(int(s) for s in shape)
        self.spacing = np.asarray(spacing, np.float64)
        self.origin = np.asarray(origin, np.float64)
        self.axes = [(self.origin[a] + self.spacing[a] * np.arange(self.shape[a])).astype(np.float32) for a in range(3)]
        self.deformation = deformation
        # the patient's pose on the table: scanner = pose @ (patient - pivot) + pivot
        self.pose = np.eye(3) if pose is None else np.asarray(pose, np.float64)
        self.pivot = np.asarray(pivot, np.float64)

    def to_patient(self, scanner_mm: np.ndarray) -> np.ndarray:
        """Scanner (grid) world coordinates (3,) -> the patient frame the anatomy is drawn in."""
        return self.pose.T @ (np.asarray(scanner_mm, np.float64) - self.pivot) + self.pivot

    @property
    def affine(self) -> np.ndarray:
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = self.origin
        return aff

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> Slices:
        """Index slices covering the world box [lo, hi] (mm), widened by the deformation amplitude."""
        pad = 3 * float(np.abs(self.deformation.amplitude).sum(axis=0).max()) + 2 * float(self.spacing.max())
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])], float)
        corners = (self.pose @ (corners - self.pivot).T).T + self.pivot
        lo, hi = corners.min(0), corners.max(0)
        out = []
        for a in range(3):
            i0 = int(np.floor((lo[a] - pad - self.origin[a]) / self.spacing[a]))
            i1 = int(np.ceil((hi[a] + pad - self.origin[a]) / self.spacing[a])) + 1
            out.append(slice(max(i0, 0), max(min(i1, self.shape[a]), 0)))
        return tuple(out)  # type: ignore[return-value]

    def coords(self, sl: Slices, deformed: bool = True):
        """Patient-frame (posed, then deformed) coordinates (x, y, z) of the voxels in ``sl``."""
        x = self.axes[0][sl[0]][:, None, None]
        y = self.axes[1][sl[1]][None, :, None]
        z = self.axes[2][sl[2]][None, None, :]
        if not np.allclose(self.pose, np.eye(3)):
            r = self.pose.T.astype(np.float32)  # scanner -> patient
            c = self.pivot.astype(np.float32)
            d = (x - c[0], y - c[1], z - c[2])
            x, y, z = (r[i, 0] * d[0] + r[i, 1] * d[1] + r[i, 2] * d[2] + c[i] for i in range(3))
        if not deformed:
            return x, y, z
        return self.deformation.apply(x, y, z)


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation matrix (radians) about z, then y, then x."""
    cz, sz = np.cos(yaw), np.sin(yaw)
    cy, sy = np.cos(pitch), np.sin(pitch)
    cx, sx = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


def ellipsoid_radius(xyz, centre, semi, rot=None) -> np.ndarray:
    """Normalised radius of an ellipsoid: < 1 inside, 1 on the surface."""
    d = [xyz[a] - np.float32(centre[a]) for a in range(3)]
    if rot is not None:
        r = np.asarray(rot, np.float32).T  # world -> body frame
        d = [r[a, 0] * d[0] + r[a, 1] * d[1] + r[a, 2] * d[2] for a in range(3)]
    return np.sqrt(sum((d[a] / np.float32(semi[a])) ** 2 for a in range(3)))


def capsule_distance(xyz, a, b) -> np.ndarray:
    """Distance (mm) from each point to the segment a-b."""
    a = np.asarray(a, np.float32)
    ab = np.asarray(b, np.float32) - a
    ap = [xyz[i] - a[i] for i in range(3)]
    t = np.clip(sum(ap[i] * ab[i] for i in range(3)) / float(ab @ ab), 0.0, 1.0)
    return np.sqrt(sum((ap[i] - t * ab[i]) ** 2 for i in range(3)))

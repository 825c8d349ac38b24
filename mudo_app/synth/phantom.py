"""Synthetic whole-body PET/CT phantoms with the 12 AutoPET-Organ organs and lesions.

:func:`generate_case` draws one patient from a seeded ``numpy.random.Generator`` and returns CT (HU,
int16), PET (SUV, float32, **synthetic**) and a label map (uint8, 0..13) on one RAS grid. Anatomy is
built in world millimetres (see :mod:`mudo_app.synth.canvas`), so any voxel spacing gives the same
patient. What it models and what it does not is documented in ``sample-datasets/README.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from mudo_app.io.volume import Volume
from mudo_app.synth.canvas import Canvas, Deformation, capsule_distance, ellipsoid_radius, rotation
from mudo_app.synth.lesions import add_benign_uptake, add_lesions

LIVER, KIDNEY_L, KIDNEY_R, HEART, SPLEEN, AORTA, PROSTATE = 1, 2, 3, 4, 5, 6, 7
LUNG_LL, LUNG_RL, LUNG_LU, LUNG_RU, LUNG_RM = 8, 9, 10, 11, 12


@dataclass(frozen=True)
class PhantomSettings:
    """Grid and population settings. ``spacing`` and ``fov_mm`` are along x (R-L), y (A-P), z (S-I)."""

    spacing: tuple[float, float, float] = (4.0, 4.0, 4.0)
    fov_mm: tuple[float, float, float] = (480.0, 320.0, 800.0)
    second_domain_fraction: float = 0.25
    lesion_free_fraction: float = 0.15
    max_lesions: int = 10

    def __post_init__(self):
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be 3 positive numbers (mm), got {self.spacing}")
        if min(self.spacing) < 0.5 or max(self.spacing) > 12:
            raise ValueError(f"spacing {self.spacing} is outside the supported 0.5..12 mm")
        if not 0 <= self.second_domain_fraction <= 1 or not 0 <= self.lesion_free_fraction <= 1:
            raise ValueError("fractions must lie in [0, 1]")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(round(f / s)) for f, s in zip(self.fov_mm, self.spacing))  # type: ignore


class Painter:
    """HU, SUV and label maps painted in order; later paint wins."""

    def __init__(self, canvas: Canvas):
        self.canvas = canvas
        self.hu = np.full(canvas.shape, -1000.0, np.float32)
        self.suv = np.zeros(canvas.shape, np.float32)
        self.label = np.zeros(canvas.shape, np.uint8)
        self.body = np.zeros(canvas.shape, bool)

    def paint(self, sl, mask, hu=None, suv=None, label=None):
        if hu is not None:
            self.hu[sl][mask] = hu if np.isscalar(hu) else hu[mask]
        if suv is not None:
            self.suv[sl][mask] = suv if np.isscalar(suv) else suv[mask]
        if label is not None:
            self.label[sl][mask] = label

    def ellipsoid(self, centre, semi, rot=None, warp: Deformation | None = None, **values):
        """Paint an ellipsoid; ``warp`` (an organ's own small-scale deformation) makes it irregular."""
        reach = max(semi) * 1.2
        sl = self.canvas.box(np.subtract(centre, reach), np.add(centre, reach))
        xyz = self.canvas.coords(sl)
        if warp is not None:
            xyz = warp.apply(*xyz)
        r = ellipsoid_radius(xyz, centre, semi, rot)
        mask = r < 1.0
        self.paint(sl, mask, **values)
        return sl, mask, r


def _body(p: Painter, a: dict) -> None:
    """Trunk (elliptic cylinder with waist and chest), neck and head; fat shell; bones."""
    c = p.canvas
    sl = c.box((-300, -300, -1e4), (300, 300, a["z_shoulder"]))
    x, y, z = c.coords(sl)
    zz = (z - a["z0"]) / a["h"]
    waist = 1.0 - 0.10 * np.exp(-(((zz - 300.0) / 90.0) ** 2))
    hips = 1.0 + 0.05 * np.exp(-(((zz - 110.0) / 80.0) ** 2))
    semi_x, semi_y = a["W"] * waist * hips, a["D"] * waist
    r = np.sqrt((x / semi_x) ** 2 + ((y - a["y_body"]) / semi_y) ** 2)
    trunk = (r < 1.0) & (z < a["z_shoulder"]) & (z > c.axes[2][0] - 1)
    fat_r = 1.0 - a["fat_mm"] / np.minimum(semi_x, semi_y)
    p.paint(sl, trunk, hu=-105.0, suv=0.35)
    p.paint(sl, trunk & (r < fat_r), hu=45.0, suv=a["muscle_suv"])
    p.body[sl] |= trunk
    # neck and head
    neck_c = (0, a["y_body"] - 10, a["z_shoulder"] + 25 * a["h"])
    sl, m, _ = p.ellipsoid(neck_c, (55, 55, 45 * a["h"]), hu=40.0, suv=a["muscle_suv"])
    p.body[sl] |= m
    head_c = (0, a["y_body"] + 5, a["z_shoulder"] + 125 * a["h"])
    sl, m, r = p.ellipsoid(head_c, (72, 92, 100 * a["h"]), hu=30.0, suv=0.6)
    p.body[sl] |= m
    p.paint(sl, m & (r > 0.91), hu=1000.0, suv=0.8)  # skull
    p.ellipsoid(head_c, (62, 80, 86 * a["h"]), hu=35.0, suv=a["brain_suv"])
    # spine, ribs, pelvis, femoral heads
    y_sp = a["y_body"] - a["D"] + 38
    sl = c.box((-25, y_sp - 25, c.axes[2][0]), (25, y_sp + 25, a["z_shoulder"] + 60))
    d = capsule_distance(c.coords(sl), (0, y_sp, c.axes[2][0] - 50), (0, y_sp + 8, a["z_shoulder"] + 60))
    p.paint(sl, d < 17, hu=300.0, suv=1.1)
    p.paint(sl, (d < 17) & (d > 13), hu=750.0)
    for zr in np.arange(a["z_lung"] - 90 * a["h"], a["z_shoulder"] - 15, 26 * a["h"]):
        sl = c.box((-250, -250, zr - 8), (250, 250, zr + 8))
        x, y, z = c.coords(sl)
        rr = np.sqrt((x / (a["W"] - a["fat_mm"] - 12)) ** 2 + ((y - a["y_body"]) / (a["D"] - a["fat_mm"] - 10)) ** 2)
        rib = (np.abs(rr - 0.93) < 0.035) & (np.abs(z - zr) < 5) & (np.abs(x) > 18)
        p.paint(sl, rib, hu=650.0, suv=0.9)
    for side in (-1, 1):
        sl, m, r = p.ellipsoid(
            (side * 95 * a["w"], a["y_body"] - 30, a["z0"] + 150 * a["h"]), (48, 22, 55), rotation(0, 0, 0.3), suv=0.9
        )
        p.paint(sl, m & (r > 0.7), hu=600.0)
        p.paint(sl, m & (r <= 0.7), hu=250.0)
        p.ellipsoid((side * 88 * a["w"], a["y_body"] + 5, a["z0"] + 35 * a["h"]), (22, 22, 22), hu=450.0, suv=0.9)


def _lungs(p: Painter, a: dict) -> None:
    """Lungs split into lobes by the oblique and horizontal fissures."""
    for side, lower, upper in ((-1, LUNG_LL, LUNG_LU), (1, LUNG_RL, LUNG_RU)):
        centre = _jit(a, "lung_r" if side > 0 else "lung_l", (side * a["lung_x"], a["y_body"] - 5, a["z_lung"]))
        semi = (a["lung_semi"][0], a["lung_semi"][1], a["lung_semi"][2] * (1.0 if side > 0 else 1.04))
        reach = max(semi)
        sl = p.canvas.box([c - reach for c in centre], [c + reach for c in centre])
        x, y, z = a["_warps"]["lung_r" if side > 0 else "lung_l"].apply(*p.canvas.coords(sl))
        inside = (
            ellipsoid_radius((x, y, z), centre, semi, _rot(a, "lung_r" if side > 0 else "lung_l", side * 0.08)) < 1.0
        )
        u, v = y - centre[1], z - centre[2]
        is_lower = v < -a["fissure_slope"] * u + a["fissure_offset"][side > 0]
        hu = -860.0 + 25.0 * np.sin(x / 11.0) * np.sin(y / 13.0) * np.sin(z / 9.0)
        p.paint(sl, inside, hu=hu, suv=a["lung_suv"], label=upper)
        p.paint(sl, inside & is_lower, label=lower)
        if side > 0:  # right middle lobe: above the oblique fissure, below the horizontal fissure
            p.paint(sl, inside & ~is_lower & (v < a["horizontal_fissure"]) & (u > -25), label=LUNG_RM)


def _heart_aorta(p: Painter, a: dict) -> None:
    """Heart (myocardium shell with variable uptake around a blood pool) and aorta; painted last."""
    h = a["h"]
    hc = _jit(a, "heart", (-18 * a["w"], a["y_body"] + 32, a["z_lung"] - 50 * h))
    sl, m, r = p.ellipsoid(
        hc,
        a["heart_semi"],
        _rot(a, "heart", 0.5, 0.35, 0.0),
        _w(a, "heart"),
        hu=a["blood_hu"],
        suv=a["blood_suv"],
        label=HEART,
    )
    p.paint(sl, m & (r > 0.72), hu=45.0)
    p.paint(sl, m & (r > 0.72), suv=a["myocardium_suv"])
    # aorta: ascending, arch, descending to the bifurcation
    top = a["z_lung"] + 45 * h
    pts = [
        (hc[0] + 22, hc[1] + 5, hc[2] + 25),
        (8, a["y_body"] + 20, top - 10),
        (-8, a["y_body"] - 5, top + 5),
        (-22, a["y_body"] - a["D"] + 80, top - 15),
        (-18, a["y_body"] - a["D"] + 78, a["z0"] + 330 * h),
        (-10, a["y_body"] - a["D"] + 85, a["z0"] + 190 * h),
    ]
    radii = [a["aorta_r"] * 1.2, a["aorta_r"] * 1.15, a["aorta_r"] * 1.1, a["aorta_r"], a["aorta_r"] * 0.9]
    for (pa, pb), rad in zip(zip(pts[:-1], pts[1:]), radii):
        lo, hi = np.minimum(pa, pb) - rad, np.maximum(pa, pb) + rad
        sl = p.canvas.box(lo, hi)
        d = capsule_distance(p.canvas.coords(sl), pa, pb)
        p.paint(sl, d < rad, hu=a["blood_hu"], suv=a["blood_suv"], label=AORTA)


def _abdomen(p: Painter, rng, a: dict) -> None:
    """Bowel, stomach, liver, spleen, kidneys, bladder, prostate."""
    h, z0, yb = a["h"], a["z0"], a["y_body"]
    for _ in range(int(rng.integers(5, 10))):  # bowel loops: moderate, patchy uptake, some gas
        c = (rng.uniform(-90, 90), yb + rng.uniform(-10, 60), z0 + rng.uniform(110, 290) * h)
        semi = rng.uniform(15, 35, size=3)
        sl, m, r = p.ellipsoid(c, semi, rotation(*rng.uniform(-1, 1, 3)), hu=25.0, suv=float(rng.uniform(1.0, 4.0)))
        if rng.random() < 0.5:
            p.paint(sl, m & (r < 0.45), hu=-750.0, suv=0.2)
    sc = (-45 * a["w"], yb + 35, a["z_liver"] - 5)
    sl, m, r = p.ellipsoid(sc, (42, 35, 48), rotation(-0.4), hu=25.0, suv=float(rng.uniform(1.2, 3.0)))
    p.paint(sl, m & (r < 0.6) & (p.canvas.coords(sl)[2] > sc[2] + 15), hu=-800.0, suv=0.2)
    lc = _jit(a, "liver", (72 * a["w"], yb + 5, a["z_liver"]))
    p.ellipsoid(
        lc,
        a["liver_semi"],
        _rot(a, "liver", -0.35, 0.1, 0.0),
        _w(a, "liver"),
        hu=a["liver_hu"],
        suv=a["liver_suv"],
        label=LIVER,
    )
    p.ellipsoid(
        _jit(a, "spleen", (-92 * a["w"], yb - 30, a["z_liver"] + 5)),
        a["spleen_semi"],
        _rot(a, "spleen", 0.5),
        _w(a, "spleen"),
        hu=a["spleen_hu"],
        suv=a["spleen_suv"],
        label=SPLEEN,
    )
    for side, lab in ((-1, KIDNEY_L), (1, KIDNEY_R)):
        name = "kidney_r" if side > 0 else "kidney_l"
        kc = _jit(a, name, (side * 72 * a["w"], yb - a["D"] + 70, a["z_kidney"] - (12 if side > 0 else 0)))
        sl, m, r = p.ellipsoid(
            kc,
            a["kidney_semi"],
            _rot(a, name, side * 0.35, 0.0, 0.15),
            _w(a, name),
            hu=a["kidney_hu"],
            suv=a["kidney_suv"],
            label=lab,
        )
        pelvis = ellipsoid_radius(p.canvas.coords(sl), (kc[0] - side * 10, kc[1] + 4, kc[2]), (9, 8, 20)) < 1
        p.paint(sl, m & pelvis, hu=20.0, suv=a["urine_suv"])
    bc = (0, yb + 22, z0 + 72 * h)
    p.ellipsoid(bc, a["bladder_semi"], hu=10.0, suv=a["urine_suv"])
    if a["male"]:
        p.ellipsoid(
            _jit(a, "prostate", (0, yb + 8, z0 + 28 * h)),
            a["prostate_semi"],
            _rot(a, "prostate"),
            _w(a, "prostate"),
            hu=42.0,
            suv=a["prostate_suv"],
            label=PROSTATE,
        )


ORGANS_JITTERED = ("lung_l", "lung_r", "heart", "liver", "spleen", "kidney_l", "kidney_r", "prostate")
# (no contrast, portal-venous, arterial) HU of blood, liver, spleen, kidney
CONTRAST_HU = {"none": (42, 58, 47, 35), "venous": (160, 115, 120, 170), "arterial": (300, 75, 110, 200)}


def _jit(a: dict, organ: str, centre) -> tuple[float, float, float]:
    """An organ's nominal centre moved by the patient's own offset for that organ (mm)."""
    x, y, z = (float(c + d) for c, d in zip(centre, a["shift"][organ]))
    return x, y, z


def _w(a: dict, organ: str) -> Deformation:
    return a["_warps"][organ]


def _rot(a: dict, organ: str, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    t = a["tilt"][organ]
    return rotation(yaw + t[0], pitch + t[1], roll + t[2])


def sample_anatomy(rng: np.random.Generator, settings: PhantomSettings) -> dict:
    """Draw one patient's anatomy, uptake and scanner parameters (a JSON-able dict)."""
    u = rng.uniform
    domain = "B" if u() < settings.second_domain_fraction else "A"
    h, w, dpt = u(0.84, 1.12), u(0.78, 1.25), u(0.8, 1.3)
    z0 = u(-40, 40)
    phase = str(rng.choice(list(CONTRAST_HU), p=[0.4, 0.4, 0.2]))
    blood_hu, liver_hu, spleen_hu, kidney_hu = (v + u(-15, 15) for v in CONTRAST_HU[phase])
    organ_scale = {o: u(0.85, 1.18) for o in ORGANS_JITTERED}
    s = lambda o, semi: tuple(float(x * organ_scale[o]) for x in semi)  # noqa: E731
    a: dict[str, Any] = dict(
        domain=domain,
        male=bool(u() < 0.6),
        h=h,
        w=w,
        z0=z0,
        contrast=phase,
        pose_deg=(u(-12, 12), u(-4, 4), u(-4, 4)),  # yaw (axial plane), pitch, roll of the patient
        W=160 * w,
        D=105 * dpt,
        y_body=u(-10, 10),
        fat_mm=u(5, 45),
        z_shoulder=z0 + 575 * h,
        z_lung=z0 + 470 * h,
        z_liver=z0 + 375 * h,
        z_kidney=z0 + 295 * h,
        lung_x=u(78, 94) * w,
        lung_semi=(u(52, 68) * w, u(68, 92) * dpt, u(85, 115) * h),
        fissure_slope=u(0.5, 1.3),
        fissure_offset=(u(-15, 25), u(-15, 25)),
        horizontal_fissure=u(15, 40),
        heart_semi=s("heart", (u(50, 62), u(40, 50), u(52, 66))),
        aorta_r=u(9, 15),
        liver_semi=s("liver", (u(80, 95), u(68, 82), u(58, 72))),
        spleen_semi=s("spleen", (u(24, 34), u(38, 54), u(42, 62))),
        kidney_semi=s("kidney_l", (u(23, 30), u(19, 25), u(46, 60))),
        bladder_semi=tuple(u(22, 50, size=3)),
        prostate_semi=s("prostate", (u(15, 21), u(13, 17), u(15, 20))),
        shift={o: rng.normal(scale=14.0, size=3) for o in ORGANS_JITTERED},
        tilt={o: rng.normal(scale=0.18, size=3) for o in ORGANS_JITTERED},
        blood_hu=blood_hu,
        liver_hu=liver_hu,
        spleen_hu=spleen_hu,
        kidney_hu=kidney_hu,
        muscle_suv=u(0.5, 1.1),
        lung_suv=u(0.25, 0.7),
        blood_suv=u(1.2, 2.4),
        myocardium_suv=u(1.0, 18.0),
        liver_suv=u(1.3, 3.2),
        spleen_suv=u(1.2, 2.6),
        kidney_factor=u(1.3, 3.0),
        urine_suv=u(6.0, 70.0),
        prostate_suv=u(1.2, 3.5),
        brain_suv=u(5.0, 13.0),
        pet_fwhm_mm=u(5.0, 7.5) if domain == "A" else u(7.5, 11.0),
        pet_noise=u(0.12, 0.25) if domain == "A" else u(0.25, 0.45),
        suv_scale=1.0 if domain == "A" else u(0.8, 1.2),
        ct_noise_hu=u(6, 15) if domain == "A" else u(18, 40),
        ct_offset_hu=0.0 if domain == "A" else u(-25, 25),
        ct_gain=1.0 if domain == "A" else u(0.93, 1.07),
    )
    a["kidney_suv"] = a["liver_suv"] * a["kidney_factor"]  # parenchyma above liver: excretion
    # each organ's own small-scale shape irregularity (lobulation), not stored in the metadata
    a["_warps"] = {
        o: Deformation.random(rng, n=5, amplitude_mm=u(4.0, 10.0), wavelength_mm=(40.0, 120.0)) for o in ORGANS_JITTERED
    }
    a["ct_texture_hu"], a["pet_heterogeneity"] = u(5.0, 25.0), u(0.05, 0.3)
    return a


def generate_case(rng: np.random.Generator, settings: PhantomSettings = PhantomSettings()):
    """Return ``(ct, pet, label, meta)``: CT int16 HU, PET float32 SUV (synthetic), label uint8 0..13.

    All three share one grid: ``settings.shape`` voxels, a diagonal RAS affine with ``settings.spacing``,
    x and y centred on the body, z from the pelvis up to the head.
    """
    a = sample_anatomy(rng, settings)
    shape = settings.shape
    origin = (-(shape[0] - 1) / 2 * settings.spacing[0], -(shape[1] - 1) / 2 * settings.spacing[1], 0.0)
    pose = rotation(*np.radians(a["pose_deg"]))
    canvas = Canvas(
        shape,
        settings.spacing,
        origin,
        Deformation.random(rng, n=6, amplitude_mm=15.0),
        pose,
        pivot=(0.0, 0.0, a["z_liver"]),
    )
    p = Painter(canvas)
    _body(p, a)
    _lungs(p, a)
    _abdomen(p, rng, a)  # liver and spleen domes push the lung bases up (diaphragm)
    _heart_aorta(p, a)
    p.label[~p.body] = 0
    lesions = add_lesions(p, rng, a, settings)
    add_benign_uptake(p, rng, a)
    ct, pet = _acquire(p, rng, a, np.asarray(settings.spacing))
    meta = {
        "synthetic": True,
        "generator": "mudo_app.synth.phantom",
        "settings": asdict(settings),
        "anatomy": _jsonable(a),
        "lesions": lesions,
    }
    aff = canvas.affine
    return Volume(ct, aff), Volume(pet, aff.copy()), Volume(p.label, aff.copy()), meta


def _acquire(p: Painter, rng, a: dict, spacing: np.ndarray):
    """Image formation: PET blur + count noise; CT partial volume + noise + domain calibration."""

    def smooth_field(scale_mm: float) -> np.ndarray:  # zero-mean, unit-std smooth random field
        f = ndimage.gaussian_filter(rng.standard_normal(p.suv.shape, dtype=np.float32), scale_mm / spacing)
        return f / max(float(f.std()), 1e-6)

    suv = p.suv * np.maximum(1.0 + np.float32(a["pet_heterogeneity"]) * smooth_field(12.0), 0.2)
    hu = p.hu + np.float32(a["ct_texture_hu"]) * smooth_field(6.0) * p.body
    sigma = a["pet_fwhm_mm"] / 2.3548 / spacing
    pet = ndimage.gaussian_filter(suv * np.float32(a["suv_scale"]), sigma, mode="constant")
    noise = rng.standard_normal(pet.shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, 0.6 * 4.0 / spacing) * np.float32(1.6 * np.sqrt(4.0 / spacing.mean()))
    pet = np.maximum(pet + np.float32(a["pet_noise"]) * np.sqrt(np.maximum(pet, 0)) * noise, 0).astype(np.float32)
    ct = ndimage.gaussian_filter(hu, 0.8 / spacing)
    ct = ct * np.float32(a["ct_gain"]) + np.float32(a["ct_offset_hu"])
    ct += np.float32(a["ct_noise_hu"]) * rng.standard_normal(ct.shape, dtype=np.float32)
    ct = np.clip(np.round(ct), -1024, 3071).astype(np.int16)
    return ct, pet


def _jsonable(d: dict) -> dict:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k.startswith("_"):
            continue
        if isinstance(v, dict):
            out[k] = _jsonable(v)
        elif isinstance(v, (tuple, list, np.ndarray)):
            out[k] = [round(float(x), 3) for x in v]
        elif isinstance(v, (bool, str)):
            out[k] = v
        else:
            out[k] = round(float(v), 3)
    return out

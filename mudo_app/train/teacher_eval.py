"""Zero-shot evaluation of a 3D SAM teacher on labelled cases: simulated clicks per object, and the
answer to an imperfect mask prompt alone (the property MuDuo's CT branch depends on)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm.auto import tqdm

from mudo_app.evaluation.autopet import CONNECTIVITY_18
from mudo_app.evaluation.metrics import binary_dice
from mudo_app.io.datastore import Case
from mudo_app.io.volume import Volume, resample_to_grid
from mudo_app.labels import ID_TO_NAME, LABEL_IDS, LESION
from mudo_app.models.sam3d import CropGrid, InputContract, Sam3D, Sam3DPredictor
from mudo_app.prompts.clicks import first_click, next_click
from mudo_app.train.teachers import modality_volume


def click_objects(label: np.ndarray):
    """(class id, object mask) pairs to evaluate: each organ class as one object, each lesion
    (18-connected component of label 13) as its own object."""
    for cls in LABEL_IDS:
        mask = label == cls
        if not mask.any():
            continue
        if cls != LESION:
            yield cls, mask
            continue
        comps, n = ndimage.label(mask, structure=CONNECTIVITY_18)
        for i in range(1, n + 1):
            yield cls, comps == i


FIRST_CLICKS = ("deepest", "random")


def evaluate_clicks(
    model: Sam3D,
    contract: InputContract,
    cases: Sequence[Case],
    modality: str,
    n_clicks: Sequence[int] = (1, 3),
    progress: bool = True,
    first: str = "deepest",
    seed: int = 0,
    multimask: bool = False,
) -> dict[int, dict[str, float]]:
    """Zero-shot Dice per class after k clicks, on the full case grid.

    Each object (an organ, or one lesion) gets its own session: the first click at the object's deepest
    voxel (``first="deepest"``) or at a random voxel of it (``"random"``, drawn from ``seed``: users
    do not click at the deepest point), later clicks at the deepest voxel of the largest error, the
    previous low-res logits fed back. ``multimask``: the one-click answer is the decoder's multimask
    candidate with the highest predicted IoU (``Sam3DPredictor(one_click_multimask=True)``, SAM's answer
    to an ambiguous prompt; meaningful for teachers trained with ``TeacherPretrainSettings.multimask``),
    later clicks use the single output.
    Returns ``{k: {class name: mean Dice over objects}}``.
    """
    if first not in FIRST_CLICKS:
        raise ValueError(f"first must be one of {FIRST_CLICKS}, got {first!r}")
    rng = np.random.default_rng(seed) if first == "random" else None
    pred = Sam3DPredictor(model, contract, one_click_multimask=multimask)
    scores: dict[int, dict[str, list[float]]] = {k: {} for k in n_clicks}
    for case in tqdm(cases, desc=f"evaluate {modality} teacher", unit="case", disable=not progress):
        vol = modality_volume(case, modality)
        pred.set_image(vol.array, vol.affine, modality)
        for cls, target in click_objects(case.require_label().array):
            clicks, labels, mask_input = [first_click(target, rng).tolist()], [1], None
            for k in range(1, max(n_clicks) + 1):
                res = pred.predict(points=clicks, labels=labels, mask_input=mask_input)
                if k in scores:
                    scores[k].setdefault(ID_TO_NAME[cls], []).append(binary_dice(res.mask, target))
                nxt = next_click(target, res.mask)
                if nxt is None:
                    nxt = (np.array(clicks[-1]), labels[-1])
                clicks.append(nxt[0].tolist())
                labels.append(int(nxt[1]))
                mask_input = res.low_res_logits
    return {k: {name: float(np.mean(v)) for name, v in per.items()} for k, per in scores.items()}


def object_crop(
    case: Case, modality: str, contract: InputContract, target: np.ndarray
) -> tuple[CropGrid, torch.Tensor, np.ndarray]:
    """The teacher's view of one click object (``target``: (X, Y, Z) bool on the case grid, from
    :func:`click_objects`): the contract's crop centred on the object's deepest voxel, its normalised
    image (1, 1, S, S, S) and the object on the crop grid (S, S, S) bool, in the crop's axis order."""
    label = case.require_label()
    centre = (label.affine @ [*first_click(target), 1])[:3]
    crop = CropGrid(label.affine, centre, contract.spacing_mm, contract.crop)
    image = contract.normalise(crop.sample(modality_volume(case, modality), contract.fill))
    clicked = Volume(target.astype(np.uint8), label.affine)
    truth = resample_to_grid(clicked, (crop.size,) * 3, crop.affine, order=0).array > 0
    return crop, torch.from_numpy(image)[None, None], truth


def degraded_prompt(target: torch.Tensor, low: float = 0.4, high: float = 0.7) -> tuple[torch.Tensor, float] | None:
    """A student-like imperfect mask prompt of known quality for a (S, S, S) binary ``target``: its soft
    mask at the decoder's resolution (S/4), shifted by 1, 2, ... low-res voxels along one axis, then
    the next, until the prompt's Dice against the target (prompt > 0.5, upsampled nearest) lies in
    [``low``, ``high``]. Returns ``(prompt (1, 1, S/4, S/4, S/4) in [0, 1], its Dice)``, or None when
    no shift of up to a quarter of the crop lands there.
    """
    soft = F.avg_pool3d(target[None, None].float(), 4)
    truth = target.bool()
    for shift in range(1, soft.shape[-1] // 4 + 1):
        for axis in (2, 3, 4):
            m = torch.roll(soft, shifts=shift, dims=axis)
            up = F.interpolate(m, scale_factor=4, mode="nearest")[0, 0] > 0.5
            d = 2 * float((up & truth).sum()) / max(1.0, float(up.sum() + truth.sum()))
            if low <= d <= high:
                return m, d
    return None


@torch.no_grad()
def evaluate_mask_prompts(
    model: Sam3D, contract: InputContract, cases: Sequence[Case], modality: str, progress: bool = True
) -> dict[str, float | int]:
    """MuDuo's CT branch property: given an imperfect mask prompt of Dice d (0.4 <= d <= 0.7) and no
    click, does the teacher answer better than d?

    Per organ object of each case: a crop centred on its deepest voxel, the :func:`degraded_prompt` of
    its crop-frame target (2 mm crop grid), the teacher's answer (upsampled logits > 0) scored on that
    grid. Returns the mean prompt Dice, the mean answer Dice, the fraction of objects whose answer is
    better, and the number of objects.
    """
    prompts, answers = [], []
    for case in tqdm(cases, desc=f"mask prompts {modality}", unit="case", disable=not progress):
        for cls, target in click_objects(case.require_label().array):
            if cls == LESION:
                continue
            _, image, truth = object_crop(case, modality, contract, target)
            crop_target = torch.from_numpy(truth)
            made = degraded_prompt(crop_target)
            if made is None:
                continue
            prompt, d = made
            logits, _ = model.decode(model.image_encoder(image), points=None, mask=prompt)
            up = F.interpolate(logits, size=crop_target.shape, mode="trilinear", align_corners=False)[0, 0] > 0
            prompts.append(d)
            answers.append(binary_dice(up.numpy(), crop_target.numpy()))
    p, a = np.array(prompts), np.array(answers)
    return {
        "objects": int(len(p)),
        "prompt_dice": float(p.mean()) if len(p) else float("nan"),
        "answer_dice": float(a.mean()) if len(a) else float("nan"),
        "answer_better_fraction": float((a > p).mean()) if len(p) else float("nan"),
    }

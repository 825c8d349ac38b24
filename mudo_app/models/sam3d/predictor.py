"""Interactive 3D SAM predictor: encode an image once, answer many clicks (cf. SamPredictor).

    predictor = Sam3DPredictor(model, SAM_MED3D_CT)
    predictor.set_image(ct_array, affine, modality="CT")          # checks, no encoding yet
    res = predictor.predict(points=[[60, 41, 100]], labels=[1])   # encodes the crop around the click
    res = predictor.predict(points=[[60, 41, 100], [70, 41, 100]], labels=[1, 0],
                            mask_input=res.low_res_logits)         # same crop: embedding reused

Points are voxel indices ``[i, j, k]`` of the volume given to ``set_image`` (the array's own axis
order). Results (``probability``, ``mask``) are on exactly that volume's grid.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from mudo_app.errors import InputError
from mudo_app.io.volume import Volume
from mudo_app.models.sam3d.build import Sam3D
from mudo_app.models.sam3d.contract import CropGrid, InputContract

CROP_MARGIN = 8  # voxels: a click this close to the crop's border triggers a new crop


@dataclass
class Prediction:
    probability: NDArray[Any]  # (X, Y, Z) float32 on the input grid, 0 outside the crop
    mask: NDArray[Any]  # (X, Y, Z) bool, probability > 0.5
    iou: float  # the model's IoU estimate
    low_res_logits: torch.Tensor  # (1, 1, 32, 32, 32) in the crop frame: feed back as mask_input
    crop: CropGrid


class Sam3DPredictor:
    """Interactive segmentation with a 3D SAM: ``set_image`` once, ``predict`` many times.

    Args:
        model: a :class:`Sam3D` (official weights or a stand-in), used in eval mode without gradients.
        contract: the model's input contract (crop size and spacing in mm, modality, intensity
            normalisation), e.g. ``SAM_MED3D_CT``.
        device: where the model runs.
        cache_size: image embeddings kept (one per crop position, least recently used dropped).
        one_click_multimask: answer a single click without a mask prompt with the multimask candidate
            of the highest predicted IoU, as SAM answers an ambiguous prompt (for models trained so:
            :attr:`mudo_app.models.teachers.Teacher.one_click_multimask`).

    Coordinate frames: clicks are voxel indices ``[i, j, k]`` of the volume given to ``set_image``
    (its own axis order); the predictor resamples a ``crop``^3 crop at the contract's spacing around
    them (world mm through the volume's affine) and maps the answer back onto exactly that volume's
    grid. ``Prediction.low_res_logits`` stays in the crop's frame (feed it back as ``mask_input``).
    """

    def __init__(
        self,
        model: Sam3D,
        contract: InputContract,
        device: str = "cpu",
        cache_size: int = 4,
        one_click_multimask: bool = False,
    ):
        if model.config.img_size != contract.crop:
            raise ValueError(f"model input {model.config.img_size}^3 does not match contract crop {contract.crop}")
        self.model = model.to(device).eval()
        self.contract = contract
        self.device = device
        self.cache_size = cache_size
        self.one_click_multimask = one_click_multimask
        self._volume: Volume | None = None
        # crop key (its centre in world mm) -> (CropGrid, embedding)
        self._cache: OrderedDict[tuple[float, ...], tuple[CropGrid, torch.Tensor]] = OrderedDict()
        self._crop_key: tuple[float, ...] | None = None
        self.encoder_calls = 0

    # ---- image ---------------------------------------------------------------------------------
    def set_image(self, volume: NDArray[Any], affine: NDArray[Any], modality: str) -> None:
        """Register a 3-D volume ``[i, j, k]`` with its (4, 4) voxel-to-world affine; clears the cache."""
        if modality.upper() != self.contract.modality:
            raise InputError(f"{self.contract.name} takes {self.contract.modality} images, got {modality}")
        arr = np.asarray(volume)
        if arr.ndim != 3:
            raise InputError(f"image must be a 3-D volume, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise InputError(f"image has {int((~np.isfinite(arr)).sum())} NaN or infinite voxels")
        self._volume = Volume(arr.astype(np.float32, copy=False), affine)
        self._cache.clear()
        self._crop_key = None

    @property
    def is_image_set(self) -> bool:
        return self._volume is not None

    @property
    def affine(self) -> NDArray[Any]:
        """The (4, 4) voxel-to-world affine of the image given to ``set_image``."""
        if self._volume is None:
            raise InputError("no image: call set_image() first")
        return self._volume.affine

    def _image(self) -> Volume:
        if self._volume is None:
            raise InputError("no image: call set_image() first")
        return self._volume

    def _voxel_to_world(self, ijk: NDArray[Any]) -> NDArray[Any]:
        world: NDArray[Any] = (self._image().affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]
        return world

    def _embedding_for(self, centre_world: NDArray[Any]) -> tuple[CropGrid, torch.Tensor]:
        key = tuple(float(c) for c in np.round(centre_world, 3))
        if key not in self._cache:
            volume = self._image()
            crop = CropGrid(volume.affine, centre_world, self.contract.spacing_mm, self.contract.crop)
            image = self.contract.normalise(crop.sample(volume, self.contract.fill))
            with torch.no_grad():
                emb = self.model.image_encoder(torch.from_numpy(image)[None, None].to(self.device))
            self.encoder_calls += 1
            self._cache[key] = (crop, emb)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        self._crop_key = key
        return self._cache[key]

    # ---- prompts -------------------------------------------------------------------------------
    def _check_points(
        self, points: Sequence[Sequence[float]] | NDArray[Any], labels: Sequence[int] | NDArray[Any]
    ) -> tuple[NDArray[Any], NDArray[Any]]:
        pts = np.asarray(points, dtype=np.float64)
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
        if pts.size == 0:
            pts = pts.reshape(0, 3)
        if pts.ndim != 2 or pts.shape[-1] != 3:
            raise InputError(f"points must be a list of [i, j, k] voxel indices, got shape {pts.shape}")
        if len(lab) != len(pts):
            raise InputError(f"{len(pts)} points but {len(lab)} labels")
        if not set(lab.tolist()) <= {0, 1}:
            raise InputError(f"labels must be 1 (foreground) or 0 (background), got {sorted(set(lab.tolist()))}")
        shape = np.array(self._image().shape)
        outside = [p.tolist() for p in pts if np.any(p < 0) or np.any(p > shape - 1)]
        if outside:
            raise InputError(f"click(s) {outside} outside the volume of shape {tuple(shape.tolist())}")
        return pts, lab

    def predict(
        self,
        points: Sequence[Sequence[float]] = (),
        labels: Sequence[int] = (),
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> Prediction:
        """Segment from clicks (voxel indices of the input volume) and/or a low-res mask of the current crop.

        The crop is centred on the mean of the positive clicks (else of all clicks) unless every click
        already lies inside the current crop; its image embedding is computed once and cached.
        ``mask_input`` (low-res logits of an earlier result) is used only while the crop stays the same.
        With ``multimask_output`` (or one click and no mask prompt when the predictor was built with
        ``one_click_multimask``) the candidate with the highest predicted IoU is returned.
        """
        if self._volume is None:
            raise InputError("no image: call set_image() first")
        pts, lab = self._check_points(points, labels)
        if len(pts) == 0 and mask_input is None:
            raise InputError("give at least one click or a mask prompt")
        current = self._cache.get(self._crop_key) if self._crop_key else None
        world = self._voxel_to_world(pts) if len(pts) else np.zeros((0, 3))
        if current is not None and (len(pts) == 0 or current[0].contains(current[0].world_to_crop(world), CROP_MARGIN)):
            crop, emb = self._embedding_for(current[0].centre_world)
        elif len(pts):
            anchor = world[lab == 1] if (lab == 1).any() else world
            crop, emb = self._embedding_for(anchor.mean(0))
            mask_input = None  # a new crop: the earlier low-res mask belongs to another frame
        else:
            raise InputError("a mask prompt alone needs a crop from an earlier click")
        coords = crop.world_to_crop(world) if len(pts) else None
        multimask_output = multimask_output or (self.one_click_multimask and len(pts) == 1 and mask_input is None)
        with torch.no_grad():
            pt = None
            if coords is not None:
                pt = (
                    torch.from_numpy(coords).float()[None].to(self.device),
                    torch.from_numpy(lab)[None].to(self.device),
                )
            mk = None if mask_input is None else torch.as_tensor(mask_input, dtype=torch.float32).to(self.device)
            logits, iou = self.model.decode(emb, points=pt, mask=mk, multimask_output=multimask_output)
            best = int(iou[0].argmax())
            low = logits[:, best : best + 1]
            prob = torch.sigmoid(F.interpolate(low, size=(crop.size,) * 3, mode="trilinear", align_corners=False))
        probability = crop.to_volume_grid(prob[0, 0].cpu(), self._volume.shape, self._volume.affine)
        return Prediction(probability, probability > 0.5, float(iou[0, best]), low.cpu(), crop)

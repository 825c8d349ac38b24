"""One 3D SAM implementation serving SAM-Med3D (CT) and SegAnyPET (PET)."""

from mudo_app.models.sam3d.build import SAM3D_CONFIGS, Sam3D, Sam3DConfig, build_sam3d, load_strict, read_state_dict
from mudo_app.models.sam3d.contract import (
    SAM_MED3D_CT,
    SEGANYPET_PET,
    STANDIN_CT,
    STANDIN_PET,
    CropGrid,
    InputContract,
)
from mudo_app.models.sam3d.predictor import Prediction, Sam3DPredictor

__all__ = [
    "SAM3D_CONFIGS",
    "Sam3D",
    "Sam3DConfig",
    "build_sam3d",
    "load_strict",
    "read_state_dict",
    "SAM_MED3D_CT",
    "SEGANYPET_PET",
    "STANDIN_CT",
    "STANDIN_PET",
    "CropGrid",
    "InputContract",
    "Prediction",
    "Sam3DPredictor",
]

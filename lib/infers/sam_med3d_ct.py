"""Infer task ``sam_med3d_ct``: click refinement through the CT teacher (SAM-Med3D, or its stand-in)."""

from lib.configs.server import Resources
from lib.infers.sam_click import SamClickInfer


class SamMed3DCTInfer(SamClickInfer):
    modality = "CT"

    def __init__(self, resources: Resources):
        super().__init__(resources, "SAM-Med3D (CT teacher): segment a structure from foreground/background clicks")

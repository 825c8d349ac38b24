"""Infer task ``seganypet_pet``: click refinement through the PET teacher (SegAnyPET, or its stand-in)."""

from lib.configs.server import Resources
from lib.infers.sam_click import SamClickInfer


class SegAnyPETInfer(SamClickInfer):
    modality = "PET"

    def __init__(self, resources: Resources):
        super().__init__(
            resources,
            "SegAnyPET (PET teacher): segment a structure from foreground/background clicks "
            "on the case's PET (clicks in the CT's voxel indices; one grid)",
        )

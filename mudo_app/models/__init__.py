"""Networks: the 2-channel student (and, later, the 3D SAM teachers and the PET prompt network)."""

from mudo_app.models.student import STUDENTS, build_student

__all__ = ["STUDENTS", "build_student"]

"""Synthetic whole-body PET/CT phantoms (the PET is synthetic: no real PET volume ships here)."""

from mudo_app.synth.phantom import PhantomSettings, generate_case
from mudo_app.synth.writers import LAYOUTS, case_rng, generate_cases, write_dataset

__all__ = ["PhantomSettings", "generate_case", "generate_cases", "LAYOUTS", "case_rng", "write_dataset"]

"""Load the 3D SAM conformance fixture (``shared/specs/sam3d``): deterministic weights and inputs.

Used by the conformance tests and by the benchmark, so both check exactly the same model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch

from mudo_app.models.loading import load_strict
from mudo_app.models.sam3d.build import Sam3D, build_sam3d


def fixture_module(specs: Path) -> ModuleType:
    """The fixture's ``deterministic_weights`` module (weights and inputs as pure functions)."""
    path = Path(specs) / "deterministic_weights.py"
    spec = importlib.util.spec_from_file_location("deterministic_weights", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"3D SAM conformance fixture not loadable: {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def deterministic_model(specs: Path, dw: ModuleType) -> Sam3D:
    """``vit_b_ori`` loaded strictly with the fixture's deterministic weights, in eval mode."""
    model = build_sam3d("vit_b_ori")
    arrays = dw.state_dict_arrays(dw.read_spec(Path(specs) / "keys_vit_b_ori.tsv"))
    load_strict(model, {k: torch.from_numpy(v) for k, v in arrays.items()}, "deterministic weights")
    return model.eval()

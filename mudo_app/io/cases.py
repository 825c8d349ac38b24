"""Folders of PET/CT cases to predict, and a reader that loads the next case while this one is used.

Torch-free on purpose: ``muduo predict`` starts reading before it imports the network's libraries
(gzip decompression runs without the interpreter lock, so the files arrive while the imports run).

Two folder layouts are recognised (axis order and grids as in :mod:`mudo_app.io.volume`):

* nnU-Net: ``<id>_0000.nii.gz`` (CT, HU) and ``<id>_0001.nii.gz`` (PET, SUV) side by side (``.nii``
  too), as in ``imagesTs/``;
* a MuDuo datastore (:mod:`mudo_app.io.datastore`): ``<id>.nii.gz`` (CT) and ``pet/<id>.nii.gz``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mudo_app.errors import InputError
from mudo_app.io.datastore import PetCtDatastore
from mudo_app.io.volume import Volume, load_volume

CHANNELS = {"_0000": "CT", "_0001": "PET"}  # nnU-Net channel suffixes of this product


@dataclass(frozen=True)
class CaseFiles:
    """One case's input files. ``problem`` says why the case cannot be read (a file is missing)."""

    case_id: str
    ct: Path
    pet: Path
    problem: str | None = None


def channel_files(folder: Path) -> dict[str, dict[str, Path]]:
    """nnU-Net channel files of a folder: ``{case: {"_0000": CT path, "_0001": PET path}}`` (either may
    be missing), for ``<case>_0000.nii.gz`` / ``.nii`` names; hidden files are skipped."""
    found: dict[str, dict[str, Path]] = {}
    for path in folder.iterdir():
        for suffix in (".nii.gz", ".nii"):
            stem = path.name[: -len(suffix)] if path.name.endswith(suffix) else None
            if stem and stem[-5:] in CHANNELS and not path.name.startswith("."):
                found.setdefault(stem[:-5], {})[stem[-5:]] = path
                break
    return found


def _nnunet_cases(folder: Path) -> list[CaseFiles]:
    found = channel_files(folder)
    cases = []
    for cid in sorted(found):
        files = found[cid]
        missing = [f"{cid}{s} ({CHANNELS[s]})" for s in CHANNELS if s not in files]
        problem = f"missing {', '.join(missing)}" if missing else None
        ct, pet = (files.get(s, folder / f"{cid}{s}.nii.gz") for s in CHANNELS)
        cases.append(CaseFiles(cid, ct, pet, problem))
    return cases


def find_cases(folder: str | os.PathLike[str]) -> list[CaseFiles]:
    """The cases of an nnU-Net-style or datastore folder, sorted by id.

    Raises :class:`InputError` when the folder does not exist or holds no case. A case with only one
    of its two files is returned with ``problem`` set (reported and skipped, not silently dropped).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"input folder not found: {folder}")
    cases = _nnunet_cases(folder)
    if not cases and (folder / "pet").is_dir():
        store = PetCtDatastore(folder)
        cases = [CaseFiles(cid, store.ct_path(cid), store.pet_path(cid)) for cid in store.case_ids()]
    if not cases:
        raise InputError(
            f"no cases in {folder}: expected <id>_0000.nii.gz (CT) and <id>_0001.nii.gz (PET) files, "
            "or a datastore (<id>.nii.gz and pet/<id>.nii.gz)"
        )
    return cases


def check_output_folder(input_folder: str | os.PathLike[str], output_folder: str | os.PathLike[str]) -> Path:
    """The output folder, refused (:class:`InputError`) when it is the input folder or inside it
    (its label files would be taken for cases by the next run)."""
    src, out = Path(input_folder).resolve(), Path(output_folder).resolve()
    if out == src or src in out.parents:
        raise InputError(f"output folder {output_folder} is inside the input folder {input_folder}: choose another")
    if out.exists() and not out.is_dir():
        raise InputError(f"output {output_folder} exists and is not a folder")
    return out


class CaseReader:
    """Iterate ``(files, (ct, pet))`` or ``(files, InputError)`` over ``cases``, reading ahead.

    The first ``ahead`` cases start reading when the reader is made; each step then starts the next
    one, so while the caller works on case n, case n + ``ahead`` is read in a background thread (CT
    and PET in parallel). Only an :class:`InputError` (a bad case) is handed back as a value; any
    other failure is raised.
    """

    def __init__(self, cases: Sequence[CaseFiles], ahead: int = 1):
        if ahead < 1:
            raise ValueError(f"ahead must be at least 1, got {ahead}")
        self.cases = list(cases)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="case-reader")
        self._pending: list[tuple[Future[Volume], Future[Volume]] | InputError] = []
        self._next = 0
        for _ in range(ahead):
            self._submit()

    def _submit(self) -> None:
        if self._next >= len(self.cases):
            return
        files = self.cases[self._next]
        self._next += 1
        if files.problem:
            self._pending.append(InputError(f"case {files.case_id}: {files.problem}"))
            return
        read = [
            self._pool.submit(load_volume, path, f"case {files.case_id} {what}", dtype=np.float32, contiguous=False)
            for what, path in (("CT", files.ct), ("PET", files.pet))
        ]
        self._pending.append((read[0], read[1]))

    def __iter__(self) -> Iterator[tuple[CaseFiles, tuple[Volume, Volume] | InputError]]:
        try:
            for files in self.cases:
                pending = self._pending.pop(0)
                self._submit()
                if isinstance(pending, InputError):
                    yield files, pending
                    continue
                try:
                    yield files, (pending[0].result(), pending[1].result())
                except InputError as exc:
                    yield files, exc
        finally:
            self.close()

    def close(self) -> None:
        """Stop reading ahead (reads under way finish; their results are dropped)."""
        for pending in self._pending:
            if not isinstance(pending, InputError):
                for future in pending:
                    future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)

"""Atomic file replacement: a reader sees the old file or the new one, never a half-written one.

    with atomic_write(path) as tmp:      # tmp: a fresh file in path's folder, same suffix
        torch.save(obj, tmp)             # write it by name, with any library
    # here path holds the new content (fsynced, renamed over path); on an error nothing changed

Every file this project publishes goes through :func:`atomic_write`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_PREFIX = ".tmp-"  # temporary files start with this (hidden; listings skip them)


def _suffix(path: Path) -> str:
    """``.nii.gz`` for ``x.nii.gz`` (libraries pick the format from the name), else the last suffix."""
    return "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix


@contextmanager
def atomic_write(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder (created if needed) with ``path``'s suffix; when the
    block ends without an error the file is flushed to disk and renamed over ``path`` (atomic on POSIX);
    on an error it is removed and ``path`` is left as it was. The name is unique (``mkstemp``), so
    concurrent writers of one target never share a temporary file: the last rename wins.

    Args:
        path: the file to publish.
        suffix: the temporary file's suffix when a writer needs another than ``path``'s own (e.g.
            ``.nii.gz`` for a NIfTI written to a name without one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{path.name}.", suffix=_suffix(path) if suffix is None else suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every file system lets a folder be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike[str], data: object) -> Path:
    """Write ``data`` as indented JSON (a final newline) to ``path`` through :func:`atomic_write`."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return Path(path)


def file_digest(path: str | os.PathLike[str], length: int = 16) -> str:
    """The first ``length`` hex digits of a file's SHA-256 (e.g. a checkpoint's identity), "" when it is missing."""
    path = Path(path)
    if not path.is_file():
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]

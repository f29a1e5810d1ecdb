"""Writing files without losing what the user had: temp file in the same folder, then an atomic rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import CfnsrError


def check_writable(path: str | os.PathLike, force: bool) -> Path:
    """Refuse to overwrite an existing file unless ``force``; create the parent folder."""
    path = Path(path)
    if path.exists() and not force:
        raise CfnsrError(f"{path} already exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``, on failure removed.

    A reader never sees a half-written file, and an existing file survives a failed write.
    """
    path = check_writable(path, force)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; the result gets the mode open() would give it
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str, force: bool = True) -> Path:
    with atomic_path(path, force) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj, force: bool = True) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", force)


def save_npy(path: str | os.PathLike, array, force: bool = True) -> str:
    """``np.save`` through ``atomic_path``, flushed to disk; returns the sha256 of the array's bytes."""
    import numpy as np

    with atomic_path(path, force) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    return sha256_bytes(np.ascontiguousarray(array).tobytes())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

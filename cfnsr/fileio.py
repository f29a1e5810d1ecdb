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


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_not_inputs(outputs, inputs) -> None:
    """Refuse, whatever --force says, an output path that is one of the command's inputs (the same path, or the same
    file through a link or a second name): a report must never replace the model, checkpoint or data it was made
    from."""
    ins = [Path(i) for i in inputs if i is not None]
    for out in (Path(o) for o in outputs if o is not None):
        for i in ins:
            if _same(out, i):
                raise CfnsrError(f"output {out} would overwrite the input {i}: choose another output path")


def check_writable(path: str | os.PathLike, force: bool) -> Path:
    """Refuse to overwrite an existing file unless ``force``; create the parent folder."""
    path = Path(path)
    if path.exists() and not force:
        raise CfnsrError(f"{path} already exists; pass --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CfnsrError(f"cannot write {path}: {e.strerror or e}") from e
    return path


def probe_writable(path: str | os.PathLike) -> None:
    """Before long work: a file can really be created beside ``path`` (os.access says yes to root on read-only
    mounts, so this writes and removes one)."""
    folder = Path(path).resolve().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise CfnsrError(f"cannot write {path}: {e.strerror or e} ({folder})") from e


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

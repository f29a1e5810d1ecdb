"""Helpers of the fault corpus (tests/faults/test_*.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

CLIP = "Actor_01/01-01-05-02-01-01-01.mp4"  # angry, held-out actor 1


def _hash(path: Path) -> str:
    h = hashlib.sha256()
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _small_cache(src, dst: Path, actors=(1, 2), **changes) -> Path:
    """A cache of ``actors`` only, its arrays hard-linked to ``src`` (so a fault planted here never reaches the
    session's cache: a changed file is written anew, never in place)."""
    m = json.loads((src.root / "manifest.json").read_text())
    m["clips"] = [c for c in m["clips"] if c["actor"] in actors]
    for kind in ("frames", "mfcc"):
        (dst / kind).mkdir(parents=True)
        for c in m["clips"]:
            os.link(src.root / kind / f"{c['stem']}.npy", dst / kind / f"{c['stem']}.npy")
    shutil.copy(src.root / "spec.json", dst / "spec.json")
    m.update(changes)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def _replace(path: Path, data: bytes | None = None, array: np.ndarray | None = None) -> None:
    path.unlink()
    if array is not None:
        np.save(path, array)
    else:
        path.write_bytes(data)



"""RAVDESS layout: file names, actor folders, OpenFace landmark CSVs.

A RAVDESS file name has seven two-digit fields, e.g. ``01-01-06-01-02-01-12.mp4``: modality (01 full-AV,
02 video-only, 03 audio-only), vocal channel (01 speech, 02 song), emotion (01-08), intensity (01 normal,
02 strong), statement (01, 02), repetition (01, 02), actor (01-24; odd male, even female).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifact import EMOTIONS
from ..errors import DataError

_FIELDS = ("modality", "vocal_channel", "emotion", "intensity", "statement", "repetition", "actor")
_RANGES = {
    "modality": (1, 3),
    "vocal_channel": (1, 2),
    "emotion": (1, 8),
    "intensity": (1, 2),
    "statement": (1, 2),
    "repetition": (1, 2),
    "actor": (1, 24),
}


@dataclass(frozen=True, order=True)
class ClipName:
    modality: int
    vocal_channel: int
    emotion: int  # 1-8 as in the file name
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def label(self) -> int:
        """Class id 0-7 (emotion code minus one)."""
        return self.emotion - 1

    @property
    def emotion_name(self) -> str:
        return EMOTIONS[self.label]

    @property
    def stem(self) -> str:
        return "-".join(f"{getattr(self, f):02d}" for f in _FIELDS)

    @property
    def is_full_av(self) -> bool:
        return self.modality == 1

    @property
    def is_speech(self) -> bool:
        return self.vocal_channel == 1


def parse_name(name: str | Path) -> ClipName:
    """Parse a RAVDESS file name (a path is fine; the extension is ignored)."""
    stem = Path(name).name.split(".")[0]
    parts = stem.split("-")
    if len(parts) != 7 or not all(len(p) == 2 and p.isdigit() for p in parts):
        raise DataError(
            f"{Path(name).name!r} is not a RAVDESS file name: expected seven two-digit fields joined by '-', "
            "e.g. 01-01-06-01-02-01-12.mp4"
        )
    values = dict(zip(_FIELDS, (int(p) for p in parts)))
    for field, (lo, hi) in _RANGES.items():
        if not lo <= values[field] <= hi:
            raise DataError(f"{Path(name).name!r}: {field} is {values[field]:02d}, expected {lo:02d}-{hi:02d}")
    if values["emotion"] == 1 and values["intensity"] == 2:
        raise DataError(f"{Path(name).name!r}: RAVDESS has no strong intensity for neutral (emotion 01)")
    return ClipName(**values)


def find_clips(raw_dir: str | Path, include_song: bool = False, log=None) -> list[tuple[Path, ClipName]]:
    """Full-AV clips under ``raw_dir/Actor_XX/`` (video-only and audio-only files are skipped, as MSAF did).

    Speech only by default; ``include_song`` adds the song clips. Sorted by name.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"RAVDESS folder {raw_dir} does not exist")
    actor_dirs = sorted(p for p in raw_dir.glob("Actor_*") if p.is_dir())
    if not actor_dirs:
        raise DataError(f"no Actor_XX folders in {raw_dir}: unpack the RAVDESS Video_Speech_Actor_XX.zip files there")
    clips = []
    for d in actor_dirs:
        for f in sorted(p for p in d.iterdir() if p.suffix.lower() == ".mp4"):
            if not f.is_file():  # a folder named *.mp4, a dangling link, or a symlink loop
                if log is not None:
                    log(f"note: skipped {f}: {'a symlink loop or a dangling link' if f.is_symlink() else 'not a file'}")
                continue
            name = parse_name(f)
            if not name.is_full_av or (not name.is_speech and not include_song):
                continue
            if f"Actor_{name.actor:02d}" != d.name:
                raise DataError(f"{f} names actor {name.actor:02d} but lies in {d.name}")
            clips.append((f, name))
    return sorted(clips, key=lambda c: c[1].stem)


def find_landmarks(raw_dir: str | Path, name: ClipName) -> Path | None:
    """The OpenFace CSV for a clip, if any: ``landmarks/<stem>.csv`` (MSAF's layout),
    ``landmarks/Actor_XX/<stem>.csv``, or ``Actor_XX/<stem>.csv`` beside the clip.

    RAVDESS's FacialTracking files were made per clip; a full-AV clip shares its face track with the video-only
    clip of the same take, so a ``02-...`` file is accepted for a ``01-...`` clip.
    """
    raw_dir = Path(raw_dir)
    stems = [name.stem, "02" + name.stem[2:]]
    for stem in stems:
        for cand in (
            raw_dir / "landmarks" / f"{stem}.csv",
            raw_dir / "landmarks" / f"Actor_{name.actor:02d}" / f"{stem}.csv",
            raw_dir / f"Actor_{name.actor:02d}" / f"{stem}.csv",
        ):
            if cand.is_file():
                return cand
    return None


def read_landmarks(path: str | Path) -> np.ndarray:
    """OpenFace 2D landmarks as float32 (rows, 68, 2) in pixels; rows where OpenFace reported failure are NaN."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read landmark file {path} as an OpenFace CSV: {e}") from e
    if len(rows) < 2:
        raise DataError(f"landmark file {path} has no data rows")
    header = [h.strip() for h in rows[0]]
    index = {h: i for i, h in enumerate(header)}
    try:
        xi = [index[f"x_{k}"] for k in range(68)]
        yi = [index[f"y_{k}"] for k in range(68)]
    except KeyError as e:
        raise DataError(f"landmark file {path} lacks OpenFace column {e.args[0]!r} (expected x_0..x_67, y_0..y_67)")
    ok = index.get("success")
    out = np.full((len(rows) - 1, 68, 2), np.nan, dtype=np.float32)
    for r, row in enumerate(rows[1:]):
        if not row:
            continue
        try:
            if ok is not None and float(row[ok]) == 0:
                continue
            out[r, :, 0] = [float(row[i]) for i in xi]
            out[r, :, 1] = [float(row[i]) for i in yi]
        except (ValueError, IndexError) as e:
            raise DataError(f"landmark file {path}, data row {r + 1}: {e}") from e
    if np.isnan(out).all():
        raise DataError(f"landmark file {path}: OpenFace tracked no face in any row")
    if not (~np.isnan(out).any(axis=(1, 2))).any():
        raise DataError(f"landmark file {path}: no row has all 68 landmarks (a column is empty or NaN throughout)")
    return out


def write_landmarks(path: str | Path, landmarks: np.ndarray, fps: float) -> None:
    """Write (rows, 68, 2) pixel landmarks as an OpenFace-format CSV (the columns cfnsr and MSAF read)."""
    header = ["frame", " face_id", " timestamp", " confidence", " success"]
    header += [f" x_{k}" for k in range(68)] + [f" y_{k}" for k in range(68)]
    import io

    from ..fileio import write_text

    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(header)
    for i, lm in enumerate(landmarks):
        w.writerow([i + 1, 0, f"{i / fps:.3f}", "0.98", 1]
                   + [f"{v:.1f}" for v in lm[:, 0]] + [f"{v:.1f}" for v in lm[:, 1]])
    write_text(path, buf.getvalue())

"""``cfnsr predict``: one clip, many clips, or a long recording's timeline, through one ``Recognizer``.

The model is loaded once; each clip is decoded, its face found (``find_faces``, preprocessing's policy: the RAVDESS
landmark file when there is one, else OpenCV's Haar detector, else the frame centre with --allow-center-crop),
cropped, and run. Results go to the terminal, and to JSON Lines / CSV files; a timeline
(sliding windows over a recording) goes to a CSV of probabilities over time and a PNG plot of them.
"""

from __future__ import annotations

import csv
import glob
import io
import json
from pathlib import Path

import numpy as np

from ..data.ravdess import find_landmarks, parse_name
from ..errors import DataError
from ..fileio import atomic_path, shown, write_text
from .recognizer import STAGES, Recognizer

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")


def landmarks_for(video: Path, landmarks: str | Path | None = None) -> Path | None:
    if landmarks is not None:
        return Path(landmarks)
    try:  # a clip in RAVDESS layout: look where `cfnsr preprocess` would
        return find_landmarks(video.parent.parent, parse_name(video))
    except DataError:
        return None


def is_video_name(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def expand_inputs(items, log=None) -> list[Path]:
    """Files, folders (their videos, recursively) and glob patterns -> the video files, in order, each once.

    Folders and globs take the files whose extension is a video's, in any case (``.MP4`` too); one that yields
    none is an error. A symlink loop or dangling link among them is skipped with a note (``log``)."""
    def keep(paths):
        out = []
        for p in paths:
            if not is_video_name(p):
                continue
            if not p.is_file():
                if log is not None and p.is_symlink():
                    log(f"note: skipped {shown(p)}: a symlink loop or a dangling link")
                continue
            out.append(p)
        return out

    out: list[Path] = []
    for item in map(str, items):
        if any(ch in item for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            if not matches:
                raise DataError(f"no file matches {shown(item)}")
            found = keep(matches)
            if not found:
                raise DataError(f"{shown(item)} matches no video file ({', '.join(VIDEO_SUFFIXES)}, any case)")
            out += found
        elif Path(item).is_dir():
            found = keep(sorted(Path(item).rglob("*")))
            if not found:
                raise DataError(f"{shown(item)} holds no video files ({', '.join(VIDEO_SUFFIXES)}, any case)")
            out += found
        else:
            out.append(Path(item))
    seen, unique = set(), []
    for p in out:
        try:
            key = p.resolve()
        except (OSError, RuntimeError):  # a loop given by name: decoding says what is wrong with it
            key = p.absolute()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def timeline_paths(video: Path, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """``NAME.timeline.csv`` and ``NAME.timeline.png`` for recording ``NAME.ext``, in ``out_dir`` or beside it."""
    out = Path(out_dir) if out_dir else video.parent
    return out / f"{video.stem}.timeline.csv", out / f"{video.stem}.timeline.png"


def check_hop(video: Path, hop: float) -> None:
    """A timeline hop of at least one video frame (a smaller one repeats windows, millions of them)."""
    from ..data.features import frame_rate

    fps = frame_rate(video)
    if hop < 1.0 / fps:
        raise DataError(f"--hop {hop:g} s is shorter than one frame of {shown(video.name)} (1/{fps:g} s = "
                        f"{1 / fps:.4f} s): give at least {1 / fps:.4f}")


def _save_inputs(folder: Path, inputs: dict) -> None:
    """The model's two inputs as ``video.npy`` and ``audio.npy``, in the artifact's input order (a media artifact's
    crops and PCM too): the files ``cfnsr_infer --video --audio`` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(("video.npy", "audio.npy"), inputs.values()):
        with atomic_path(folder / name) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(arr))


def predict(video: str | Path, model: str | Path, backend: str | None = None, landmarks: str | Path | None = None,
            allow_center_crop: bool = False, save_inputs: str | Path | None = None, device: str | None = None) -> dict:
    """The emotion of one clip. ``save_inputs``: a folder where the model inputs are also written as ``video.npy``
    and ``audio.npy`` (batch 1: features, or uint8 crops and PCM for a media artifact), the buffers the C++ runtime
    takes."""
    with Recognizer(model, backend, device, allow_center_crop) as rec:
        return predict_clip(rec, Path(video), landmarks, save_inputs)


def predict_clip(rec: Recognizer, video: Path, landmarks: str | Path | None = None,
                 save_inputs: str | Path | None = None, strict: bool = False) -> dict:
    """One clip through ``rec``, as a result dict (what `cfnsr predict` prints for a single clip)."""
    pred = rec.predict_file(video, landmarks_for(video, landmarks), strict=strict)
    if save_inputs is not None:
        _save_inputs(Path(save_inputs), rec.last_inputs)
    return {"video": str(video), "model": str(rec.artifact), "backend": rec.runner.backend,
            "device": rec.runner.device, **pred.to_dict(),
            **({"saved_inputs": str(save_inputs)} if save_inputs is not None else {})}


def predict_many(videos: list[Path], rec: Recognizer, landmarks: str | Path | None = None, progress: bool = True,
                 log=print, strict: bool = False) -> list[dict]:
    """Every clip through one recognizer; a clip that fails is reported with its error and the rest go on."""
    from tqdm import tqdm

    rows = []
    for v in tqdm(videos, desc="predict", unit="clip", disable=not progress or len(videos) < 2):
        try:
            rows.append({"video": str(v), **rec.predict_file(v, landmarks_for(v, landmarks), strict=strict).to_dict()})
        except DataError as e:
            rows.append({"video": str(v), "error": str(e)})
            log(f"skipped {shown(v)}: {shown(e)}")
    return rows


def write_rows(rows: list[dict], labels: list[str], jsonl: str | Path | None = None,
               csv_path: str | Path | None = None) -> None:
    """JSON Lines and/or CSV of the rows (``-``: stdout). A file name that is not UTF-8 is written as its bytes in
    the CSV and as a JSON escape in JSON Lines."""
    if jsonl is not None:
        write_text(jsonl, "".join(json.dumps(r) + "\n" for r in rows))
    if csv_path is not None:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["video", "emotion", "crop", *labels, *[f"{s}_ms" for s in STAGES], "total_ms", "warnings",
                    "error"])
        for r in rows:
            p, t = r.get("probabilities", {}), r.get("timings_ms", {})
            w.writerow([r["video"], r.get("emotion", ""), r.get("crop", ""), *[p.get(k, "") for k in labels],
                        *[t.get(s, "") for s in STAGES], t.get("total", ""), "; ".join(r.get("warnings", [])),
                        r.get("error", "")])
        write_text(csv_path, buf.getvalue())


def timeline(video: str | Path, rec: Recognizer, hop: float | None = None, progress: bool = True) -> list[dict]:
    """Sliding windows over a recording longer than a clip: one record per window, by the window rule of
    ``cfnsr.engines.stream`` (the spec's audio duration, its frames sampled across it, one window per ``hop``
    seconds, default 0.5): the windows ``cfnsr live`` gives on the same file. A window without a face is a record
    saying so (``face_lost``), not an error. A folder, and a hop below one frame, are refused before decoding."""
    from .live import file_windows

    video = Path(video)
    if video.is_dir():
        raise DataError(f"{shown(video)} is a folder, not a recording")
    hop = 0.5 if hop is None else hop
    check_hop(video, hop)
    return file_windows(rec, video, hop, progress)


def write_timeline(rows: list[dict], labels: list[str], csv_path: Path, png_path: Path, title: str) -> None:
    from .live import csv_columns, flat_row

    buf = io.StringIO()
    w = csv.DictWriter(buf, csv_columns(labels))
    w.writeheader()
    w.writerows(flat_row(r, labels) for r in rows)
    write_text(csv_path, buf.getvalue())
    from ..reports import plot_timeline

    nan = float("nan")
    plot_timeline([(r["start_s"] + r["end_s"]) / 2 for r in rows],
                  {k: [(r["probabilities"] or {}).get(k, nan) for r in rows] for k in labels}, png_path, title)

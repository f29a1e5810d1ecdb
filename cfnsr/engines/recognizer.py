"""``cfnsr.Recognizer``: the persistent runtime for applications. Load an artifact once, then predict from files or
from frames + audio, with the time each stage took.

Stages: decode (PyAV), detection (``cfnsr.data.features.find_faces``, the face policy preprocessing follows too:
the landmark file's boxes, else OpenCV's Haar detector, else the frame centre only with ``allow_center_crop``), crop
(resize to the spec's face size), resample (soxr, as ``librosa.resample`` does), features (librosa's MFCC:
features artifacts only; a media artifact computes it in its graph), model (the runner; the front end included for
media artifacts).
Everything uses the functions of ``cfnsr.data`` that build the training cache: one implementation, nothing copied.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..data.features import (
    audio_segment,
    audio_warnings,
    crop_faces,
    decode_audio,
    find_faces,
    frame_indices,
    landmark_boxes,
    mfcc_features,
    read_video_frames,
    resample,
    to_model_inputs,
)
from ..errors import ArtifactError, DataError
from ..fileio import shown
from . import device_options, load
from .base import InputError

STAGES = ("decode", "detection", "crop", "resample", "features", "model")


@dataclass
class Prediction:
    emotion: str
    label_id: int
    probabilities: dict[str, float]
    crop: str  # landmarks | haar | center
    audio_padded: bool
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage, and total
    crop_note: str | None = None
    source: str | None = None
    boxes: list[list[float]] | None = None  # the face box (left, top, right, bottom) of each frame the model saw
    warnings: list[str] = field(default_factory=list)  # what the media is not: truncated, silent, short, ...

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def as_pcm(pcm) -> np.ndarray:
    """``pcm`` as mono float32 in [-1, 1): float samples as they are; integer PCM (int16, int32, uint8) scaled as
    ``decode_audio`` scales a decoder's integer samples; anything else refused, naming the argument."""
    a = np.asarray(pcm)
    if a.dtype.kind == "f":
        a = a.astype(np.float32)
    elif a.dtype.kind in "iu" and a.dtype.itemsize in (1, 2, 4, 8):
        offset = 128.0 if a.dtype == np.uint8 else 0.0
        if a.dtype.kind == "u" and a.dtype != np.uint8:
            raise InputError(f"pcm: unsigned {a.dtype} samples are not a PCM format; give float32, int16 or int32")
        a = ((a.astype(np.float64) - offset) / (2.0 ** (8 * a.dtype.itemsize - 1))).astype(np.float32)
    else:
        raise InputError(f"pcm: expected float or integer PCM samples, got dtype {a.dtype}")
    if a.ndim != 1 or a.size == 0:
        raise InputError(f"pcm: expected mono samples (N,), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"pcm holds {int((~np.isfinite(a)).sum())} non-finite samples")
    return a


def check_rate(sample_rate) -> int | float:
    """A sample rate in Hz: a finite positive real number (a bool, str or NaN is refused, naming the argument)."""
    import numbers

    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real):
        raise InputError(f"sample_rate: expected a positive number of Hz, got {type(sample_rate).__name__} "
                         f"{sample_rate!r}")
    if not np.isfinite(sample_rate) or sample_rate <= 0:
        raise InputError(f"sample_rate: expected a positive number of Hz, got {sample_rate!r}")
    return sample_rate


class Recognizer:
    """``Recognizer(artifact, backend=None, device="auto")``: loads once; use as a context manager (or ``close()``).

    ``allow_center_crop``: classify the frame centre when no face is found. Refused by default, as preprocessing
    skips such a clip unless given ``--allow-center-crop``: both follow ``cfnsr.data.features.find_faces``.
    """

    def __init__(self, artifact: str | Path, backend: str | None = None, device: str | None = "auto",
                 allow_center_crop: bool = False, **options):
        self.artifact = Path(artifact)
        self.allow_center_crop = allow_center_crop
        self.runner = load(self.artifact, backend, **device_options(self.artifact, backend, device), **options)
        self.runner.activate()
        if self.runner.spec is None:
            self.close()
            raise ArtifactError(f"{artifact} records no preprocessing spec (cfnsr.preprocess); re-export it")
        self.spec = self.runner.spec
        self.kind = self.runner.kind
        self.labels = self.runner.labels

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> "Recognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- prediction ------------------------------------------------------------------------------------------------
    def predict_file(self, path: str | Path, landmarks: str | Path | None = None, strict: bool = False
                     ) -> Prediction:
        """Decode a clip (its audio at its own rate), find the face, crop, infer.

        What the clip is not (truncated, a decoder error mid-file, silent or near-silent audio, audio shorter than
        the window) is in ``Prediction.warnings``; with ``strict`` it is a DataError instead."""
        t0 = time.perf_counter()
        if not isinstance(path, (str, Path)):
            raise InputError(f"path: expected a file name (str or Path), got {type(path).__name__}")
        path = Path(path)
        if path.is_dir():
            raise DataError(f"path: {shown(path)} is a folder, not a video file (cfnsr predict takes folders)")
        if landmarks is not None and Path(landmarks).is_dir():
            raise DataError(f"landmarks: {shown(landmarks)} is a folder, not a landmark CSV")
        issues: list[str] = []
        frames, n_frames = read_video_frames(path, self.spec.frames, issues)
        audio, rate = decode_audio(path, issues)
        issues += audio_warnings(audio, rate, self.spec)
        if strict and issues:
            raise DataError(f"{shown(path)}: {'; '.join(issues)} (--strict)")
        decode_ms = (time.perf_counter() - t0) * 1e3
        boxes = None
        t = time.perf_counter()
        if landmarks is not None:
            from ..data.ravdess import read_landmarks

            boxes = landmark_boxes(read_landmarks(landmarks), frame_indices(n_frames, self.spec.frames), n_frames)
        landmark_ms = (time.perf_counter() - t) * 1e3
        tried = f"a landmark file ({'none found' if landmarks is None else landmarks}) and "
        pred = self._predict(frames, audio, rate, boxes, source=str(path), tried=tried,
                             boxes_from=f"landmarks {landmarks}")
        pred.warnings = issues
        pred.timings_ms["decode"] = decode_ms
        pred.timings_ms["detection"] += landmark_ms
        pred.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
        return pred

    def predict(self, frames: np.ndarray, pcm: np.ndarray, sample_rate: int, boxes: np.ndarray | None = None,
                audio_offset: float | None = None) -> Prediction:
        """Full video frames (T, H, W, 3) RGB uint8 of one clip, its mono audio at ``sample_rate`` (resampled to the
        spec's rate), and optional face boxes (T, 4) (left, top, right, bottom) per frame; without boxes the
        detector finds the face. The spec's frames are chosen evenly over the T given. ``audio_offset``: where the
        model's audio starts in ``pcm`` (default the spec's; 0 for a stream window, whose audio is the window)."""
        t0 = time.perf_counter()
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"frames: expected uint8 (T, H, W, 3) RGB, got {frames.dtype} {frames.shape}")
        pcm = as_pcm(pcm)
        sample_rate = check_rate(sample_rate)
        idx = frame_indices(len(frames), self.spec.frames)
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float32)
            if boxes.shape != (len(frames), 4):
                raise InputError(f"boxes: expected ({len(frames)}, 4), one per frame, got {boxes.shape}")
            boxes = boxes[idx]
        pred = self._predict(frames[idx], pcm, sample_rate, boxes, audio_offset=audio_offset)
        pred.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
        return pred

    def stream(self, source, hop: float = 0.5, **options):
        """The windows of a live source (a file played at its own rate, a device, a network URL): an iterable of
        records, one per window every ``hop`` seconds (``cfnsr.engines.live.LiveStream``; options there)."""
        from .live import LiveStream

        return LiveStream(self, source, hop=hop, **options)

    def _predict(self, frames, audio, rate, boxes, source=None, tried: str = "", boxes_from: str = "boxes",
                 audio_offset: float | None = None) -> Prediction:
        timings = dict.fromkeys(STAGES, 0.0)
        t = time.perf_counter()
        faces = find_faces(frames, boxes, boxes_from=boxes_from, allow_center_crop=self.allow_center_crop,
                           source=source or "the frames", tried=tried,
                           fix="--landmarks CSV (or boxes), or --allow-center-crop to classify the centre of the "
                               "frame anyway")
        boxes, method, note = faces.boxes, faces.method, faces.note
        timings["detection"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        crops = crop_faces(frames, boxes, self.spec)
        timings["crop"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        audio = resample(audio, rate, self.spec.sample_rate)
        timings["resample"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        spec = self.spec if audio_offset is None else replace(self.spec, audio_offset=audio_offset)
        if self.kind == "media":
            pcm, padded = audio_segment(audio, spec)
            inputs = {"frames": crops[None], "pcm": pcm[None]}
        else:
            mfcc, padded = mfcc_features(audio, spec)
            video, audio_in = to_model_inputs(crops, mfcc, self.spec)
            inputs = {"video": video[None], "audio": audio_in[None]}
        timings["features"] = (time.perf_counter() - t) * 1e3
        self.last_inputs = inputs  # what the model was given, by name (cfnsr predict --save-inputs writes them)
        t = time.perf_counter()
        logits = self.runner(**inputs)[0].astype(np.float64)
        timings["model"] = (time.perf_counter() - t) * 1e3
        if not np.isfinite(logits).all():
            raise ArtifactError(f"{self.artifact} returned non-finite logits ({logits.tolist()}): the model is broken")
        p = np.exp(logits - logits.max())
        p /= p.sum()
        best = int(p.argmax())
        return Prediction(self.labels[best], best, {name: float(x) for name, x in zip(self.labels, p)}, method,
                          padded, timings, note, source, np.asarray(boxes, dtype=np.float32).tolist())

"""Clip -> features, the one implementation used for training, calibration, validation and ``cfnsr predict``.

Video: ``spec.frames`` frames evenly spaced over the clip, the face cropped, resized to ``spec.image_size``, kept as
uint8 RGB. The face is found by one policy, ``find_faces``, for preprocessing and the Recognizer alike: the
landmarks of the same frame when they can be a face, else OpenCV's Haar face detector, else the centre of the frame
only when the caller allows it (``--allow-center-crop``; preprocess's ``--no-detector`` asks for it), else a
DataError naming what was tried. The crop used is recorded (``landmarks``, ``haar`` or ``center``).
Audio: the clip's own audio track, mono, resampled to ``spec.sample_rate``, ``spec.audio_offset`` s in,
``spec.audio_duration`` s long (zero-padded when short), 13 librosa MFCCs -> (13, 212) float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, FaceNotFound
from .spec import PreprocessSpec

CROP_METHODS = ("landmarks", "haar", "center")


@dataclass
class ClipFeatures:
    frames: np.ndarray  # uint8 (T, H, W, 3), RGB
    mfcc: np.ndarray  # float32 (n_mfcc, mfcc_frames)
    crop_method: str  # one of CROP_METHODS
    audio_padded: bool  # the clip was shorter than offset + duration
    crop_note: str | None = None  # why a landmark file present was not used (its boxes were impossible)
    warnings: list[str] = field(default_factory=list)  # what the media is not (truncated, silent, ...): media_warnings


# ------------------------------------------------------------------------------------------------ decoding
def frame_indices(n_frames: int, count: int) -> np.ndarray:
    """``count`` indices evenly spaced over ``n_frames`` (MSAF's times i * duration / count)."""
    if n_frames <= 0:
        raise DataError("a clip with no frames")
    return np.minimum((np.arange(count) * n_frames) // count, n_frames - 1)


def _open(path: Path):
    import av

    if not path.is_file():
        if path.is_symlink():
            raise DataError(f"clip {path} is a symlink loop or a dangling link")
        raise DataError(f"clip {path} is a folder, not a video file" if path.is_dir()
                        else f"clip {path} does not exist")
    try:
        return av.open(str(path))
    except Exception as e:
        raise DataError(f"cannot open {path} as a video ({type(e).__name__}: {e})") from e


def frame_rate(path: str | Path) -> float:
    """The video track's average frame rate (25 when the container does not say)."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise DataError(f"{path} has no video track")
        return float(container.streams.video[0].average_rate or 0) or 25.0


def decode_frames(path: str | Path, keep: set[int], issues: list[str] | None = None
                  ) -> tuple[dict[int, np.ndarray], int]:
    """Decode the video track once; RGB arrays of the frames in ``keep`` and the number of decodable frames. A
    decoder error after the first frames is said in ``issues`` (the frames that decoded are used)."""
    path = Path(path)
    got, total = {}, 0
    with _open(path) as container:
        if not container.streams.video:
            raise DataError(f"{path} has no video track")
        try:
            for frame in container.decode(container.streams.video[0]):
                if total in keep:
                    got[total] = frame.to_ndarray(format="rgb24")
                total += 1
        except Exception as e:
            if total == 0:
                raise DataError(f"cannot decode the video of {path} ({type(e).__name__}: {e})") from e
            _note(issues, f"the video decoder failed after {total} frames ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:100] if str(e) else ''}); the frames that decoded are used")
    if total == 0:
        raise DataError(f"{path}: the video track has no decodable frames")
    return got, total


def _note(issues: list[str] | None, message: str) -> None:
    if issues is not None and message not in issues:
        issues.append(message)


def read_video_frames(path: str | Path, count: int, issues: list[str] | None = None) -> tuple[np.ndarray, int]:
    """Decode ``count`` evenly spaced RGB frames; returns (frames uint8 (count, H, W, 3), total frame count).

    Only the chosen frames are converted and kept. The container's frame count is trusted only when decoding
    confirms it (a truncated file costs a second pass, and is said in ``issues``).
    """
    path = Path(path)
    with _open(path) as container:
        header = container.streams.video[0].frames if container.streams.video else 0
    if header > 0:
        idx = frame_indices(header, count)
        got, total = decode_frames(path, set(idx.tolist()), issues)
        if total == header:
            return np.stack([got[i] for i in idx.tolist()]), total
        if total < header - 1:
            _note(issues, f"the file is truncated: its header says {header} video frames and {total} decode")
    else:
        _, total = decode_frames(path, set(), issues)
    idx = frame_indices(total, count)
    got, _ = decode_frames(path, set(idx.tolist()))
    return np.stack([got[i] for i in idx.tolist()]), total


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """The clip's audio track as mono float32 at ``sample_rate`` (librosa's resampler: soxr HQ)."""
    audio, rate = decode_audio(path)
    return resample(audio, rate, sample_rate)


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``audio`` at ``target`` Hz: what ``librosa.resample`` does by default (python-soxr, quality soxr_hq), called
    directly so that a prediction needs no librosa (and no numba start-up)."""
    if rate <= 0:
        raise DataError(f"a sample rate of {rate} Hz")
    if rate == target:
        return np.asarray(audio, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(audio, dtype=np.float32), rate, target, quality="soxr_hq").astype(np.float32)


# Integer sample formats -> float in [-1, 1), as librosa/soundfile read them (AAC decodes to float already).
_INT_SCALE = {"u8": (128.0, 128.0), "s16": (0.0, 32768.0), "s32": (0.0, 2.0 ** 31), "s64": (0.0, 2.0 ** 63)}


def _as_float(samples: np.ndarray, fmt: str) -> np.ndarray:
    offset, scale = _INT_SCALE.get(fmt.rstrip("p"), (None, None))
    if scale is None:
        return samples.astype(np.float32)
    return ((samples.astype(np.float64) - offset) / scale).astype(np.float32)


def mono_samples(frame) -> np.ndarray:
    """A decoded PyAV audio frame as mono float32 (channels averaged)."""
    a = _as_float(frame.to_ndarray(), frame.format.name)
    if frame.format.is_planar:
        return a.mean(axis=0)  # (channels, n) -> mono
    return a.reshape(-1, len(frame.layout.channels)).mean(axis=1)


def decode_audio(path: str | Path, issues: list[str] | None = None) -> tuple[np.ndarray, int]:
    """The clip's audio track as mono float32 at its own rate: (samples, rate). A decoder error after the first
    samples, and a track shorter than its header says, are said in ``issues``."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise DataError(f"{path} has no audio track (CFN-SR needs the clip's speech)")
        stream = container.streams.audio[0]
        header_s = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        chunks, rate = [], stream.rate
        try:
            for frame in container.decode(stream):
                chunks.append(mono_samples(frame))
                rate = frame.sample_rate
        except Exception as e:
            if not chunks:
                raise DataError(f"cannot decode audio of {path} ({type(e).__name__}: {e})") from e
            _note(issues, f"the audio decoder failed after {sum(map(len, chunks)) / rate:.2f} s "
                          f"({type(e).__name__}); the samples that decoded are used")
    if not chunks:
        raise DataError(f"{path}: the audio track has no decodable samples")
    audio = np.concatenate(chunks).astype(np.float32)
    got_s = len(audio) / rate
    if header_s and got_s < 0.9 * header_s - 0.05:
        _note(issues, f"the file is truncated: its audio track should last {header_s:.2f} s and {got_s:.2f} s decode")
    return audio, int(rate)


SILENT_PEAK = 1e-4  # -80 dBFS: nothing but dither
QUIET_RMS = 1e-3  # -60 dBFS over the window: far below speech (about -20 to -35 dBFS)


def audio_warnings(audio: np.ndarray, rate: int, spec: PreprocessSpec) -> list[str]:
    """What the spec's audio window of ``audio`` (mono at ``rate``) is not: silent, near-silent, or shorter than the
    window (then zero-padded, as MSAF did)."""
    out = []
    need = spec.audio_offset + spec.audio_duration
    have = len(audio) / rate if rate else 0.0
    if have < need:
        out.append(f"the audio lasts {have:.2f} s, shorter than the window ({spec.audio_offset:g} s offset + "
                   f"{spec.audio_duration:g} s): the rest is zero-padded")
    start = int(spec.audio_offset * rate)
    window = np.asarray(audio[start:start + int(spec.audio_duration * rate)], dtype=np.float64)
    peak = float(np.abs(window).max()) if window.size else 0.0
    if peak < SILENT_PEAK:
        out.append("the audio is silent in the window the model hears (peak below -80 dBFS)")
    else:
        rms = float(np.sqrt(np.mean(window ** 2)))
        if rms < QUIET_RMS:
            out.append(f"the audio is near-silent in the window the model hears (RMS {20 * np.log10(rms):.0f} dBFS; "
                       "speech is about -20 to -35)")
    return out


# ------------------------------------------------------------------------------------------------ audio features
def audio_segment(audio: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, bool]:
    """The spec's window of ``audio`` (offset, duration; zero-padded at the end): what the MFCC is computed from,
    and what a media artifact's ``pcm`` input takes. Returns (segment float32, padded)."""
    start = int(round(spec.audio_offset * spec.sample_rate))
    n = int(round(spec.audio_duration * spec.sample_rate))
    segment = np.asarray(audio[start:start + n], dtype=np.float32)
    padded = len(segment) < n
    if padded:
        segment = np.pad(segment, (0, n - len(segment)))
    return segment, padded


def mfcc_features(audio: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, bool]:
    """MFCCs of ``audio`` (mono at spec.sample_rate) as (n_mfcc, mfcc_frames) float32; padded flag."""
    import librosa

    segment, padded = audio_segment(audio, spec)
    m = librosa.feature.mfcc(y=segment, sr=spec.sample_rate, n_mfcc=spec.n_mfcc, n_fft=spec.n_fft,
                             hop_length=spec.hop_length)
    m = m[:, :spec.mfcc_frames]
    if m.shape[1] < spec.mfcc_frames:
        m = np.pad(m, ((0, 0), (0, spec.mfcc_frames - m.shape[1])))
    return m.astype(np.float32), padded


# ------------------------------------------------------------------------------------------------ face crop
def box_problem(boxes: np.ndarray, height: int, width: int, min_size: float = 8.0,
                tolerance: float = 0.1) -> str | None:
    """Why face boxes (left, top, right, bottom) cannot be a face in an ``height`` x ``width`` frame, or None.

    Boxes must be finite, at least ``min_size`` pixels wide and high, and inside the frame within ``tolerance`` of
    its size (a face may touch the border; landmarks far outside it, negated or swapped are a broken file)."""
    b = np.asarray(boxes, dtype=np.float64)
    if not np.isfinite(b).all():
        return "non-finite landmark coordinates"
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    if (w < min_size).any() or (h < min_size).any():
        return f"a face box smaller than {min_size:.0f} pixels ({float(min(w.min(), h.min())):.1f})"
    mx, my = tolerance * width, tolerance * height
    if (b[:, 0] < -mx).any() or (b[:, 1] < -my).any() or (b[:, 2] > width + mx).any() or (b[:, 3] > height + my).any():
        return f"face boxes outside the {width}x{height} frame"
    return None


def landmark_boxes(landmarks: np.ndarray, frame_idx: np.ndarray, n_frames: int) -> np.ndarray:
    """(count, 4) boxes (left, top, right, bottom) in pixels from the landmark rows matching ``frame_idx``.

    Rows map to frames proportionally when the CSV and the video disagree on the count; a row where OpenFace
    lost the face borrows the nearest tracked row.
    """
    rows = len(landmarks)
    valid = np.flatnonzero(~np.isnan(landmarks).any(axis=(1, 2)))
    boxes = []
    for i in frame_idx:
        r = min(int(round(i * rows / n_frames)) if rows != n_frames else int(i), rows - 1)
        r = valid[np.argmin(np.abs(valid - r))]
        pts = landmarks[r]
        boxes.append([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])
    return np.asarray(boxes, dtype=np.float32)


_HAAR = None


def haar_boxes(frames: np.ndarray) -> np.ndarray | None:
    """Largest frontal face per frame with OpenCV's bundled Haar cascade; None when OpenCV has no cascade or no
    face is found in any frame. Frames without a detection take the median box of the others."""
    global _HAAR
    import cv2

    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        return None  # OpenCV 5 removed the Haar cascades
    if _HAAR is None:
        _HAAR = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
    found = []
    for f in frames:
        gray = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
        min_size = max(24, min(gray.shape) // 8)
        faces = _HAAR.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
        if len(faces):
            x, y, w, h = max(faces, key=lambda b: b[2] * b[3])
            found.append([x, y, x + w, y + h])
        else:
            found.append(None)
    hits = [b for b in found if b is not None]
    if not hits:
        return None
    median = np.median(np.asarray(hits, dtype=np.float32), axis=0)
    return np.asarray([b if b is not None else median for b in found], dtype=np.float32)


@dataclass
class Faces:
    boxes: np.ndarray  # (T, 4) left, top, right, bottom per frame
    method: str  # one of CROP_METHODS
    note: str | None = None  # why boxes that were given were not used


def find_faces(frames: np.ndarray, boxes: np.ndarray | None = None, *, boxes_from: str = "boxes",
               detector: bool = True, allow_center_crop: bool = False, source: str = "the frames",
               tried: str = "", fix: str = "--allow-center-crop to use the centre of the frame anyway") -> Faces:
    """Where the face is in each of ``frames`` (T, H, W, 3): the one policy of preprocessing and the Recognizer.

    1. ``boxes`` (from landmarks, or a caller's) when they can be a face (``box_problem``; else the note says why
       not, naming ``boxes_from``);
    2. OpenCV's Haar detector, when ``detector``;
    3. the centre of the frame, only when ``allow_center_crop``; otherwise FaceNotFound (a DataError) saying what was
       tried in ``source`` (``tried`` names what the caller tried first) and ``fix``.
    """
    note = None
    if boxes is not None:
        problem = box_problem(boxes, *frames.shape[1:3])
        if problem is None:
            return Faces(np.asarray(boxes, dtype=np.float32), "landmarks")
        note = f"{boxes_from} not used: {problem}"
    if detector:
        found = haar_boxes(frames)
        if found is not None:
            return Faces(found, "haar", note)
    if not allow_center_crop:
        what = f"OpenCV's Haar face detector on {len(frames)} frames" if detector else "no face detector (turned off)"
        raise FaceNotFound(f"no face found in {source}: tried {tried}{what}. Pass {fix}")
    return Faces(center_boxes(len(frames), *frames.shape[1:3]), "center", note)


def center_boxes(count: int, height: int, width: int) -> np.ndarray:
    side = min(height, width)
    left, top = (width - side) // 2, (height - side) // 2
    return np.tile(np.asarray([[left, top, left + side, top + side]], dtype=np.float32), (count, 1))


def crop_faces(frames: np.ndarray, boxes: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Crop each frame to its box and resize to spec.image_size (uint8 RGB out).

    With ``spec.msaf_compat`` the whole frame is first squashed to image_size x image_size and the box scaled with
    it, as MSAF's preprocessing did (its published checkpoints saw these upsampled crops).
    """
    import cv2

    size = spec.image_size
    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for i, (f, box) in enumerate(zip(frames, boxes)):
        left, top, right, bottom = box
        if spec.msaf_compat:
            h, w = f.shape[:2]
            f = cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA)
            left, right = left * size / w, right * size / w
            top, bottom = top * size / h, bottom * size / h
        h, w = f.shape[:2]
        left, top = int(np.clip(left, 0, w - 1)), int(np.clip(top, 0, h - 1))
        right, bottom = int(np.clip(right, left + 1, w)), int(np.clip(bottom, top + 1, h))
        out[i] = cv2.resize(f[top:bottom, left:right], (size, size), interpolation=cv2.INTER_LINEAR)
    return out


# ------------------------------------------------------------------------------------------------ one clip
def extract_clip(path: str | Path, spec: PreprocessSpec, landmarks_path: str | Path | None = None,
                 use_detector: bool = True, allow_center_crop: bool = False) -> ClipFeatures:
    """Everything the model needs from one clip; the face found by ``find_faces`` (without the detector, the
    centre crop is what was asked for)."""
    from .ravdess import read_landmarks

    issues: list[str] = []
    frames, n_frames = read_video_frames(path, spec.frames, issues)
    audio, rate = decode_audio(path, issues)  # a clip without audio says so first
    issues += audio_warnings(audio, rate, spec)
    mfcc, padded = mfcc_features(resample(audio, rate, spec.sample_rate), spec)
    boxes = None
    if landmarks_path is not None:
        boxes = landmark_boxes(read_landmarks(landmarks_path), frame_indices(n_frames, spec.frames), n_frames)
    faces = find_faces(frames, boxes, boxes_from=f"landmarks {landmarks_path}", detector=use_detector,
                       allow_center_crop=allow_center_crop or not use_detector, source=str(path),
                       tried=f"a landmark file ({landmarks_path or 'none found'}) and ",
                       fix="--allow-center-crop to train on the centre of the frame anyway")
    crops = crop_faces(frames, faces.boxes, spec)
    return ClipFeatures(crops, mfcc, faces.method, padded, faces.note, issues)


def to_model_inputs(frames: np.ndarray, mfcc: np.ndarray, spec: PreprocessSpec):
    """uint8 RGB frames (T, H, W, 3) and MFCC (13, 212) -> float32 video (3, T, H, W) and audio arrays,
    normalised as the spec says (channel order, ImageNet mean/std). numpy only, so the CPU runtimes need no torch.
    """
    x = frames.astype(np.float32) / 255.0
    if spec.channel_order == "bgr":
        x = x[..., ::-1]
    x = (x - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), np.ascontiguousarray(mfcc, dtype=np.float32)

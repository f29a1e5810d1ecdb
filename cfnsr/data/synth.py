"""A synthetic data set in RAVDESS's exact layout, for tests and the demo (RAVDESS itself cannot be downloaded here).

Real ``.mp4`` files (H.264 video + AAC audio at 48 kHz, as RAVDESS), RAVDESS file names in ``Actor_XX/`` folders,
and OpenFace-format landmark CSVs in ``landmarks/`` (MSAF's layout). The emotion shows in the face (mouth curve and
opening, brow height and tilt, eye opening) and in the voice (pitch level and contour, syllable rate, loudness,
vibrato), with nuisance variation by actor (face size, place and colour, voice pitch and timbre), statement (vowel
colour), repetition and intensity (strong = a larger deviation from neutral). Some emotions are close in one
modality and apart in the other, so a model that loses a modality loses accuracy.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CfnsrError, DataError
from ..fileio import atomic_path, write_json
from .ravdess import ClipName, write_landmarks

WIDTH, HEIGHT, FPS = 320, 180, 30
DURATION = 3.3  # seconds; RAVDESS clips are 3-5 s and MSAF reads 0.5 s + 2.45 s of audio
CLIP_BYTES = 150_000  # a clip and its landmark CSV on disk, with a margin (measured: about 115 kB)
AUDIO_RATE = 48000

# Face per emotion: mouth curve (+ smile), mouth opening, brow raise, brow tilt (+ inner ends down), eye opening.
# neutral/calm are close in the face (the voice tells them apart); fearful/surprised differ by the voice's contour.
FACE = {
    1: (0.00, 0.10, 0.00, 0.00, 1.00),  # neutral
    2: (0.12, 0.05, -0.05, 0.00, 0.85),  # calm
    3: (0.85, 0.35, 0.15, 0.00, 0.90),  # happy
    4: (-0.70, 0.05, 0.05, -0.60, 0.65),  # sad
    5: (-0.45, 0.30, -0.35, 0.75, 0.95),  # angry
    6: (-0.30, 0.45, 0.55, -0.45, 1.40),  # fearful
    7: (-0.60, 0.15, -0.30, 0.35, 0.60),  # disgust
    8: (0.10, 0.80, 0.70, 0.00, 1.50),  # surprised
}
# Voice per emotion: pitch factor, pitch slope (per second), syllables per second, loudness, vibrato depth,
# spectral tilt (vocal effort: positive = brighter, more energy in the upper harmonics).
VOICE = {
    1: (1.00, 0.00, 3.0, 0.50, 0.00, 0.0),
    2: (0.88, -0.05, 2.2, 0.35, 0.00, -0.4),
    3: (1.25, 0.10, 4.0, 0.75, 0.02, 0.4),
    4: (0.82, -0.15, 2.0, 0.30, 0.01, -0.7),
    5: (1.20, -0.10, 4.6, 0.95, 0.00, 0.9),
    6: (1.45, 0.05, 5.0, 0.55, 0.06, 0.2),
    7: (0.92, -0.12, 2.6, 0.55, 0.00, -0.1),
    8: (1.40, 0.40, 3.4, 0.80, 0.01, 0.5),
}
# A few skin tones; each actor takes one with a small personal shift.
SKINS = ((224, 188, 160), (198, 150, 120), (160, 112, 84), (236, 200, 176), (120, 84, 64))


@dataclass(frozen=True)
class Actor:
    id: int
    center: tuple[float, float]
    radius: float
    skin: tuple[int, int, int]
    background: tuple[int, int, int]
    f0: float
    timbre: tuple[float, ...]


def make_actor(actor_id: int, seed: int) -> Actor:
    rng = np.random.default_rng([seed, actor_id])
    female = actor_id % 2 == 0  # RAVDESS: odd actors male, even female
    return Actor(
        id=actor_id,
        center=(WIDTH / 2 + rng.uniform(-40, 40), HEIGHT / 2 + rng.uniform(-10, 10)),
        radius=rng.uniform(48, 62),
        skin=tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in SKINS[rng.integers(len(SKINS))]),
        background=tuple(int(v) for v in rng.integers(30, 90, size=3)),
        f0=(rng.uniform(180, 240) if female else rng.uniform(95, 140)),
        timbre=tuple(float(v) for v in rng.uniform(0.7, 1.0, size=8)),
    )


def speech_clips(actor: int) -> list[ClipName]:
    """RAVDESS's 60 full-AV speech takes of one actor (neutral has normal intensity only)."""
    out = []
    for emotion in range(1, 9):
        for intensity in (1,) if emotion == 1 else (1, 2):
            for statement in (1, 2):
                for repetition in (1, 2):
                    out.append(ClipName(1, 1, emotion, intensity, statement, repetition, actor))
    return out


def _clip_rng(name: ClipName, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.stem.encode())])


def _strength(name: ClipName) -> float:
    return 1.0 if name.intensity == 1 else 1.6


def syllable_envelope(t: np.ndarray, rate: float, phase: float, start: float = 0.35, end: float = 3.0) -> np.ndarray:
    """Speech-like on/off envelope: raised-cosine syllables at ``rate`` per second between start and end."""
    env = 0.5 - 0.5 * np.cos(2 * np.pi * (rate * (t - start) + phase))
    env = env**1.5
    env[(t < start) | (t > end)] = 0.0
    return env


def face_landmarks(actor: Actor, name: ClipName, t: float, rng_offsets: np.ndarray, mouth_speech: float) -> np.ndarray:
    """68 OpenFace/iBUG landmarks (pixels) of the synthetic face at time ``t``."""
    curve, opening, brow, tilt, eye = FACE[name.emotion]
    s = _strength(name)
    n_curve, n_open, n_brow, n_tilt, n_eye = FACE[1]
    curve, opening = n_curve + s * (curve - n_curve), n_open + s * (opening - n_open)
    brow, tilt, eye = n_brow + s * (brow - n_brow), n_tilt + s * (tilt - n_tilt), n_eye + s * (eye - n_eye)
    opening = opening + mouth_speech
    cx = actor.center[0] + rng_offsets[0] + 3.0 * np.sin(2 * np.pi * 0.4 * t + rng_offsets[2])
    cy = actor.center[1] + rng_offsets[1] + 2.0 * np.sin(2 * np.pi * 0.3 * t)
    ry = actor.radius
    rx = 0.78 * ry
    pts = np.zeros((68, 2), dtype=np.float64)
    th = np.linspace(0, np.pi, 17)  # jaw: left ear, chin, right ear
    pts[0:17] = np.stack([cx - rx * np.cos(th), cy + ry * np.sin(th) * (1 + 0.15 * max(opening, 0))], axis=1)
    brow_y = cy - 0.42 * ry - brow * 0.18 * ry
    for side, sl in ((-1, slice(17, 22)), (1, slice(22, 27))):
        xs = cx + side * np.linspace(0.62, 0.12, 5) * rx
        if side == 1:
            xs = xs[::-1]
        inner = np.abs(xs - cx) / rx  # 0.12 inner .. 0.62 outer
        ys = brow_y + tilt * 0.16 * ry * (0.62 - inner) - 0.05 * ry * np.sin(np.pi * (inner - 0.12) / 0.5)
        pts[sl] = np.stack([xs, ys], axis=1)
    pts[27:31] = np.stack([np.full(4, cx), cy - np.linspace(0.25, -0.1, 4) * ry], axis=1)
    pts[31:36] = np.stack([cx + np.linspace(-0.15, 0.15, 5) * rx, np.full(5, cy + 0.13 * ry)], axis=1)
    eye_y, eye_h = cy - 0.2 * ry, 0.06 * ry * eye
    for side, start in ((-1, 36), (1, 42)):
        ex = cx + side * 0.38 * rx
        ang = np.linspace(0, 2 * np.pi, 6, endpoint=False) + np.pi
        pts[start:start + 6] = np.stack([ex + 0.17 * rx * np.cos(ang), eye_y + eye_h * np.sin(ang)], axis=1)
    mouth_y, half_w = cy + 0.42 * ry, 0.38 * rx
    u = np.linspace(-1, 1, 7)
    bend = -curve * 0.14 * ry * (u**2 - 0.5)  # smile lifts the corners
    gap = max(opening, 0.02) * 0.16 * ry
    upper = np.stack([cx + u * half_w, mouth_y + bend - gap * (1 - u**2)], axis=1)
    lower = np.stack([cx + u[::-1] * half_w, mouth_y + bend[::-1] + gap * (1 - u[::-1] ** 2)], axis=1)
    pts[48:55] = upper
    pts[55:60] = lower[1:6]
    ui = np.linspace(-0.6, 0.6, 5)
    bi = -curve * 0.14 * ry * (ui**2 - 0.5)
    pts[60:65] = np.stack([cx + ui * half_w, mouth_y + bi - 0.6 * gap * (1 - ui**2)], axis=1)
    pts[65:68] = np.stack([cx + ui[3:0:-1] * half_w, mouth_y + bi[3:0:-1] + 0.6 * gap * (1 - ui[3:0:-1] ** 2)], axis=1)
    return pts


def background(actor: Actor, rng: np.random.Generator) -> np.ndarray:
    """The actor's backdrop with a little per-clip texture (static over the clip, so it compresses)."""
    img = np.empty((HEIGHT, WIDTH, 3), dtype=np.int16)
    img[:] = actor.background
    return np.clip(img + rng.integers(-6, 7, size=img.shape), 0, 255).astype(np.uint8)


def draw_face(backdrop: np.ndarray, actor: Actor, pts: np.ndarray) -> np.ndarray:
    import cv2

    img = backdrop.copy()
    cx, cy = pts[27, 0], (pts[19, 1] + pts[8, 1]) / 2
    rx, ry = (pts[16, 0] - pts[0, 0]) / 2, (pts[8, 1] - pts[19, 1]) * 0.62
    cv2.ellipse(img, (int(cx), int(cy)), (int(rx), int(ry)), 0, 0, 360, actor.skin, -1, cv2.LINE_AA)
    dark = tuple(int(c * 0.35) for c in actor.skin)
    for sl in (slice(17, 22), slice(22, 27)):
        cv2.polylines(img, [pts[sl].astype(np.int32)], False, dark, 3, cv2.LINE_AA)
    for start in (36, 42):
        cv2.fillPoly(img, [pts[start:start + 6].astype(np.int32)], (30, 30, 30), cv2.LINE_AA)
    cv2.polylines(img, [pts[27:31].astype(np.int32)], False, dark, 2, cv2.LINE_AA)
    cv2.fillPoly(img, [pts[48:60].astype(np.int32)], (90, 20, 40), cv2.LINE_AA)
    cv2.fillPoly(img, [pts[60:68].astype(np.int32)], (20, 5, 10), cv2.LINE_AA)
    return img


def synth_audio(actor: Actor, name: ClipName, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """Mono float32 speech-like signal at AUDIO_RATE; also the syllable rate and phase (the mouth follows them)."""
    s = _strength(name)
    pitch, slope, rate, loud, vibrato, tilt = (n + s * (e - n) for e, n in zip(VOICE[name.emotion], VOICE[1]))
    rate *= rng.uniform(0.93, 1.07)
    phase = rng.uniform(0, 1)
    t = np.arange(int(DURATION * AUDIO_RATE)) / AUDIO_RATE
    f0 = actor.f0 * pitch * rng.uniform(0.96, 1.04) * (1 + slope * (t - 1.5))
    f0 = f0 * (1 + vibrato * np.sin(2 * np.pi * 5.5 * t))
    f0 = f0 * (1 + 0.03 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phi = 2 * np.pi * np.cumsum(f0) / AUDIO_RATE
    vowel = (1.0, 0.6, 0.3, 0.5) if name.statement == 1 else (0.5, 0.9, 0.6, 0.2)
    sig = np.zeros_like(t)
    for h in range(1, 9):
        sig += actor.timbre[h - 1] * vowel[(h - 1) % 4] * h ** (tilt - 1.0) * np.sin(h * phi)
    env = syllable_envelope(t, rate, phase)
    sig = sig * env * loud * 0.25
    sig += rng.normal(0, 0.004, size=t.shape)
    return sig.astype(np.float32), rate, phase


def write_clip(path: Path, frames: list[np.ndarray], audio: np.ndarray, rate: int = AUDIO_RATE,
               fps: int = FPS, faststart: bool = False) -> None:
    """Mux RGB frames (H.264, yuv420p) and audio (AAC; ``audio`` mono (n,) or stereo (2, n)) into an mp4, as
    RAVDESS's files are. ``faststart``: the index before the media data (as web video is), so that a truncated
    copy still opens."""
    import av

    audio = np.asarray(audio, dtype=np.float32)
    stereo = audio.ndim == 2
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"} if faststart else None) as out:
        v = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "26", "threads": "1"})
        v.height, v.width = frames[0].shape[:2]
        v.pix_fmt = "yuv420p"
        a = out.add_stream("aac", rate=rate, layout="stereo" if stereo else "mono")
        a.bit_rate = 96000 if stereo else 48000
        for img in frames:
            for pkt in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in v.encode():
            out.mux(pkt)
        step = 1024
        for i in range(0, audio.shape[-1], step):
            chunk = np.ascontiguousarray(audio[..., i:i + step])
            frame = (av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo") if stereo else
                     av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono"))
            frame.sample_rate = rate
            frame.pts = i
            for pkt in a.encode(frame):
                out.mux(pkt)
        for pkt in a.encode():
            out.mux(pkt)


def make_clip(out_dir: Path, name: ClipName, actor: Actor, seed: int) -> dict:
    """Write one clip and its landmark CSV; returns its ground truth (face boxes per frame)."""
    rng = _clip_rng(name, seed)
    audio, rate, phase = synth_audio(actor, name, rng)
    offsets = np.array([rng.uniform(-6, 6), rng.uniform(-4, 4), rng.uniform(0, 6)])
    n_frames = int(DURATION * FPS)
    frames, landmarks = [], []
    backdrop = background(actor, rng)
    for i in range(n_frames):
        t = i / FPS
        speech = 0.35 * float(syllable_envelope(np.array([t]), rate, phase)[0])
        pts = face_landmarks(actor, name, t, offsets, speech)
        landmarks.append(pts)
        frames.append(draw_face(backdrop, actor, pts))
    clip = out_dir / f"Actor_{name.actor:02d}" / f"{name.stem}.mp4"
    with atomic_path(clip) as tmp:
        write_clip(tmp, frames, audio)
    write_landmarks(out_dir / "landmarks" / f"{name.stem}.csv", np.asarray(landmarks), FPS)
    lm = np.asarray(landmarks)
    boxes = np.stack([lm[:, :, 0].min(1), lm[:, :, 1].min(1), lm[:, :, 0].max(1), lm[:, :, 1].max(1)], axis=1)
    return {"clip": str(clip.relative_to(out_dir)), "face_boxes": boxes.round(2).tolist()}


def _make_clip_job(args):
    out_dir, name, actor, seed = args
    return name.stem, make_clip(out_dir, name, actor, seed)


def generate(out_dir: str | Path, actors: int = 8, seed: int = 0, workers: int = 1, progress: bool = True) -> Path:
    """Write the synthetic data set; ``truth.json`` holds each clip's face boxes (for tests of the crop)."""
    from tqdm import tqdm

    from ..workers import pool as worker_pool

    out_dir = Path(out_dir)
    if not 1 <= actors <= 24:
        raise DataError(f"--actors must be 1..24 (RAVDESS has 24 actors), got {actors}")
    (out_dir / "landmarks").mkdir(parents=True, exist_ok=True)
    import shutil

    need, free = actors * 60 * CLIP_BYTES, shutil.disk_usage(out_dir).free
    if need > free:
        raise CfnsrError(f"cannot write {out_dir}: {actors} actors' clips take about {need / 1e6:.0f} MB and the disk "
                         f"has {free / 1e6:.0f} MB free")
    jobs = []
    for a in range(1, actors + 1):
        (out_dir / f"Actor_{a:02d}").mkdir(exist_ok=True)
        actor = make_actor(a, seed)
        jobs += [(out_dir, name, actor, seed) for name in speech_clips(a)]
    truth = {}
    bar = tqdm(total=len(jobs), desc="synth-ravdess", unit="clip", disable=not progress)
    if workers > 1:
        with worker_pool(workers) as pool:
            for stem, gt in pool.map(_make_clip_job, jobs, chunksize=4):
                truth[stem] = gt
                bar.update()
    else:
        for job in jobs:
            stem, gt = _make_clip_job(job)
            truth[stem] = gt
            bar.update()
    bar.close()
    meta = {"generator": "cfnsr synth-ravdess", "actors": actors, "seed": seed, "width": WIDTH, "height": HEIGHT,
            "fps": FPS, "audio_rate": AUDIO_RATE, "clips": dict(sorted(truth.items()))}
    write_json(out_dir / "truth.json", meta)
    return out_dir

"""``cfnsr predict VIDEO.mp4``: decode, the same feature code as training, run, report the emotion."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.features import extract_clip, to_model_inputs
from ..data.ravdess import find_landmarks, parse_name
from ..data.spec import PreprocessSpec
from ..errors import ArtifactError, DataError
from . import device_options, load


def _landmarks_for(video: Path, landmarks: str | Path | None) -> Path | None:
    if landmarks is not None:
        return Path(landmarks)
    try:  # a clip in RAVDESS layout: look where `cfnsr preprocess` would
        return find_landmarks(video.parent.parent, parse_name(video))
    except DataError:
        return None


def _save_inputs(folder: Path, video: np.ndarray, audio: np.ndarray) -> None:
    from ..fileio import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in (("video.npy", video), ("audio.npy", audio)):
        with atomic_path(folder / name) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(arr, dtype=np.float32))


def predict(video: str | Path, model: str | Path, backend: str | None = None, landmarks: str | Path | None = None,
            allow_center_crop: bool = False, save_inputs: str | Path | None = None, device: str | None = None) -> dict:
    """The emotion of one clip. ``save_inputs``: a folder where the preprocessed model inputs are also written as
    ``video.npy`` and ``audio.npy`` (float32, batch 1), the buffers the C++ runtime takes."""
    video = Path(video)
    with load(model, backend, **device_options(model, backend, device)) as runner:
        if not runner.preprocess:
            raise ArtifactError(f"{model} records no preprocessing spec (cfnsr.preprocess); re-export it with cfnsr")
        spec = PreprocessSpec.from_dict(runner.preprocess)
        lm = _landmarks_for(video, landmarks)
        feats = extract_clip(video, spec, lm, use_detector=True)
        if feats.crop_method == "center" and not allow_center_crop:
            raise DataError(
                f"no face found in {video}: tried a landmark file ({'none found' if lm is None else lm}) and OpenCV's "
                f"Haar face detector on {spec.frames} frames. Pass --landmarks CSV, or --allow-center-crop to "
                "classify the centre of the frame anyway")
        v, a = to_model_inputs(feats.frames, feats.mfcc, spec)
        if save_inputs is not None:
            _save_inputs(Path(save_inputs), v[None], a[None])
        logits = runner(v[None], a[None])[0].astype(np.float64)
        if not np.isfinite(logits).all():
            raise ArtifactError(f"{model} returned non-finite logits for {video} ({logits.tolist()}): the model is "
                                "broken (a diverged checkpoint?); nothing is predicted")
        labels = runner.labels
    p = np.exp(logits - logits.max())
    p /= p.sum()
    best = int(p.argmax())
    return {"video": str(video), "model": str(model), "backend": runner.backend, "device": runner.device,
            "emotion": labels[best],
            "label_id": best, "probabilities": {name: float(x) for name, x in zip(labels, p)},
            "crop": feats.crop_method, "audio_padded": feats.audio_padded,
            **({"crop_note": feats.crop_note} if feats.crop_note else {}),
            **({"saved_inputs": str(save_inputs)} if save_inputs is not None else {})}

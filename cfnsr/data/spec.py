"""PreprocessSpec: the one description of how a clip becomes model input, stored in checkpoints and exported files."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import DataError
from ..serial import JsonDataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessSpec(JsonDataclass):
    """Defaults reproduce MSAF/CFN-SR's RAVDESS preprocessing.

    ``channel_order`` is ``"bgr"`` by default because the published pipeline read its JPEG frames with OpenCV
    (BGR) and normalised them with ImageNet's RGB mean/std; published checkpoints expect blue in channel 0.
    ``msaf_compat`` crops the face from the whole frame first squashed to ``image_size`` (as MSAF did) instead of
    from the full-resolution frame.
    """

    frames: int = 30
    image_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "bgr"
    sample_rate: int = 44100
    audio_offset: float = 0.5
    audio_duration: float = 2.45
    n_mfcc: int = 13
    mfcc_frames: int = 212
    n_fft: int = 2048
    hop_length: int = 512
    msaf_compat: bool = False

    def __post_init__(self) -> None:
        def bad(name, want):
            return DataError(f"preprocess {name} is {getattr(self, name)!r}; expected {want}")

        for name in ("frames", "image_size", "sample_rate", "n_mfcc", "mfcc_frames", "n_fft", "hop_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, "a positive integer")
        for name, lo in (("audio_offset", 0.0), ("audio_duration", None)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or \
                    (v < lo if lo is not None else v <= 0):
                raise bad(name, "a finite number of seconds, " + ("at least 0" if lo is not None else "positive"))
        for name, positive in (("mean", False), ("std", True)):
            v = getattr(self, name)
            if not isinstance(v, (tuple, list)) or len(v) != 3 or \
                    not all(isinstance(x, (int, float)) and math.isfinite(x) and (x > 0 or not positive) for x in v):
                raise bad(name, "three finite numbers" + (", each positive" if positive else ""))
        if self.channel_order not in ("rgb", "bgr"):
            raise DataError(f"channel_order must be 'rgb' or 'bgr', got {self.channel_order!r}")
        expected = 1 + int(round(self.audio_duration * self.sample_rate)) // self.hop_length
        if expected != self.mfcc_frames:
            raise DataError(
                f"mfcc_frames {self.mfcc_frames} does not match {self.audio_duration} s at {self.sample_rate} Hz "
                f"with hop {self.hop_length} (gives {expected})"
            )

    @classmethod
    def for_model(cls, model_config, **overrides) -> "PreprocessSpec":
        """The spec whose output shapes match a ModelConfig (frames, image size, MFCC shape)."""
        return cls(frames=model_config.frames, image_size=model_config.image_size, n_mfcc=model_config.mfcc_bins,
                   mfcc_frames=model_config.mfcc_frames, **overrides)

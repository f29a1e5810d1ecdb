"""Model configuration: one dataclass, a few named variants.

A checkpoint stores its ``ModelConfig`` as a plain dict, so export and inference rebuild exactly the network that
was trained (see :func:`cfnsr.model.load_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CfnsrError
from ..serial import JsonDataclass


@dataclass(frozen=True)
class ModelConfig(JsonDataclass):
    """Everything that decides the shape of a CFN-SR network.

    The defaults are the paper's network (arXiv 2111.02172, published code skeletonNN/CFN-SR).
    """

    name: str = "cfn-sr"
    num_classes: int = 8
    # Inputs: video (B, 3, frames, image_size, image_size), audio MFCC (B, mfcc_bins, mfcc_frames).
    frames: int = 30
    image_size: int = 224
    mfcc_bins: int = 13
    mfcc_frames: int = 212
    # Video branch: 3D ResNeXt (Hara et al.), bottleneck expansion 2, shortcut B.
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    planes: tuple[int, int, int, int] = (128, 256, 512, 1024)
    stem_channels: int = 64
    cardinality: int = 32
    # The fused published model drops the ReLU after the stem's BatchNorm (its Sequential skips ``relu``).
    stem_relu: bool = False
    # Audio branch: MFCCNet (conv -> ReLU -> BN), features taken after bn3.
    audio_channels: tuple[int, int, int] = (32, 32, 64)
    # Fusion: pre-norm transformer over the audio sequence, then spatial attention on the video map.
    embed_dim: int = 64
    num_heads: int = 8
    transformer_layers: int = 5
    ffn_dim: int = 256
    attn_dropout: float = 0.1
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    embed_dropout: float = 0.3
    audio_dropout1: float = 0.2
    audio_dropout2: float = 0.4

    def __post_init__(self) -> None:
        if self.embed_dim != self.audio_channels[2]:
            raise CfnsrError(
                f"embed_dim ({self.embed_dim}) must equal the audio branch's last width audio_channels[2] "
                f"({self.audio_channels[2]}): the transformer runs over the audio feature sequence"
            )
        if self.embed_dim % self.num_heads:
            raise CfnsrError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if min(self.planes) < 32:
            raise CfnsrError(f"planes {self.planes}: each must be >= 32 (group width is planes // 32)")

    @property
    def clip_bytes(self) -> int:
        """Bytes of one clip's float32 inputs (video and MFCC): what a batch's buffers hold per item."""
        return 4 * (3 * self.frames * self.image_size ** 2 + self.mfcc_bins * self.mfcc_frames)

    @property
    def video_features(self) -> int:
        return self.planes[3] * 2

    @property
    def audio_length(self) -> int:
        """Time steps of the audio feature map after bn3 (26 for 212 MFCC frames)."""
        n = self.mfcc_frames - 2  # conv1 k7 p2
        n = n - 2  # conv2 k7 p2
        n = n // 8  # maxpool 8
        return n  # conv3 k5 p2 keeps the length

    @property
    def audio_features(self) -> int:
        return self.audio_channels[2] * self.audio_length

    @property
    def video_map(self) -> tuple[int, int, int]:
        """(T', H', W') of the video feature map after layer4."""

        def down(n: int, k: int, s: int, p: int) -> int:
            return (n + 2 * p - k) // s + 1

        t, h = self.frames, self.image_size
        h = down(h, 7, 2, 3)  # stem, temporal stride 1
        t, h = down(t, 3, 2, 1), down(h, 3, 2, 1)  # maxpool
        for _ in range(3):  # layer2..4 stride 2
            t, h = down(t, 3, 2, 1), down(h, 3, 2, 1)
        return t, h, h


_REGISTRY: dict[str, ModelConfig] = {
    "cfn-sr": ModelConfig(),
    # Same code at a size that trains on a CPU in tests: fewer frames and pixels, thinner and shallower ResNeXt.
    # The video map after layer4 is (2, 2, 2), so per-time-slice spatial attention is still exercised.
    "cfn-sr-tiny": ModelConfig(
        name="cfn-sr-tiny",
        frames=20,
        image_size=64,
        layers=(1, 1, 1, 1),
        planes=(32, 64, 128, 256),
        stem_channels=16,
        cardinality=8,
    ),
}


def list_configs() -> list[str]:
    return sorted(_REGISTRY)


def get_config(name: str, **overrides) -> ModelConfig:
    """Return the named configuration, optionally with fields overridden."""
    try:
        cfg = _REGISTRY[name]
    except KeyError:
        raise CfnsrError(f"unknown model configuration {name!r}; choose one of {list_configs()}") from None
    return cfg.replace(**overrides) if overrides else cfg

"""Import checkpoints in the published code's layout (skeletonNN/CFN-SR, built on anita-hu/MSAF).

Published fused model (``MSAFNet``) keys and their cfnsr names:

==============================================  ==========================================
``video_model_blocks.0.0`` (conv1)              ``video.conv1``
``video_model_blocks.0.1`` (bn1)                ``video.bn1``
``video_model_blocks.0.{3,4,5,6}`` (layer1-4)   ``video.layer{1,2,3,4}``
``audio_model_blocks.0.{0,2,3,6,8,10}``         ``audio.{conv1,bn1,conv2,bn2,conv3,bn3}``
``msaf.0.*``                                    ``fusion.*``
``fc``                                          ``fc``
==============================================  ==========================================

Unimodal checkpoints: the 3D ResNeXt (``conv1``, ``bn1``, ``layer1-4``, ``fc``) and MFCCNet (``conv1``, ``bn1``,
``conv2``, ``bn2``, ``conv3``, ``bn3``, ``fc1``); their classifier layers are dropped.
"""

from __future__ import annotations

import os

import torch

from ..errors import CheckpointError
from .checkpoint import _torch_load, describe_mismatch
from .config import ModelConfig
from .network import CFNSR

# Buffers the published modules register that carry no weights (fairseq bookkeeping).
_IGNORED_ORIGINAL = ("msaf.0.audio_attention.version", "msaf.0.audio_attention.embed_positions._float_tensor")

_VIDEO_FUSED = {"conv1": "0", "bn1": "1", "layer1": "3", "layer2": "4", "layer3": "5", "layer4": "6"}
_AUDIO_FUSED = {"conv1": "0", "bn1": "2", "conv2": "3", "bn2": "6", "conv3": "8", "bn3": "10"}


def fused_key(ours: str) -> str:
    """The published fused-model key for a cfnsr state-dict key."""
    head, _, rest = ours.partition(".")
    if head == "video":
        mod, _, tail = rest.partition(".")
        return f"video_model_blocks.0.{_VIDEO_FUSED[mod]}.{tail}"
    if head == "audio":
        mod, _, tail = rest.partition(".")
        return f"audio_model_blocks.0.{_AUDIO_FUSED[mod]}.{tail}"
    if head == "fusion":
        return f"msaf.0.{rest}"
    if head == "fc":
        return ours
    raise KeyError(ours)


def to_original(model: CFNSR) -> dict[str, torch.Tensor]:
    """The model's weights in the published fused layout (what ``torch.save(model.state_dict())`` wrote there)."""
    sd = {fused_key(k): v.clone() for k, v in model.state_dict().items()}
    sd["msaf.0.audio_attention.version"] = torch.tensor([2.0])
    sd["msaf.0.audio_attention.embed_positions._float_tensor"] = torch.zeros(1)
    return sd


def _strip_module(sd: dict) -> dict:
    """Drop the ``module.`` prefix that ``nn.DataParallel`` adds."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _read_state_dict(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    sd = _torch_load(path)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} is not a {what} state dict (expected a dict of tensors)")
    return _strip_module(dict(sd))


def _load_layout(model: CFNSR, file_sd: dict, to_file: dict[str, str], source: str) -> None:
    """Load ``file_sd`` (keys in the published layout) into the cfnsr keys of ``to_file`` (cfnsr -> published).

    Raises a CheckpointError listing missing, unexpected and wrongly shaped keys.
    """
    ours = model.state_dict()
    file_sd = dict(file_sd)
    # BatchNorm's num_batches_tracked appeared in PyTorch 0.4.1; older files lack it and it carries no weights.
    for k, fk in to_file.items():
        if k.endswith("num_batches_tracked") and fk not in file_sd:
            file_sd[fk] = torch.tensor(0)
    problem = describe_mismatch({fk: ours[k].shape for k, fk in to_file.items()}, file_sd)
    if problem:
        raise CheckpointError(
            f"{source} does not match the published CFN-SR layout for configuration {model.config.name!r}: {problem}"
        )
    model.load_state_dict({k: file_sd[fk] for k, fk in to_file.items()}, strict=False)


def _source(path_or_sd) -> str:
    return "state dict" if isinstance(path_or_sd, dict) else str(path_or_sd)


def _as_state_dict(path_or_sd, what: str) -> dict:
    if isinstance(path_or_sd, dict):
        return _strip_module(dict(path_or_sd))
    return _read_state_dict(path_or_sd, what)


def from_original_fused(path_or_sd, cfg: ModelConfig | None = None) -> CFNSR:
    """Build a cfnsr model from a published fused checkpoint (``fold_N_msaf_ravdess_best.pth``)."""
    model = CFNSR(cfg or ModelConfig())
    sd = {k: v for k, v in _as_state_dict(path_or_sd, "fused CFN-SR").items() if k not in _IGNORED_ORIGINAL}
    _load_layout(model, sd, {k: fused_key(k) for k in model.state_dict()}, _source(path_or_sd))
    return model.eval()


def from_original_unimodal(video, audio, cfg: ModelConfig | None = None, seed: int = 0) -> CFNSR:
    """Initialise the two branches from published unimodal checkpoints (``fold_N_resnext50_best.pth`` and
    ``fold_N_mfccNet_best.pth``); their classifiers are dropped, and the fusion block and the final classifier start
    from a seeded random initialisation, as the published recipe did."""
    torch.manual_seed(seed)
    model = CFNSR(cfg or ModelConfig())
    for path_or_sd, prefix, classifier in ((video, "video", "fc."), (audio, "audio", "fc1.")):
        sd = _as_state_dict(path_or_sd, f"unimodal {prefix}")
        sd = {k: v for k, v in sd.items() if not k.startswith(classifier)}
        to_file = {k: k[len(prefix) + 1:] for k in model.state_dict() if k.startswith(prefix + ".")}
        _load_layout(model, sd, to_file, _source(path_or_sd))
    return model.eval()

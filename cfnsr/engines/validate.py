"""``cfnsr validate``: any artifact on any backend against its PyTorch checkpoint, on the same held-out clips."""

from __future__ import annotations

from pathlib import Path

from ..data.cache import FeatureCache
from ..errors import ArtifactError
from ..model.checkpoint import Checkpoint
from . import device_options, load
from .accuracy import GateResult, GateThresholds, batched, compare, held_out_arrays, held_out_media
from .runners import TorchRunner


def validate(artifact: str | Path, reference: str | Path, data: str | Path, backend: str | None = None,
             clips: int | None = None, thresholds: GateThresholds | None = None, precision: str | None = None,
             log=print, device: str | None = None) -> GateResult:
    """``device`` (cpu, cuda, auto) places both the artifact's backend and the torch reference."""
    artifact, reference = Path(artifact), Path(reference)
    cache = FeatureCache.open(data)
    ckpt = Checkpoint.load(reference)
    cache.check_checkpoint(ckpt.config, ckpt.preprocess)
    split = ckpt.split
    with load(artifact, backend, **device_options(artifact, backend, device)) as runner, \
            TorchRunner(ckpt, **device_options(reference, "torch", device)) as ref:
        source = runner.metadata.get("source_sha256")
        if source and source != ckpt.sha256:
            raise ArtifactError(f"{artifact} was exported from another checkpoint than {reference} "
                                f"(its cfnsr.source_sha256 is {source[:12]}..., the reference is "
                                f"{ckpt.sha256[:12]}...)")
        precision = precision or runner.metadata.get("precision") or "fp32"
        video, audio, labels = held_out_arrays(cache, split, clips, log)
        expected = ref(video=video[:1], audio=audio[:1]).shape
        got_ref = batched(ref, video=video, audio=audio)
        if runner.kind == "media":  # the same clips as crops + PCM: the front end is checked too
            got = batched(runner, **held_out_media(cache, split, clips))
        else:
            got = batched(runner, video=video, audio=audio)
        if got.shape[1:] != expected[1:]:
            raise ArtifactError(f"{artifact} returns logits of shape {got.shape[1:]}, expected {expected[1:]}")
    result = compare(got_ref, got, labels, precision, thresholds)
    log(f"{runner.backend} on {runner.device} vs torch on {ref.device}: " + result.summary())
    return result

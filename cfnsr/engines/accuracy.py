"""How far an artifact's logits are from its PyTorch reference on the same clips: the accuracy gate.

Reported: top-1 agreement, accuracy of each and the difference in points, max |delta logit|, mean cosine of the
logits, and per-class confusion of each. Default gates by precision (``GateThresholds.DEFAULTS``, overridable):

* fp32: agreement 100% and max |delta logit| <= 1e-3
* fp16: agreement >= 99%
* int8: accuracy drop <= 1.0 point and agreement >= 95%

Non-finite logits, on either side, fail every gate. Used by ``cfnsr validate`` (any runner) and by the export's
gate (``cfnsr.export.divergence`` adds, for a failed int8 export, where it departs from fp32 first).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from ..data.cache import ClipEntry, FeatureCache
from ..data.features import to_model_inputs
from ..data.splits import Split
from ..errors import ArtifactError, CfnsrError, DataError
from ..metrics import classification_metrics


@dataclass(frozen=True)
class GateThresholds:
    """Gate thresholds; ``None`` means "the precision's default" (and, after ``over``, "not checked").

    Range-checked once, here: a NaN or an out-of-range value would switch a gate off without a word.
    """

    min_agreement: float | None = None  # top-1 agreement, 0..1
    max_accuracy_drop_points: float | None = None  # accuracy points lost, >= 0
    max_abs_logit: float | None = None  # largest |logit difference|, > 0

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise CfnsrError(f"gate threshold {f.name} must be a finite number, got {v!r}")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise CfnsrError(f"--min-agreement must be between 0 and 1, got {self.min_agreement}")
        if self.max_accuracy_drop_points is not None and not 0 <= self.max_accuracy_drop_points <= 100:
            raise CfnsrError("--max-accuracy-drop must be between 0 and 100 points, got "
                             f"{self.max_accuracy_drop_points}")
        if self.max_abs_logit is not None and not self.max_abs_logit > 0:
            raise CfnsrError(f"--max-abs-logit must be positive, got {self.max_abs_logit}")

    @classmethod
    def from_options(cls, min_agreement=None, max_accuracy_drop=None, max_abs_logit=None) -> "GateThresholds":
        """The CLI's --min-agreement / --max-accuracy-drop / --max-abs-logit (unset ones keep the defaults)."""
        return cls(min_agreement, max_accuracy_drop, max_abs_logit)

    def over(self, precision: str) -> "GateThresholds":
        """These overrides on top of ``precision``'s defaults."""
        base = DEFAULT_GATES.get(precision, GateThresholds())
        given = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return replace(base, **given)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


DEFAULT_GATES = {
    "fp32": GateThresholds(min_agreement=1.0, max_abs_logit=1e-3),
    "fp16": GateThresholds(min_agreement=0.99),
    "int8": GateThresholds(min_agreement=0.95, max_accuracy_drop_points=1.0),
}


@dataclass
class GateResult:
    precision: str
    clips: int
    agreement: float
    reference_accuracy: float | None
    artifact_accuracy: float | None
    accuracy_drop_points: float | None
    max_abs_logit: float
    mean_cosine: float
    thresholds: dict  # the thresholds applied (GateThresholds.to_dict())
    failures: list[str] = field(default_factory=list)
    reference_confusion: list | None = None
    artifact_confusion: list | None = None
    divergence: list | None = None
    suggestion: str | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        acc = ""
        if self.reference_accuracy is not None:
            acc = (f", accuracy {100 * self.artifact_accuracy:.2f}% vs {100 * self.reference_accuracy:.2f}% "
                   f"({-self.accuracy_drop_points:+.2f} points)")
        head = (f"{'PASSED' if self.passed else 'FAILED'} {self.precision} gate on {self.clips} clips: agreement "
                f"{100 * self.agreement:.2f}%{acc}, max |dlogit| {self.max_abs_logit:.3g}, "
                f"cosine {self.mean_cosine:.6f}")
        if self.failures:
            head += "\n  " + "\n  ".join(self.failures)
        return head


def held_out_clips(cache: FeatureCache, split: Split | None, limit: int | None) -> list[ClipEntry]:
    """The checkpoint's evaluation (test) actors' clips (the whole cache without a split), ``limit`` spread evenly."""
    actors = split.test if split else None
    clips = cache.select(actors)
    if not clips:
        raise DataError(f"the cache {cache.root} has no clips of the held-out actors {list(actors or [])}")
    n = len(clips) if limit is None else min(limit, len(clips))
    idx = np.linspace(0, len(clips) - 1, n).round().astype(int) if n < len(clips) else np.arange(len(clips))
    return [clips[i] for i in idx]


def held_out_arrays(cache: FeatureCache, split: Split | None, limit: int | None, log):
    """Model inputs (video, MFCC features) and labels of the held-out clips (``held_out_clips``)."""
    clips = held_out_clips(cache, split, limit)
    pairs = [to_model_inputs(np.asarray(cache.frames(c.stem)), cache.mfcc(c.stem), cache.spec) for c in clips]
    video = np.stack([v for v, _ in pairs])
    audio = np.stack([a for _, a in pairs])
    labels = np.array([int(c.label) for c in clips])
    actors = sorted({c.actor for c in clips})
    log(f"accuracy gate on {len(clips)} held-out clips of actors {actors}")
    return video, audio, labels


def held_out_media(cache: FeatureCache, split: Split | None, limit: int | None) -> dict[str, np.ndarray]:
    """A media artifact's inputs for the same clips, by name: ``frames``, the cached uint8 face crops, and ``pcm``,
    the PCM window of each clip's raw audio (decoded and resampled as preprocessing did)."""
    from ..data.features import audio_segment, read_audio

    clips = held_out_clips(cache, split, limit)
    frames = np.stack([np.asarray(cache.frames(c.stem)) for c in clips])
    pcm = np.stack([audio_segment(read_audio(cache.source(c), cache.spec.sample_rate), cache.spec)[0] for c in clips])
    return {"frames": frames, "pcm": pcm}


def batched(fn, *arrays, batch: int = 8, **named) -> np.ndarray:
    """``fn`` over the clips in batches, concatenated: every array (positional, or named as the artifact names its
    inputs) is cut along its first axis and passed on the same way."""
    n = len((arrays or tuple(named.values()))[0])
    return np.concatenate([fn(*(a[i:i + batch] for a in arrays), **{k: a[i:i + batch] for k, a in named.items()})
                           for i in range(0, n, batch)])


def compare(reference: np.ndarray, artifact: np.ndarray, labels: np.ndarray | None, precision: str,
            thresholds: GateThresholds | None = None) -> GateResult:
    """The gate of ``precision`` (its defaults, overridden by ``thresholds``) on two sets of logits."""
    reference, artifact = np.asarray(reference, np.float64), np.asarray(artifact, np.float64)
    if reference.shape != artifact.shape:
        raise ArtifactError(f"logit shapes differ: reference {reference.shape}, artifact {artifact.shape}")
    th = (thresholds or GateThresholds()).over(precision)
    agree = float((reference.argmax(1) == artifact.argmax(1)).mean())
    cos = float(np.mean(np.sum(reference * artifact, 1) /
                        np.maximum(np.linalg.norm(reference, axis=1) * np.linalg.norm(artifact, axis=1), 1e-12)))
    res = GateResult(precision, len(reference), agree, None, None, None, float(np.abs(reference - artifact).max()),
                     cos, th.to_dict())
    # NaN defeats every < and > below, so non-finite logits fail first, on either side.
    for side, logits in (("reference", reference), ("artifact", artifact)):
        bad = ~np.isfinite(logits)
        if bad.any():
            rows = np.nonzero(bad.any(1))[0]
            res.failures.append(f"{side} logits are not finite in {len(rows)} of {len(logits)} clips "
                                f"(first: clip {int(rows[0])})")
    if labels is not None:
        ref_m, art_m = classification_metrics(reference, labels), classification_metrics(artifact, labels)
        res.reference_accuracy, res.artifact_accuracy = ref_m["top1"], art_m["top1"]
        res.accuracy_drop_points = 100 * (ref_m["top1"] - art_m["top1"])
        res.reference_confusion, res.artifact_confusion = ref_m["confusion"], art_m["confusion"]
    if th.min_agreement is not None and agree < th.min_agreement:
        res.failures.append(f"agreement {100 * agree:.2f}% < {100 * th.min_agreement:.2f}%")
    if th.max_abs_logit is not None and not res.max_abs_logit <= th.max_abs_logit:
        res.failures.append(f"max |dlogit| {res.max_abs_logit:.3g} > {th.max_abs_logit:.3g}")
    if th.max_accuracy_drop_points is not None:
        if res.accuracy_drop_points is None:
            res.failures.append("accuracy drop cannot be checked without labels")
        elif res.accuracy_drop_points > th.max_accuracy_drop_points:
            res.failures.append(f"accuracy drop {res.accuracy_drop_points:.2f} points > "
                                f"{th.max_accuracy_drop_points:.2f}")
    return res

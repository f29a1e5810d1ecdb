"""The accuracy gate: an artifact against its PyTorch reference on the same clips (DESIGN.md section 4).

Reported: top-1 agreement, accuracy of each and the difference in points, max |delta logit|, mean cosine of the
logits, and per-class confusion of each. Default gates by precision (overridable):

* fp32: agreement 100% and max |delta logit| <= 1e-3
* fp16: agreement >= 99%
* int8: accuracy drop <= 1.0 point and agreement >= 95%

When int8 fails, ``first_divergence`` compares intermediate tensors of the fp32 and int8 graphs (ONNX Runtime's
qdq_loss_debug) and names the layers where the error appears first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..data.cache import FeatureCache
from ..data.dataset import CacheDataset
from ..data.splits import Split
from ..errors import DataError
from ..train.metrics import classification_metrics

DEFAULT_GATES = {
    "fp32": {"min_agreement": 1.0, "max_abs_logit": 1e-3},
    "fp16": {"min_agreement": 0.99},
    "int8": {"min_agreement": 0.95, "max_accuracy_drop_points": 1.0},
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
    thresholds: dict
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
                f"{100 * self.agreement:.2f}%{acc}, max |dlogit| {self.max_abs_logit:.3g}, cosine {self.mean_cosine:.6f}")
        if self.failures:
            head += "\n  " + "\n  ".join(self.failures)
        return head


def held_out_arrays(cache: FeatureCache, split: Split | None, limit: int | None, log):
    """Clips of the checkpoint's evaluation (test) actors; the whole cache when it records no split."""
    actors = split.test if split else None
    ds = CacheDataset(cache, actors)
    if not len(ds):
        raise DataError(f"the cache {cache.root} has no clips of the held-out actors {list(actors or [])}")
    n = len(ds) if limit is None else min(limit, len(ds))
    idx = np.linspace(0, len(ds) - 1, n).round().astype(int) if n < len(ds) else np.arange(len(ds))
    items = [ds[int(i)] for i in idx]
    video = np.stack([v.numpy() for v, _, _ in items])
    audio = np.stack([a.numpy() for _, a, _ in items])
    labels = np.array([int(y) for _, _, y in items])
    log(f"accuracy gate on {n} held-out clips of actors {list(actors) if actors else 'all'}")
    return video, audio, labels


def batched(fn, video, audio, batch: int = 8) -> np.ndarray:
    """``fn`` over the clips in batches, concatenated."""
    return np.concatenate([fn(video[i:i + batch], audio[i:i + batch]) for i in range(0, len(video), batch)])


def compare(reference: np.ndarray, artifact: np.ndarray, labels: np.ndarray | None, precision: str,
            thresholds: dict | None = None) -> GateResult:
    reference, artifact = np.asarray(reference, np.float64), np.asarray(artifact, np.float64)
    if reference.shape != artifact.shape:
        raise ValueError(f"logit shapes differ: reference {reference.shape}, artifact {artifact.shape}")
    th = {**DEFAULT_GATES.get(precision, {}), **(thresholds or {})}
    agree = float((reference.argmax(1) == artifact.argmax(1)).mean())
    cos = float(np.mean(np.sum(reference * artifact, 1) /
                        np.maximum(np.linalg.norm(reference, axis=1) * np.linalg.norm(artifact, axis=1), 1e-12)))
    res = GateResult(precision, len(reference), agree, None, None, None, float(np.abs(reference - artifact).max()),
                     cos, th)
    if labels is not None:
        ref_m, art_m = classification_metrics(reference, labels), classification_metrics(artifact, labels)
        res.reference_accuracy, res.artifact_accuracy = ref_m["top1"], art_m["top1"]
        res.accuracy_drop_points = 100 * (ref_m["top1"] - art_m["top1"])
        res.reference_confusion, res.artifact_confusion = ref_m["confusion"], art_m["confusion"]
    if "min_agreement" in th and agree < th["min_agreement"]:
        res.failures.append(f"agreement {100 * agree:.2f}% < {100 * th['min_agreement']:.2f}%")
    if "max_abs_logit" in th and res.max_abs_logit > th["max_abs_logit"]:
        res.failures.append(f"max |dlogit| {res.max_abs_logit:.3g} > {th['max_abs_logit']:.3g}")
    if "max_accuracy_drop_points" in th:
        if res.accuracy_drop_points is None:
            res.failures.append("accuracy drop cannot be checked without labels")
        elif res.accuracy_drop_points > th["max_accuracy_drop_points"]:
            res.failures.append(f"accuracy drop {res.accuracy_drop_points:.2f} points > "
                                f"{th['max_accuracy_drop_points']:.2f}")
    return res


def first_divergence(fp32_path: str, int8_path: str, inputs: list[dict], top: int = 5) -> list[dict]:
    """Layers where int8 departs from fp32, in graph order of the worst SQNR: ONNX Runtime's qdq_loss_debug
    records every tensor of both graphs on the same inputs and compares the matching ones."""
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(inputs)

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="cfnsr-debug-") as tmp:
        f_aug, q_aug = str(Path(tmp) / "f.onnx"), str(Path(tmp) / "q.onnx")
        modify_model_output_intermediate_tensors(fp32_path, f_aug)
        modify_model_output_intermediate_tensors(int8_path, q_aug)
        f_act = collect_activations(f_aug, Reader())
        q_act = collect_activations(q_aug, Reader())
    matched = create_activation_matching(q_act, f_act)
    errors = compute_activation_error(matched)
    order = list(f_act)  # graph output order follows node order
    rows = []
    for name, err in errors.items():
        sqnr = float(np.mean(err.get("xmodel_err", [np.inf])))
        rows.append({"tensor": name, "sqnr_db": sqnr, "qdq_sqnr_db": float(np.mean(err.get("qdq_err", [np.inf]))),
                     "position": order.index(name) if name in order else len(order)})
    rows.sort(key=lambda r: r["sqnr_db"])
    worst = sorted(rows[:top], key=lambda r: r["position"])
    return worst


def suggest_scope(scope: str) -> str | None:
    narrower = {"all": "no-stem", "no-stem": "no-stem-grouped", "no-grouped": "no-stem-grouped",
                "no-stem-grouped": "audio-fusion"}
    nxt = narrower.get(scope)
    return f"try a narrower --int8-scope {nxt}" if nxt else "int8 of this scope loses too much: export fp16 instead"

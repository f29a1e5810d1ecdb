"""The export report: one dataclass, filled by the export's steps, written beside the artifact as
``NAME.report.json`` (its ``to_dict``), ``.report.md`` and ``.confusion.png``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..engines.accuracy import GateResult
from ..fileio import write_json, write_text
from ..reports import markdown_table, plot_confusion
from .readiness import Readiness

MEDIA_INPUTS = "frames uint8 (B,T,S,S,3) + pcm float32 (B,N)"
MEDIA_NOTE = ("the gate ran on the network with the cache's features; the front end's MFCC matches librosa's within "
              "1e-3 (tests/export/test_frontend.py)")


@dataclass
class ExportReport:
    checkpoint: str
    checkpoint_sha256: str
    precision: str
    model_config: str
    format: str  # the route that wrote the artifact (formats.FORMATS)
    calibration: dict | None = None  # int8: calibrate()'s record plus the placement's
    tensorrt_readiness: Readiness | None = None  # ONNX: the static check (high-precision layers with their reasons)
    media_parity: float | None = None  # --inputs media: the largest |logit| the composition changed
    device: str | None = None  # pt2: the device the package is compiled for
    max_batch: int | None = None  # pt2
    gate: GateResult | None = None
    output: str | None = None  # the file written (NAME.FAILED.* when the gate failed)
    size_bytes: int | None = None
    sha256: str | None = None

    def to_dict(self) -> dict:
        """The JSON report; entries a route does not fill are left out."""
        out = {"checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256,
               "precision": self.precision, "model_config": self.model_config, "format": self.format}
        if self.calibration is not None:
            out["calibration"] = self.calibration
        if self.tensorrt_readiness is not None:
            r = self.tensorrt_readiness
            out["tensorrt_readiness"] = {"ok": r.ok, "problems": r.problems, "high_precision_layers": r.high_precision}
        if self.media_parity is not None:
            out["media"] = {"inputs": MEDIA_INPUTS, "composition_max_abs_logit": self.media_parity,
                            "note": MEDIA_NOTE}
        if self.device is not None:
            out.update(device=self.device, max_batch=self.max_batch)
        if self.gate is not None:
            out["gate"] = self.gate.to_dict()
        for key in ("output", "size_bytes", "sha256"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def markdown(self, artifact: Path) -> str:
        g = self.gate
        lines = [f"# Export report: {artifact.name}", "",
                 f"- checkpoint: `{self.checkpoint}` ({self.model_config})",
                 f"- format: {self.format}, precision: **{self.precision}**, size {self.size_bytes / 1e6:.1f} MB"]
        if self.device is not None:
            lines.append(f"- AOTInductor package for {self.device}, batch 1..{self.max_batch}")
        if self.tensorrt_readiness is not None:
            r = self.tensorrt_readiness
            lines.append(f"- TensorRT readiness: {'ok' if r.ok else 'PROBLEMS'}")
            lines += [f"  - {p}" for p in r.problems]
            if r.high_precision and self.precision == "int8":
                lines.append(f"- layers left in high precision on purpose ({len(r.high_precision)}; TensorRT runs "
                             "them unfused from int8):")
                lines += [f"  - `{name}`: {why}" for name, why in r.high_precision.items()]
        if self.calibration is not None:
            c = self.calibration
            lines.append(f"- calibration: {c['method']} on {c['clips']} clips of training actors {c['actors']} "
                         f"(cache {'reused' if c['cache_hit'] else 'written'}), scope `{c['scope']}`, "
                         f"high precision {c['high_precision']}")
        lines += ["", f"## Accuracy gate: {'PASSED' if g.passed else 'FAILED'}", "",
                  markdown_table(["metric", "value"], [
                      ["clips", g.clips], ["top-1 agreement", f"{100 * g.agreement:.2f}%"],
                      ["reference accuracy", _pct(g.reference_accuracy)],
                      ["artifact accuracy", _pct(g.artifact_accuracy)],
                      ["accuracy drop (points)", "-" if g.accuracy_drop_points is None
                       else f"{g.accuracy_drop_points:.2f}"],
                      ["max abs logit difference", f"{g.max_abs_logit:.3g}"],
                      ["mean cosine", f"{g.mean_cosine:.6f}"], ["thresholds", json.dumps(g.thresholds)]])]
        lines += [f"- failed: {f}" for f in g.failures]
        if g.divergence:
            lines += ["", "Layers where int8 departs from fp32 first (lowest SQNR, graph order):", "",
                      markdown_table(["tensor", "SQNR vs fp32 (dB)", "SQNR of its own Q/DQ (dB)"],
                                     [[d["tensor"], d["sqnr_db"], d["qdq_sqnr_db"]] for d in g.divergence])]
        if g.suggestion:
            lines += ["", f"Suggestion: {g.suggestion}."]
        return "\n".join(lines) + "\n"

    def write(self, artifact: Path, stem: Path) -> None:
        """``STEM.report.json``, ``.report.md`` and ``.confusion.png`` of the export, beside the artifact."""
        write_json(stem.with_name(stem.name + ".report.json"), self.to_dict())
        write_text(stem.with_name(stem.name + ".report.md"), self.markdown(artifact))
        if self.gate.artifact_confusion:
            from ..artifact import EMOTIONS

            plot_confusion(self.gate.artifact_confusion, EMOTIONS, stem.with_name(stem.name + ".confusion.png"),
                           f"{artifact.name}: held-out clips")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"

"""``cfnsr export``: checkpoint -> ONNX (fp32 | fp16 | int8) -> readiness check -> accuracy gate -> report.

``--format pt2`` takes the other road: checkpoint -> AOTInductor package (fp32, for the C++ runtime's libtorch
backend) -> the same accuracy gate -> report.

The artifact is written only at the end, atomically. One that fails its gate is kept under a name that says so
(``model.int8.FAILED.onnx``) and the command exits non-zero; nothing the user had is overwritten without --force.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from ..data.cache import FeatureCache
from ..data.splits import Split
from ..errors import CfnsrError, DataError
from ..fileio import atomic_path, check_writable, sha256_file, write_json, write_text
from ..lazy import require
from ..model.checkpoint import load_checkpoint, model_from_checkpoint
from . import fp16 as fp16_mod
from . import gate as gate_mod
from . import int8 as int8_mod
from . import readiness
from .formats import FORMATS, resolve
from .onnx_graph import base_metadata, export_fp32, input_spec, set_metadata


@dataclass
class ExportOptions:
    precision: str = "fp32"
    output: Path | None = None
    fmt: str = "auto"
    data: Path | None = None  # feature cache for calibration and for the gate
    calib_clips: int = 256
    calib_method: str = "percentile"
    entropy_bins: int = 512
    calib_seed: int = 0
    int8_scope: str = "all"
    high_precision: str = "fp32"
    gate_clips: int | None = None
    thresholds: dict = field(default_factory=dict)
    check_trt: bool = True
    force: bool = False
    progress: bool = True
    device: str = "cpu"  # pt2 only: the device the package is compiled for
    max_batch: int = 64  # pt2 only: the largest batch the package accepts


@dataclass
class ExportResult:
    path: Path
    passed: bool
    report: dict
    engine: Path | None = None


def default_output(checkpoint: Path, precision: str, suffix: str = ".onnx") -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}.{precision}{suffix}")


def failed_name(path: Path) -> Path:
    if path.suffix in (".onnx", ".pt2"):
        return path.with_name(path.name[: -len(path.suffix)] + ".FAILED" + path.suffix)
    return path.with_name(path.name + ".FAILED")


def export(checkpoint: str | Path, opts: ExportOptions, log=print) -> ExportResult:
    checkpoint = Path(checkpoint)
    formats = resolve(opts.fmt, opts.precision)
    if formats != ["pt2"]:
        require("onnxruntime", purpose="exporting ONNX (fp16 conversion, int8 quantization and the accuracy gate)")
    if opts.precision != "int8" and (opts.int8_scope != "all" or opts.high_precision != "fp32"):
        raise CfnsrError("--int8-scope and --high-precision apply to --precision int8 only")
    if opts.high_precision not in ("fp32", "fp16"):
        raise CfnsrError(f"--high-precision must be fp32 or fp16, got {opts.high_precision!r}")
    if opts.int8_scope not in int8_mod.SCOPES:
        raise CfnsrError(f"unknown --int8-scope {opts.int8_scope!r}; choose one of: {', '.join(int8_mod.SCOPES)}")
    if formats != ["pt2"] and (opts.device != "cpu" or opts.max_batch != 64):
        raise CfnsrError("--device and --max-batch apply to --format pt2 only (an engine's batch range is set by "
                         "`cfnsr build --batch`)")
    suffix = FORMATS[formats[0]].suffix
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, str(checkpoint))
    out = Path(opts.output) if opts.output else default_output(checkpoint, opts.precision, suffix)
    if out.suffix != suffix:
        raise CfnsrError(f"output {out} must end in {suffix}"
                         + (" (the engine is written beside it)" if suffix == ".onnx" else ""))
    check_writable(out, opts.force)
    check_writable(failed_name(out), True)
    split = Split.from_dict(ckpt["split"]) if ckpt.get("split") else None
    preprocess = ckpt.get("preprocess")
    cache = FeatureCache.open(opts.data) if opts.data else None
    if cache is not None:
        cache.check_model(model.config)
        if preprocess and cache.spec.to_dict() != preprocess:
            raise DataError(f"the cache {cache.root} was preprocessed differently from the checkpoint's training data "
                            f"(cache {cache.spec.to_json()}, checkpoint {json.dumps(preprocess, sort_keys=True)})")
    if opts.precision == "int8" and cache is None:
        raise CfnsrError("--precision int8 needs RAVDESS clips to calibrate on: pass --calib-data CACHE "
                         "(a `cfnsr preprocess` output)")
    source_sha = sha256_file(checkpoint)
    report: dict = {"checkpoint": str(checkpoint), "checkpoint_sha256": source_sha, "precision": opts.precision,
                    "model_config": model.config.name, "format": formats[0]}
    if formats == ["pt2"]:
        return _export_pt2(model, out, preprocess, source_sha, cache, split, opts, report, log)

    with tempfile.TemporaryDirectory(prefix="cfnsr-export-") as tmp:
        fp32_path = Path(tmp) / "model.fp32.onnx"
        log(f"exporting {checkpoint} ({model.config.name}) to ONNX opset 18 ...")
        graph = export_fp32(model, fp32_path)
        calibration = None
        if opts.precision == "fp16":
            graph = fp16_mod.to_fp16(graph)
        elif opts.precision == "int8":
            graph, calibration = _int8(graph, fp32_path, source_sha, cache, split, opts, out, log)
            report["calibration"] = calibration
        meta = base_metadata(input_spec(graph), opts.precision, preprocess or {}, source_sha)
        if calibration is not None:
            meta["calibration"] = {k: calibration[k] for k in ("method", "clips", "clip_list_sha256", "actors",
                                                               "scope", "high_precision")}
        set_metadata(graph, **meta)
        art_path = Path(tmp) / "artifact.onnx"
        onnx.save(graph, str(art_path))

        ready = readiness.check(graph)
        if calibration is not None:  # the placement knows why each layer stayed in high precision
            ready.high_precision.update({k: v for k, v in calibration["high_precision_nodes"].items()
                                         if k in ready.high_precision})
        report["tensorrt_readiness"] = {"ok": ready.ok, "problems": ready.problems,
                                        "high_precision_layers": ready.high_precision}
        if not ready.ok and opts.check_trt:
            raise CfnsrError(f"the exported graph is {ready} (pass --no-trt-check to write it anyway)")

        from ..engines.runners import OnnxRuntimeRunner

        runner = OnnxRuntimeRunner(art_path, providers=["CPUExecutionProvider"])
        gate = _gate(model, _in_batches(runner), art_path, fp32_path, cache, split, opts, log)
        report["gate"] = gate.to_dict()
        final = out if gate.passed else failed_name(out)
        with atomic_path(final, force=True if not gate.passed else opts.force) as dst:
            dst.write_bytes(art_path.read_bytes())
    report.update(output=str(final), size_bytes=final.stat().st_size, sha256=sha256_file(final))
    _write_report(final, report, gate)
    result = ExportResult(final, gate.passed, report)
    if gate.passed and "engine" in formats:
        from .engine import build_engine

        result.engine = build_engine(final, force=opts.force, log=log)
    elif gate.passed and opts.fmt == "auto":
        log(f"TensorRT is not usable here; build the engine on the target GPU with: cfnsr build {final}")
    return result


def _int8(graph, fp32_path, source_sha, cache, split, opts, out, log):
    from .. import calibration as calib

    if split is None:
        raise CfnsrError("the checkpoint records no split, so its training actors are unknown: int8 calibration "
                         "must not see evaluation actors (re-train with `cfnsr train`, or export fp32/fp16)")
    clips = calib.select_clips(cache, split.train, opts.calib_clips, seed=opts.calib_seed,
                               forbidden_actors=split.evaluation_actors)
    log(f"calibrating on {len(clips)} clips of training actors {sorted({c['actor'] for c in clips})} "
        f"({opts.calib_method}) ...")
    ranges, info = calib.calibrate(fp32_path, source_sha, cache, clips, opts.calib_method,
                                   out.parent / "calibration-cache", progress=opts.progress,
                                   entropy_bins=opts.entropy_bins)
    log("calibration cache " + ("reused: " if info["cache_hit"] else "written: ") + info["cache_file"])
    graph, placement = int8_mod.quantize(graph, ranges, opts.int8_scope, high_precision=opts.high_precision)
    info.update(scope=opts.int8_scope, high_precision=opts.high_precision, quantized_nodes=len(placement.quantize),
                high_precision_nodes=placement.high_precision, residual_adds=placement.residual)
    return graph, info


def _export_pt2(model, out, preprocess, source_sha, cache, split, opts, report, log) -> ExportResult:
    from ..engines.runners import AotiRunner
    from .pt2 import export_pt2, tensor_spec

    with tempfile.TemporaryDirectory(prefix="cfnsr-export-") as tmp:
        art_path = Path(tmp) / "artifact.pt2"
        log(f"compiling {model.config.name} with AOTInductor for {opts.device} (batch 1..{opts.max_batch}); "
            "this takes a minute or more ...")
        meta = base_metadata(tensor_spec(model), "fp32", preprocess or {}, source_sha)
        export_pt2(model, art_path, meta, device=opts.device, max_batch=opts.max_batch)
        model.to("cpu")
        # A CUDA package is checked in a fresh process: torch 2.11's Python loader was seen to crash on them.
        if opts.device == "cuda":
            from .pt2 import run_isolated

            infer = functools.partial(run_isolated, art_path)
        else:
            infer = _in_batches(AotiRunner(art_path))
        gate = _gate(model, infer, art_path, None, cache, split, opts, log)
        report["gate"] = gate.to_dict()
        report["device"] = opts.device
        report["max_batch"] = opts.max_batch
        final = out if gate.passed else failed_name(out)
        with atomic_path(final, force=True if not gate.passed else opts.force) as dst:
            shutil.copyfile(art_path, dst)
    report.update(output=str(final), size_bytes=final.stat().st_size, sha256=sha256_file(final))
    _write_report(final, report, gate)
    return ExportResult(final, gate.passed, report)


def _in_batches(runner):
    """All clips through ``runner``, batch by batch, the runner open only meanwhile."""
    def infer(video, audio):
        with runner:
            return gate_mod.batched(runner, video, audio)

    return infer


def _gate(model, infer, art_path, fp32_path, cache, split, opts, log) -> gate_mod.GateResult:
    """``infer(video, audio) -> logits`` of the artifact at ``art_path`` against the checkpoint's logits."""
    if cache is not None:
        video, audio, labels = gate_mod.held_out_arrays(cache, split, opts.gate_clips, log)
    else:  # no data: parity on seeded random inputs, labelled as such
        log("no --calib-data given: the gate compares logits on 8 random inputs (pass a cache for accuracy)")
        g = torch.Generator().manual_seed(0)
        from ..model.summary import example_inputs

        v, a = example_inputs(model.config, batch=8, generator=g)
        video, audio, labels = v.numpy(), a.numpy(), None
    with torch.no_grad():
        ref = gate_mod.batched(lambda v, a: model(torch.from_numpy(v), torch.from_numpy(a)).numpy(), video, audio)
    got = infer(video, audio)
    result = gate_mod.compare(ref, got, labels, opts.precision, opts.thresholds)
    if not result.passed and opts.precision == "int8":
        log("int8 gate failed: locating the layers where int8 departs from fp32 ...")
        inputs = [{"video": video[i:i + 1], "audio": audio[i:i + 1]} for i in range(min(2, len(video)))]
        result.divergence = gate_mod.first_divergence(str(fp32_path), str(art_path), inputs)
        result.suggestion = gate_mod.suggest_scope(opts.int8_scope)
    log(result.summary())
    return result


def report_path(artifact: Path, kind: str = ".report.md") -> Path:
    """``m.fp32.report.md`` beside ``m.fp32.onnx``; ``m.fp32.pt2.report.md`` beside a package, so that the ONNX
    file and the package of one checkpoint keep their own reports."""
    stem = artifact.with_suffix("") if artifact.suffix == ".onnx" else artifact
    return stem.with_name(stem.name + kind)


def _write_report(artifact: Path, report: dict, gate: gate_mod.GateResult) -> None:
    from ..reports import markdown_table, plot_confusion

    stem = report_path(artifact, "")
    write_json(stem.with_name(stem.name + ".report.json"), report)
    g = report["gate"]
    lines = [f"# Export report: {artifact.name}", "",
             f"- checkpoint: `{report['checkpoint']}` ({report['model_config']})",
             (f"- format: {report['format']}, precision: **{report['precision']}**, "
              f"size {report['size_bytes'] / 1e6:.1f} MB")]
    if "device" in report:
        lines.append(f"- AOTInductor package for {report['device']}, batch 1..{report['max_batch']}")
    if "tensorrt_readiness" in report:
        lines.append(f"- TensorRT readiness: {'ok' if report['tensorrt_readiness']['ok'] else 'PROBLEMS'}")
        for p in report["tensorrt_readiness"]["problems"]:
            lines.append(f"  - {p}")
        kept = report["tensorrt_readiness"].get("high_precision_layers") or {}
        if kept and report["precision"] == "int8":
            lines.append(f"- layers left in high precision on purpose ({len(kept)}; TensorRT runs them unfused "
                         "from int8):")
            lines += [f"  - `{name}`: {why}" for name, why in kept.items()]
    if "calibration" in report:
        c = report["calibration"]
        lines.append(f"- calibration: {c['method']} on {c['clips']} clips of training actors {c['actors']} "
                     f"(cache {'reused' if c['cache_hit'] else 'written'}), scope `{c['scope']}`, "
                     f"high precision {c['high_precision']}")
    lines += ["", f"## Accuracy gate: {'PASSED' if gate.passed else 'FAILED'}", "",
              markdown_table(["metric", "value"], [
                  ["clips", g["clips"]], ["top-1 agreement", f"{100 * g['agreement']:.2f}%"],
                  ["reference accuracy", "-" if g["reference_accuracy"] is None else f"{100 * g['reference_accuracy']:.2f}%"],
                  ["artifact accuracy", "-" if g["artifact_accuracy"] is None else f"{100 * g['artifact_accuracy']:.2f}%"],
                  ["accuracy drop (points)", "-" if g["accuracy_drop_points"] is None else f"{g['accuracy_drop_points']:.2f}"],
                  ["max abs logit difference", f"{g['max_abs_logit']:.3g}"], ["mean cosine", f"{g['mean_cosine']:.6f}"],
                  ["thresholds", json.dumps(g["thresholds"])]])]
    for f in g["failures"]:
        lines.append(f"- failed: {f}")
    if g.get("divergence"):
        lines += ["", "Layers where int8 departs from fp32 first (lowest SQNR, graph order):", "",
                  markdown_table(["tensor", "SQNR vs fp32 (dB)", "SQNR of its own Q/DQ (dB)"],
                                 [[d["tensor"], d["sqnr_db"], d["qdq_sqnr_db"]] for d in g["divergence"]])]
    if g.get("suggestion"):
        lines += ["", f"Suggestion: {g['suggestion']}."]
    write_text(stem.with_name(stem.name + ".report.md"), "\n".join(lines) + "\n")
    if g.get("artifact_confusion"):
        from ..model.config import EMOTIONS

        plot_confusion(g["artifact_confusion"], EMOTIONS, stem.with_name(stem.name + ".confusion.png"),
                       f"{artifact.name}: held-out clips")

"""``cfnsr export``: checkpoint -> ONNX (fp32 | fp16 | int8) -> readiness check -> accuracy gate -> report.

``--format pt2`` takes the other road: checkpoint -> AOTInductor package (fp32, for the C++ runtime's libtorch
backend) -> the same accuracy gate -> report.

The artifact is written only at the end, atomically. One that fails its gate is kept under a name that says so
(``model.int8.FAILED.onnx``) and the command exits non-zero; nothing the user had is overwritten without --force.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from ..artifact import base_metadata, input_names
from ..data.cache import FeatureCache
from ..engines.accuracy import GateResult, GateThresholds, batched, compare, held_out_arrays
from ..errors import CfnsrError
from ..fileio import Outputs, atomic_path, sha256_file, shown, temp_dir
from ..lazy import require
from ..model.checkpoint import Checkpoint
from . import divergence, readiness
from . import fp16 as fp16_mod
from . import int8 as int8_mod
from .formats import AUTO_OPTIONS, CHOICES, FORMATS, INT8_OPTIONS, OPTION_FLAGS, Format, check_choice, resolve
from .onnx_graph import export_fp32, input_spec, set_metadata
from .readiness import Readiness
from .report import ExportReport


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
    thresholds: GateThresholds = field(default_factory=GateThresholds)
    check_trt: bool = True
    force: bool = False
    progress: bool = True
    device: str = "cpu"  # pt2 only: the device the package is compiled for
    max_batch: int = 64  # pt2 only: the largest batch the package accepts
    inputs: str = "features"  # features: (video, audio) as today; media: uint8 crops + PCM, the front end in the graph
    # --precision auto (export/auto.py): the backend and conditions latency is measured on, and the search's budget
    auto_backend: str | None = None
    auto_batch: int = 1
    auto_threads: int | None = None
    auto_budget: int = 12


@dataclass
class ExportResult:
    path: Path
    passed: bool
    report: dict  # the export report as written to NAME.report.json (ExportReport.to_dict())
    engine: Path | None = None


def default_output(checkpoint: Path, precision: str, suffix: str = ".onnx") -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}.{precision}{suffix}")


def failed_name(path: Path) -> Path:
    if path.suffix in (".onnx", ".pt2"):
        return path.with_name(path.name[: -len(path.suffix)] + ".FAILED" + path.suffix)
    return path.with_name(path.name + ".FAILED")


@dataclass
class ExportJob:
    """Everything one export works on, gathered and checked once by ``export``."""

    ckpt: Checkpoint  # its preprocessing, split and sha256 travel with it
    model: object  # the CFN-SR network, eval mode, CPU
    out: Path
    cache: FeatureCache | None
    opts: ExportOptions
    tmp: Path  # a private folder for intermediate files
    log: Callable
    report: ExportReport

    @property
    def preprocess(self) -> dict:
        """The checkpoint's PreprocessSpec as the artifact's ``cfnsr.preprocess`` entry ({} when it records none)."""
        return self.ckpt.preprocess.to_dict() if self.ckpt.preprocess else {}


def export(checkpoint: str | Path, opts: ExportOptions, log=print) -> ExportResult:
    """Checkpoint -> the artifact of ``opts.fmt`` (the formats table decides the route) -> gate -> report."""
    checkpoint = Path(checkpoint)
    formats = resolve(opts.fmt, opts.precision)
    fmt = FORMATS[formats[0]]
    check_options(fmt, opts)
    if fmt.name == "onnx":
        require("onnxruntime", purpose="exporting ONNX (fp16 conversion, int8 quantization and the accuracy gate)")
    if opts.precision == "auto":
        _auto_options(opts)
    out = Path(opts.output) if opts.output else default_output(checkpoint, opts.precision, fmt.suffix)
    if out.suffix != fmt.suffix:
        raise CfnsrError(f"output {shown(out)} must end in {fmt.suffix}"
                         + (" (the engine is written beside it)" if fmt.suffix == ".onnx" else ""))
    declare_outputs(checkpoint, out, opts, formats).check()
    ckpt = Checkpoint.load(checkpoint)
    model = ckpt.model()
    cache = FeatureCache.open(opts.data) if opts.data else None
    if cache is not None:
        cache.check_checkpoint(model.config, ckpt.preprocess)
    if opts.inputs == "media" and ckpt.preprocess is None:
        raise CfnsrError("--inputs media builds the checkpoint's preprocessing into the graph, and this checkpoint "
                         "records none (re-train with `cfnsr train`, or export --inputs features)")
    if opts.precision in ("int8", "auto") and cache is None:
        raise CfnsrError(f"--precision {opts.precision} needs RAVDESS clips to calibrate on: pass --calib-data CACHE "
                         "(a `cfnsr preprocess` output)")
    if opts.precision == "auto" and opts.inputs == "media":
        raise CfnsrError("--precision auto chooses precisions of the network's layer groups: export --inputs features")
    with temp_dir("export") as tmp:
        report = ExportReport(str(checkpoint), ckpt.sha256, opts.precision, model.config.name, fmt.name)
        job = ExportJob(ckpt, model, out, cache, opts, tmp, log, report)
        art_path, gate = ROUTES[fmt.route](job)
        result = _finish(job, art_path, gate)
    if result.passed and "engine" in formats:
        from .engine import build_engine

        result.engine = build_engine(result.path, force=opts.force, log=log)
    elif result.passed and opts.fmt == "auto" and fmt.name == "onnx":
        log(f"TensorRT is not usable here; build the engine on the target GPU with: cfnsr build {result.path}")
    return result


def declare_outputs(checkpoint: Path, out: Path, opts: ExportOptions, formats) -> Outputs:
    """Everything an export may write, for ``Outputs.check`` before any work: the artifact, the copy kept when the
    gate fails, the reports beside each, the calibration cache (int8) and the engine with its sidecar."""
    from ..artifact import sidecar_path
    from .engine import engine_path

    outs = Outputs([checkpoint, opts.data], opts.force)
    outs.file(out, "-o")
    failed = failed_name(out)
    outs.file(failed, "the gate-failure copy of -o", force=True)
    for artifact, what in ((out, "-o"), (failed, "the gate-failure copy of -o")):
        stem = report_path(artifact, "")
        for kind in (".report.json", ".report.md", ".confusion.png"):
            outs.file(stem.with_name(stem.name + kind), f"the report beside {what}", text=kind != ".confusion.png",
                      force=True)
    if opts.precision in ("int8", "auto"):
        outs.folder(out.parent / "calibration-cache", "the calibration cache beside -o")
    if opts.precision == "auto":  # the search's state (resumed by a rerun) and its reports, beside -o
        stem = out.with_suffix("") if out.suffix == ".onnx" else out
        outs.file(stem.with_name(stem.name + ".state.json"), "the search state beside -o", text=True, force=True)
        for kind in (".json", ".md", ".png"):
            outs.file(stem.with_name(stem.name + ".search" + kind), "the search report beside -o",
                      text=kind != ".png", force=True)
    if "engine" in formats:
        engine = engine_path(out)
        outs.file(engine, "the engine beside -o")
        outs.file(sidecar_path(engine), "the engine sidecar beside -o", force=True)
    return outs


def check_options(fmt: Format, opts: ExportOptions) -> None:
    """Refuse, in one place, the options that do not apply to this format or precision (never ignore them)."""
    defaults = ExportOptions()
    for name, flag in OPTION_FLAGS.items():
        given = getattr(opts, name) != getattr(defaults, name)
        if name in AUTO_OPTIONS and opts.precision == "auto":
            continue
        if given and name in AUTO_OPTIONS and name != "device":
            raise CfnsrError(f"{flag} applies to --precision auto only")
        if given and name not in fmt.options:
            raise CfnsrError(f"{flag} does not apply to --format {fmt.name} (it takes "
                             f"{', '.join(OPTION_FLAGS[o] for o in fmt.options) or 'none of the format options'})")
        if given and name in INT8_OPTIONS and opts.precision != "int8" and not (
                opts.precision == "auto" and name != "int8_scope"):
            raise CfnsrError(f"{flag} applies to --precision int8 only"
                             + (" (auto chooses the layer groups itself)" if opts.precision == "auto" else ""))
    for name in CHOICES:
        check_choice(name, getattr(opts, name))


# The export routes, by the name formats.FORMATS gives them (``Format.route``); each registers itself below.
ROUTES: dict[str, Callable[[ExportJob], tuple[Path, GateResult]]] = {}


def route(name: str):
    def register(fn):
        ROUTES[name] = fn
        return fn

    return register


@route("onnx")
def export_onnx(job: ExportJob) -> tuple[Path, GateResult]:
    """fp32 ONNX (opset 18), then fp16 or int8 in the graph, metadata, the TensorRT readiness check, the gate."""
    opts = job.opts
    fp32_path = job.tmp / "model.fp32.onnx"
    job.log(f"exporting {job.ckpt.path} ({job.model.config.name}) to ONNX opset 18 ...")
    graph = export_fp32(job.model, fp32_path)
    calibration = None
    if opts.precision == "fp16":
        graph = fp16_mod.to_fp16(graph)
    elif opts.precision == "int8":
        graph, calibration = _int8(graph, fp32_path, job)
        job.report.calibration = calibration
    elif opts.precision == "auto":
        graph, calibration = _auto(graph, fp32_path, job)
        job.report.calibration = calibration
    precision = job.report.artifact_precision or opts.precision
    meta = {**base_metadata(input_spec(graph), precision, job.preprocess, job.ckpt.sha256),
            "input_kind": "features"}
    if opts.precision == "auto":
        a = job.report.auto
        meta["precision_map"] = a["precision_map"]
        meta["auto"] = {"backend": a["backend_name"], "device": a["device"], "batch": a["batch"],
                        "threads": a["threads"]}
    if calibration is not None:
        meta["calibration"] = {k: calibration[k] for k in ("method", "clips", "clip_list_sha256", "actors",
                                                           "scope", "high_precision")}
    set_metadata(graph, **meta)
    art_path = job.tmp / "artifact.onnx"
    onnx.save(graph, str(art_path))

    ready = readiness.check(graph)
    if calibration is not None:  # the placement knows why each layer stayed in high precision
        ready.high_precision.update({k: v for k, v in calibration["high_precision_nodes"].items()
                                     if k in ready.high_precision})
    job.report.tensorrt_readiness = ready
    if not ready.ok and opts.check_trt:
        raise CfnsrError(f"the exported graph is {ready} (pass --no-trt-check to write it anyway)")

    from ..engines.runners import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(art_path, providers=["CPUExecutionProvider"])
    gate = _gate(job, _in_batches(runner), art_path, fp32_path)
    if opts.inputs == "media":
        art_path = _compose_media(job, graph, meta, art_path)
    return art_path, gate


def _compose_media(job: ExportJob, graph: onnx.ModelProto, meta: dict, features_path: Path) -> Path:
    """--inputs media: the gated network behind the in-graph front end; checked statically and for parity."""
    from .frontend import compose_media, export_frontend_onnx, media_parity

    spec = job.ckpt.preprocess
    opset = max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    job.log("adding the media front end (uint8 face crops + PCM in; MFCC and normalisation in the graph, fp32) ...")
    media = compose_media(graph, spec)
    set_metadata(media, **{**meta, "inputs": input_spec(media), "input_kind": "media"})
    path = job.tmp / "artifact.media.onnx"
    onnx.save(media, str(path))
    ready = readiness.check(media)
    # the media graph's problems; the layers kept in high precision are the gated network's
    job.report.tensorrt_readiness = Readiness(ready.problems, job.report.tensorrt_readiness.high_precision)
    if not ready.ok and job.opts.check_trt:
        raise CfnsrError(f"the media graph is {ready} (pass --no-trt-check to write it anyway)")
    diff = media_parity(path, export_frontend_onnx(spec, opset), features_path, spec)
    job.report.media_parity = diff
    if not diff <= 1e-3:
        raise CfnsrError(f"the media graph departs from the gated network by {diff:.3g} in the logits")
    job.log(f"media front end added: composition parity {diff:.2g}")
    return path


@route("pt2")
def export_pt2(job: ExportJob) -> tuple[Path, GateResult]:
    """An AOTInductor package (fp32, cpu or cuda) for the C++ runtime's libtorch backend, then the gate."""
    from ..engines.runners import AotiRunner
    from .pt2 import export_pt2 as compile_package
    from .pt2 import input_spec as package_input_spec

    opts, model = job.opts, job.model
    if opts.inputs == "media":
        from .frontend import MediaModel

        model = MediaModel(model, job.ckpt.preprocess).eval()
    art_path = job.tmp / "artifact.pt2"
    job.log(f"compiling {model.config.name} with AOTInductor for {opts.device} (batch 1..{opts.max_batch}); "
            "this takes a minute or more ...")
    example = _example(model, opts.inputs)
    meta = {**base_metadata(package_input_spec(example, model.config.num_classes), "fp32", job.preprocess,
                            job.ckpt.sha256), "input_kind": opts.inputs}
    compile_package(model, art_path, meta, example, device=opts.device, max_batch=opts.max_batch)
    model.to("cpu")
    job.report.device, job.report.max_batch = opts.device, opts.max_batch
    if opts.inputs == "media":  # parity with the torch model on seeded media inputs (the cache holds no PCM)
        return art_path, _media_package_gate(job, model, art_path)
    # A CUDA package is checked in a fresh process: torch 2.11's Python loader was seen to crash on them.
    if opts.device == "cuda":
        from .pt2 import run_isolated

        def infer(**inputs):
            return run_isolated(art_path, inputs)
    else:
        infer = _in_batches(AotiRunner(art_path), opts.max_batch)
    return art_path, _gate(job, infer, art_path, None)


def _finish(job: ExportJob, art_path: Path, gate: GateResult) -> ExportResult:
    """The one ending of every route: the artifact written atomically (as NAME.FAILED.* when the gate failed, and
    then exiting non-zero), its sha256 and size, and the reports beside it."""
    report = job.report
    report.gate = gate
    final = job.out if gate.passed else failed_name(job.out)
    with atomic_path(final, force=True if not gate.passed else job.opts.force) as dst:
        shutil.copyfile(art_path, dst)
    report.output, report.size_bytes, report.sha256 = str(final), final.stat().st_size, sha256_file(final)
    report.write(final, report_path(final, ""))
    return ExportResult(final, gate.passed, report.to_dict())


def _calibrate(fp32_path: Path, job: ExportJob):
    """Activation ranges from training-actor clips, through the range cache."""
    from . import calibrate as calib

    cache, split, opts, log = job.cache, job.ckpt.split, job.opts, job.log
    if split is None:
        raise CfnsrError("the checkpoint records no split, so its training actors are unknown: int8 calibration "
                         "must not see evaluation actors (re-train with `cfnsr train`, or export fp32/fp16)")
    clips = calib.select_clips(cache, split.train, opts.calib_clips, seed=opts.calib_seed,
                               forbidden_actors=split.evaluation_actors)
    log(f"calibrating on {len(clips)} clips of training actors {sorted({c.actor for c in clips})} "
        f"({opts.calib_method}) ...")
    ranges, info = calib.calibrate(fp32_path, job.ckpt.sha256, cache, clips, opts.calib_method,
                                   job.out.parent / "calibration-cache", progress=opts.progress,
                                   entropy_bins=opts.entropy_bins)
    log("calibration cache " + ("reused: " if info["cache_hit"] else "written: ") + info["cache_file"])
    return ranges, info


def _int8(graph, fp32_path: Path, job: ExportJob):
    """Calibrate on training-actor clips (through the range cache), then place Q/DQ for TensorRT."""
    opts = job.opts
    ranges, info = _calibrate(fp32_path, job)
    graph, placement = int8_mod.quantize(graph, ranges, opts.int8_scope, high_precision=opts.high_precision)
    info.update(scope=opts.int8_scope, high_precision=opts.high_precision, quantized_nodes=len(placement.quantize),
                high_precision_nodes=placement.high_precision, residual_adds=placement.residual)
    return graph, info


def _auto(graph, fp32_path: Path, job: ExportJob):
    """--precision auto: calibrate, then the measured search (export/auto.py) on the validation actors; the search's
    state and reports go beside the output (NAME.auto.state.json, NAME.auto.search.json/.md/.png)."""
    from . import auto

    opts = job.opts
    ranges, info = _calibrate(fp32_path, job)
    aopts = _auto_options(opts)
    stem = job.out.with_suffix("") if job.out.suffix == ".onnx" else job.out
    key = {"checkpoint": job.ckpt.sha256, "calibration": info["cache_key"]}
    chosen, placement, result, rep = auto.choose(graph, ranges, job.model, job.cache, job.ckpt.split, opts.thresholds,
                                                 aopts, job.tmp / "auto", stem.with_name(stem.name + ".state.json"),
                                                 key, opts.progress, job.log)
    rep["reports"] = auto.write_reports(rep, stem.with_name(stem.name + ".search"))
    job.report.auto = rep
    job.report.artifact_precision = result.precision
    job.log(f"--precision auto chose {result.chosen.name} ({result.precision}): "
            f"{len(result.int8)} of {len(rep['searchable_groups'])} groups int8; report {rep['reports']['markdown']}")
    info.update(scope="auto", high_precision=result.float_type,
                quantized_nodes=len(placement.quantize) if placement else 0,
                high_precision_nodes=placement.high_precision if placement else {},
                residual_adds=placement.residual if placement else {})
    return chosen, info


def _auto_options(opts: ExportOptions):
    """The search's options from the export's, checked (backend, device, budget) before any work."""
    from . import auto

    aopts = auto.AutoOptions(backend=opts.auto_backend, device=opts.device, batch=opts.auto_batch,
                             threads=opts.auto_threads, budget=opts.auto_budget,
                             float_type=opts.high_precision if opts.high_precision != "fp32" else None)
    auto.resolve(aopts)
    return aopts


def _in_batches(runner, max_batch: int = 8):
    """All clips through ``runner``, batch by batch (at most ``max_batch``: a package's limit), the runner open only
    meanwhile."""
    def infer(**inputs):
        with runner:
            return batched(runner, batch=min(8, max_batch), **inputs)

    return infer


def _example(model, kind: str, batch: int = 2) -> dict:
    """Seeded example inputs of ``model`` by name, for an artifact of ``kind`` (what a package is traced on)."""
    if kind == "media":
        from .frontend import media_example_inputs

        arrays = media_example_inputs(model.frontend.spec, batch)
    else:
        from ..model.summary import example_inputs

        arrays = example_inputs(model.config, batch=batch, generator=torch.Generator().manual_seed(0))
    return dict(zip(input_names(kind), arrays))


def _media_package_gate(job: ExportJob, model, art_path: Path) -> GateResult:
    from ..engines.runners import AotiRunner

    example = _example(model, "media", 4)
    with torch.no_grad():
        ref = model(**example).numpy()
    inputs = {k: v.numpy() for k, v in example.items()}
    if job.opts.device == "cuda":
        from .pt2 import run_isolated

        got = run_isolated(art_path, inputs)
    else:
        got = _in_batches(AotiRunner(art_path), job.opts.max_batch)(**inputs)
    job.log("media package: parity with the torch model on 4 seeded media inputs")
    result = compare(ref, got, None, "fp32", job.opts.thresholds)
    job.log(result.summary())
    return result


def _gate(job: ExportJob, infer, art_path: Path, fp32_path: Path | None) -> GateResult:
    """``infer(video, audio) -> logits`` of the artifact at ``art_path`` against the checkpoint's logits."""
    opts, model, log = job.opts, job.model, job.log
    if job.cache is not None:
        video, audio, labels = held_out_arrays(job.cache, job.ckpt.split, opts.gate_clips, log)
    else:  # no data: parity on seeded random inputs, labelled as such
        log("no --calib-data given: the gate compares logits on 8 random inputs (pass a cache for accuracy)")
        g = torch.Generator().manual_seed(0)
        from ..model.summary import example_inputs

        v, a = example_inputs(model.config, batch=8, generator=g)
        video, audio, labels = v.numpy(), a.numpy(), None
    with torch.no_grad():
        ref = batched(lambda v, a: model(torch.from_numpy(v), torch.from_numpy(a)).numpy(), video, audio)
    got = infer(video=video, audio=audio)
    precision = job.report.artifact_precision or opts.precision
    result = compare(ref, got, labels, precision, opts.thresholds)
    if not result.passed and precision in ("int8", "mixed") and fp32_path is not None:
        log("int8 gate failed: locating the layers where int8 departs from fp32 ...")
        inputs = [{"video": video[i:i + 1], "audio": audio[i:i + 1]} for i in range(min(2, len(video)))]
        result.divergence = divergence.first_divergence(str(fp32_path), str(art_path), inputs)
        result.suggestion = (divergence.suggest_scope(opts.int8_scope) if precision == "int8" else
                             "the mix chosen on the validation actors fails on the test actors: rerun --precision auto "
                             "with a lower --max-accuracy-drop, or export fp16/fp32")
    log(result.summary())
    return result


def report_path(artifact: Path, kind: str = ".report.md") -> Path:
    """``m.fp32.report.md`` beside ``m.fp32.onnx``; ``m.fp32.pt2.report.md`` beside a package, so that the ONNX
    file and the package of one checkpoint keep their own reports."""
    stem = artifact.with_suffix("") if artifact.suffix == ".onnx" else artifact
    return stem.with_name(stem.name + kind)
